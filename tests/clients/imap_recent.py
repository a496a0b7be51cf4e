"""\\Recent as Python's imaplib sees it (issue #13): several sessions on one inbox, mail
delivered over SMTP between their commands. Prints what each session was told, as JSON.

Usage: imap_recent.py IMAP_PORT SMTP_PORT USER KEY
"""
import imaplib
import json
import smtplib
import sys

imap_port, smtp_port, user, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]


def deliver(n):
    s = smtplib.SMTP("127.0.0.1", smtp_port, timeout=20)
    s.sendmail(
        "sender@example.net",
        [user],
        f"From: sender@example.net\r\nTo: {user}\r\nSubject: m{n}\r\n\r\nbody {n}\r\n",
    )
    s.quit()


def session():
    m = imaplib.IMAP4("127.0.0.1", imap_port)
    m.login(user, key)
    return m


def told(m, what):
    """The last untagged answer of kind `what` since the last look (imaplib keeps them
    all), as text; None when there was none."""
    said = [x.decode() for x in (m.response(what)[1] or []) if x is not None]
    return said[-1] if said else None


def flags(m, which="1:*"):
    typ, data = m.fetch(which, "(FLAGS)")
    return [d.decode() for d in data if d]


def search(m, key):
    typ, data = m.search(None, key)
    return data[0].decode().split()


out = {}
deliver(1)
deliver(2)

a = session()
a.select("INBOX")
out["a_select_recent"] = told(a, "RECENT")
out["a_flags"] = flags(a)
out["a_recent"] = search(a, "RECENT")
a.fetch("1", "(BODY[])")  # sets \Seen on 1
out["a_new"] = search(a, "NEW")
out["a_old"] = search(a, "OLD")

b = session()
b.select("INBOX")
out["b_select_recent"] = told(b, "RECENT")
out["b_flags"] = flags(b)
out["b_old"] = search(b, "OLD")

deliver(3)
# STATUS from a session with nothing selected claims nothing.
e = session()
typ, data = e.status("INBOX", "(MESSAGES RECENT)")
out["e_status_before_claim"] = data[0].decode()
a.noop()
out["a_noop_exists"] = told(a, "EXISTS")
out["a_noop_recent"] = told(a, "RECENT")
out["a_flags_3"] = flags(a, "3")
b.noop()
out["b_noop_exists"] = told(b, "EXISTS")
out["b_noop_recent"] = told(b, "RECENT")
out["b_flags_3"] = flags(b, "3")
typ, data = e.status("INBOX", "(RECENT)")
out["e_status_after_claim"] = data[0].decode()

# EXAMINE claims nothing: it sees what nobody has claimed, and leaves it for others.
deliver(4)
c = session()
c.select("INBOX", readonly=True)  # EXAMINE
out["c_examine_recent"] = told(c, "RECENT")
c.logout()
a.noop()
out["a_noop_recent_4"] = told(a, "RECENT")

# A copy is recent in its target.
a.copy("1", "Archive")
d = session()
d.select("Archive")
out["d_archive_recent"] = told(d, "RECENT")
out["d_flags"] = flags(d)

for m in (a, b, d, e):
    m.logout()
print(json.dumps(out))
