#!/usr/bin/env python3
"""Run IMAP commands with Python's imaplib and print what the server answered, as JSON.

usage: imap_steps.py PORT USER PASSWORD < steps.json

steps.json is a list of steps, each a list: the imaplib method and its arguments, e.g.
  ["append", "INBOX", {"b64": "..."}]       message bytes given as base64
  ["select", "INBOX"]
  ["fetch", "1:*", "(ENVELOPE)"]
  ["uid", "SEARCH", "FROM", "\"ann\""]
  ["search", null, "TO", "\"bob\""]
  ["create", "box"], ["subscribe", "box"], ["unsubscribe", "box"]
  ["lsub", "\"\"", "box/%"], ["list", "\"\"", "*"]
  ["literal", {"b64": "..."}]                 the next command's last argument is sent
                                              as this literal (imaplib's IMAP4.literal)
The session goes over STARTTLS. The output is one entry per step:
  {"typ": "OK"|"NO"|"BAD", "data": [...]}
where each data item is text, or [text, literal as base64] for a response with a literal
(imaplib's tuples), or null.
"""
import base64
import imaplib
import json
import ssl
import sys

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
steps = json.load(sys.stdin)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4("127.0.0.1", port, timeout=20)
m.starttls(ssl_context=ctx)
m.login(user, password)


def arg(a):
    if isinstance(a, dict) and "b64" in a:
        return base64.b64decode(a["b64"])
    return a


def item(d):
    if d is None:
        return None
    if isinstance(d, tuple):
        return [d[0].decode("utf-8", "replace"), base64.b64encode(d[1]).decode()]
    if isinstance(d, bytes):
        return d.decode("utf-8", "replace")
    return str(d)


report = []
for step in steps:
    name, args = step[0], [arg(a) for a in step[1:]]
    if name == "literal":
        m.literal = args[0]
        report.append({"typ": "OK", "data": []})
        continue
    try:
        typ, data = getattr(m, name)(*args)
    except imaplib.IMAP4.error as e:
        typ, data = "ERROR", [str(e).encode()]
    report.append({"typ": typ, "data": [item(d) for d in data]})
m.logout()
print(json.dumps(report))
