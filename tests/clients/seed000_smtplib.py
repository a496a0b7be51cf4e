#!/usr/bin/env python3
"""Seed 000's smtplib example, verbatim but for where the values come from: host and port
are replaced (the server runs on loopback in tests) and the rest comes from
GET /v1/account/smtp, passed as arguments.

usage: seed000_smtplib.py HOST PORT USERNAME PASSWORD FROM TO
"""
import smtplib
import sys
from email.message import EmailMessage


class Smtp:
    def __init__(self, host, port, username, password):
        self.host, self.port, self.username, self.password = host, int(port), username, password


smtp = Smtp(*sys.argv[1:5])
sender, recipient = sys.argv[5], sys.argv[6]

msg = EmailMessage()
msg['From'] = sender
msg['To'] = recipient
msg['Subject'] = 'Hello via SMTP'
msg.set_content('Sent using daimon.email SMTP credentials!')

with smtplib.SMTP(smtp.host, smtp.port) as server:
    server.starttls()
    server.login(smtp.username, smtp.password)
    server.send_message(msg)
