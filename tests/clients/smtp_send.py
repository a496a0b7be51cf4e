#!/usr/bin/env python3
"""Send one message with Python's smtplib, a client nobody here wrote.

usage: smtp_send.py PORT FROM TO MESSAGE_FILE [--starttls]
Exit code 0 when the server accepted the message; 1 with the server's reply otherwise.
"""
import smtplib
import ssl
import sys

port, sender, rcpt, path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
starttls = "--starttls" in sys.argv[5:]
with open(path, "rb") as f:
    data = f.read()
try:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        if starttls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s.starttls(context=ctx)
            s.ehlo("client.test")
        s.sendmail(sender, [rcpt], data)
except smtplib.SMTPException as e:
    print(f"refused: {e}", file=sys.stderr)
    sys.exit(1)
