#!/usr/bin/env python3
"""Drive the POP3 server with Python's poplib: STLS, login, STAT, LIST, UIDL, TOP, RETR,
optionally DELE 1, QUIT. Prints a JSON report.

usage: pop3_fetch.py PORT USER PASSWORD [--delete-first] [--implicit-tls]
"""
import json
import poplib
import ssl
import sys

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if "--implicit-tls" in sys.argv:
    p = poplib.POP3_SSL("127.0.0.1", port, context=ctx, timeout=20)
else:
    p = poplib.POP3("127.0.0.1", port, timeout=20)
    p.stls(context=ctx)
caps = p.capa()
p.user(user)
p.pass_(password)
count, size = p.stat()
report = {"caps": sorted(caps), "count": count, "size": size, "messages": []}
_, uidls, _ = p.uidl()
for n in range(1, count + 1):
    _, lines, octets = p.retr(n)
    _, top, _ = p.top(n, 0)
    report["messages"].append({
        "uidl": uidls[n - 1].decode().split()[1],
        "raw": b"\r\n".join(lines).decode("utf-8", "replace") + "\r\n",
        "octets": octets,
        "top": b"\r\n".join(top).decode("utf-8", "replace"),
    })
if "--delete-first" in sys.argv and count:
    p.dele(1)
p.quit()
print(json.dumps(report))
