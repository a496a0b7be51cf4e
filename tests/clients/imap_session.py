#!/usr/bin/env python3
"""Drive the IMAP server with Python's imaplib and print a JSON report.

usage: imap_session.py PORT USER PASSWORD SCENARIO [--implicit-tls]

Scenarios:
  read     STARTTLS (or implicit TLS), CAPABILITY, LOGIN, LIST, SELECT INBOX, FETCH of every
           message (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY.PEEK[]
           BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[1] BINARY.PEEK[1]), SEARCH, STATUS.
  organise STORE +FLAGS \\Seen on the first message, SEARCH UNSEEN, CREATE Work, COPY the
           second message to Work, MOVE the first to Archive, APPEND to Drafts, STORE
           +FLAGS \\Deleted + EXPUNGE in Work, RENAME/DELETE a folder, SUBSCRIBE, LSUB.
"""
import base64
import imaplib
import json
import re
import ssl
import sys

port, user, password, scenario = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if "--implicit-tls" in sys.argv:
    m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx, timeout=20)
else:
    m = imaplib.IMAP4("127.0.0.1", port, timeout=20)
    m.starttls(ssl_context=ctx)

report = {}
import os
if os.environ.get("IMAP_DEBUG"):
    m.debug = 4


def ok(resp):
    typ, data = resp
    if typ != "OK":
        raise SystemExit(f"command failed: {typ} {data}")
    return data


def text(b):
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else b


report["capabilities"] = sorted(m.capabilities)
ok(m.login(user, password))
report["list"] = [text(x) for x in ok(m.list())]

if scenario == "read":
    data = ok(m.select("INBOX"))
    report["exists"] = int(data[0])
    report["uidvalidity"] = text(m.untagged_responses.get("UIDVALIDITY", [b"0"])[0])
    typ, data = m.uid(
        "FETCH",
        "1:*",
        "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY.PEEK[] "
        "BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[1] BINARY.PEEK[1] BODY.PEEK[]<0.10>)",
    )
    assert typ == "OK", data
    msgs = []
    for item in data:
        if not isinstance(item, tuple):
            continue
        # imaplib gives one tuple per literal: (prefix, bytes).
        msgs.append(item)
    # Group the literals by message: each FETCH line starts with "N (".
    fetched = []
    current = None
    for item in data:
        if isinstance(item, tuple):
            prefix, payload = text(item[0]), item[1]
            mm = re.match(r"^(\d+) \(", prefix)
            if mm:
                current = {"seq": int(mm.group(1)), "meta": prefix, "literals": {}}
                fetched.append(current)
            else:
                current["meta"] += " " + prefix
            key = re.findall(r"(BODY\[[^\]]*\](?:<\d+>)?|BINARY\[[^\]]*\])", prefix)[-1]
            current["literals"][key] = base64.b64encode(payload).decode()
        elif item not in (b")",) and current is not None:
            current["meta"] += " " + text(item)
    report["messages"] = fetched
    typ, data = m.search(None, "ALL")
    report["search_all"] = text(data[0])
    typ, data = m.search("UTF-8", "SUBJECT", "second")
    report["search_subject"] = text(data[0])
    typ, data = m.uid("SEARCH", None, "UNSEEN")
    report["uid_search_unseen"] = text(data[0])
    report["status"] = text(ok(m.status("INBOX", "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY)"))[0])
    # A non-peek fetch marks the first message read.
    typ, data = m.fetch("1", "(BODY[TEXT])")
    report["fetch_text_flags"] = repr(data)
    report["flags_after"] = text(ok(m.fetch("1", "(FLAGS)"))[0])
elif scenario == "organise":
    ok(m.select("INBOX"))
    ok(m.store("1", "+FLAGS", "(\\Flagged)"))
    report["flags_1"] = text(ok(m.fetch("1", "(FLAGS)"))[0])
    report["unseen"] = text(ok(m.search(None, "UNSEEN"))[0])
    report["flagged"] = text(ok(m.search(None, "FLAGGED"))[0])
    ok(m.create("Work"))
    report["copy"] = [text(x) for x in ok(m.copy("2", "Work"))]
    typ, data = m._simple_command("MOVE", "1", "Archive")
    report["move"] = typ
    report["after_move_exists"] = text(ok(m.select("INBOX"))[0])
    msg = b"From: " + user.encode() + b"\r\nTo: someone@example.com\r\nSubject: draft\r\n\r\nA draft.\r\n"
    typ, data = m.append("Drafts", "(\\Draft \\Seen)", None, msg)
    report["append"] = [typ, text(data[0])]
    ok(m.select("Work"))
    ok(m.store("1", "+FLAGS.SILENT", "(\\Deleted)"))
    report["expunge"] = [text(x) for x in ok(m.expunge())]
    ok(m.create("Tmp/Sub"))
    ok(m.rename("Tmp", "Old"))
    report["list_after_rename"] = [text(x) for x in ok(m.list('""', "Old*"))]
    ok(m.delete("Old/Sub"))
    ok(m.delete("Old"))
    typ, data = m.delete("Trash")
    report["delete_trash"] = typ
    ok(m.unsubscribe("Junk"))
    report["lsub"] = [text(x) for x in ok(m.lsub())]
    report["status_work"] = text(ok(m.status("Work", "(MESSAGES UIDNEXT)"))[0])
    report["status_drafts"] = text(ok(m.status("Drafts", "(MESSAGES UNSEEN)"))[0])
m.logout()
print(json.dumps(report))
