#!/usr/bin/env python3
"""The `mailroom` Python SDK (sdk/python, on PYTHONPATH) against a running server
(MAILROOM_API_URL). Asserts as it goes and prints what the Rust test checks against the API.

usage: sdk_python_steps.py ANN_ACCOUNT_KEY BOB_INBOX_ID BOB_INBOX_KEY BOB_EMAIL
(ann's account is on a paid tier, bob's on the free tier)
"""
import json
import sys

from mailroom import InboxCreated, Mailroom, MailroomError, Message, Page, Sent, attachment

ann_key, bob_inbox, bob_key, bob_email = sys.argv[1:5]
out = {}

ann = Mailroom(api_key=ann_key)  # base URL from MAILROOM_API_URL
bob = Mailroom(api_key=bob_key)

# Inboxes: create, list, get.
created = ann.inboxes.create(username="ann-two", client_id="sdk-test-1")
assert isinstance(created, InboxCreated), created
assert created.inbox_api_key and created.inbox_api_key.startswith("mr_inb_"), created
assert created.account_api_key is None, "the account key is shown only when the account is made"
assert created.next_steps, "next_steps come with the result"
out["created"] = created.to_dict()
page = ann.inboxes.list()
assert isinstance(page, Page) and page.total == 2, page
assert created.id in [i.id for i in page], page
out["inboxes_total"] = page.total
got = ann.inboxes.get(created.id)
assert got.email == created.email and got.client_id == "sdk-test-1", got
first = next(i for i in page if i.id != created.id)

# Send between two inboxes (ann's account is paid), then read it as the recipient.
att = attachment("note.txt", b"hello attachment\n", "text/plain")
sent = ann.messages.send(created.id, to=bob_email, subject="Hello from the Python SDK",
                         text="Hi Bob,\nsent with mailroom.\n", attachments=[att])
assert isinstance(sent, Sent) and sent.id and sent.message_id, sent
assert sent.recipients and sent.recipients[0]["address"] == bob_email, sent
out["sent"] = sent.to_dict()

listed = bob.messages.list(bob_inbox, subject="Python SDK", wait=30)
assert listed.total >= 1, listed
summary = listed.items[0]
assert summary.subject == "Hello from the Python SDK", summary
assert created.email in (summary.from_ or ""), summary
msg = bob.messages.get(bob_inbox, summary.id)
assert isinstance(msg, Message) and "sent with mailroom." in (msg.text or ""), msg
assert [a.get("filename") for a in msg.attachments] == ["note.txt"], msg.attachments
out["received"] = {"id": msg.id, "subject": msg.subject, "message_id": msg.message_id,
                   "from": msg.from_}
raw = bob.messages.raw(bob_inbox, msg.id)
assert b"Subject: Hello from the Python SDK" in raw, raw[:400]

updated = bob.messages.update(bob_inbox, msg.id, read=True, add_labels=["sdk"])
assert updated.id == msg.id, updated
assert bob.messages.list(bob_inbox, label="sdk").total == 1

# Errors carry the API's code, status, upgrade_context and next_steps.
try:
    bob.messages.reply(bob_inbox, msg.id, text="thanks")
    raise SystemExit("a free-tier reply was accepted")
except MailroomError as e:
    assert e.code == "SEND_REQUIRES_PAID" and e.status == 403, (e.code, e.status)
    assert e.upgrade_context and e.upgrade_context["operator_action_url"], e.upgrade_context
    assert e.next_steps and e.next_steps[0] == e.upgrade_context["agent_script"], e.next_steps
    out["reply_error"] = {"code": e.code, "status": e.status, "message": e.message,
                          "upgrade_context": e.upgrade_context}
try:
    ann.inboxes.get("inbox_doesnotexist")
    raise SystemExit("a missing inbox was found")
except MailroomError as e:
    assert (e.code, e.status) == ("NOT_FOUND", 404), (e.code, e.status)
    assert e.upgrade_context is None
    out["not_found"] = {"code": e.code, "status": e.status, "message": e.message}
try:
    Mailroom(api_key="mr_acc_not-a-key").account.get()
    raise SystemExit("a made-up key was accepted")
except MailroomError as e:
    assert (e.code, e.status) == ("UNAUTHORIZED", 401), (e.code, e.status)

# Reply and forward on the paid account: ann's first inbox writes to ann-two, which answers.
sent2 = ann.messages.send(first.id, to=[created.email], subject="Ping", text="ping")
two = Mailroom(api_key=created.inbox_api_key)
ping = two.messages.list(created.id, subject="Ping", wait=30).items[0]
replied = two.messages.reply(created.id, ping.id, text="pong")
assert replied.thread_id, replied
fwd = two.messages.forward(created.id, ping.id, to=bob_email, text="see below")
assert fwd.id, fwd
pong = ann.messages.list(first.id, subject="Re: Ping", wait=30).items[0]
out["reply"] = {"id": pong.id, "subject": pong.subject, "thread_id": pong.thread_id,
                "sent_thread": sent2.thread_id}
fwd_seen = bob.messages.list(bob_inbox, subject="Fwd: Ping", wait=30)
assert fwd_seen.total == 1, fwd_seen
everyone = two.messages.reply_all(created.id, ping.id, text="pong to all")
assert everyone.thread_id == replied.thread_id, (everyone, replied)
threads = ann.threads.list(first.id)
assert pong.thread_id in [t.id for t in threads], threads
thread = ann.threads.get(first.id, pong.thread_id)
assert [m.subject for m in thread.messages][:2] == ["Ping", "Re: Ping"], thread
trashed = ann.messages.delete(first.id, pong.id)
assert trashed.outcome == "trash", trashed

# Account, SMTP, capabilities, webhooks.
acct = ann.account.get()
assert acct.tier == "developer" and acct.limits["current_inboxes"] == 2, acct
smtp = ann.account.get_smtp()
assert smtp.host and smtp.port and smtp.username and smtp.password, smtp
out["smtp"] = smtp.to_dict()
caps = ann.capabilities()
assert "mail.send" in [c["action"] for c in caps.can], caps.can
link = ann.account.upgrade_link("growth")
assert link.url and link.target_tier == "growth", link
events = ann.request("GET", "/v1/events")
assert isinstance(events["result"], dict), events
hook = ann.webhooks.create("https://hooks.example.com/mailroom", events=["message.received"])
assert hook.secret and hook.secret.startswith("whsec_"), hook
assert ann.webhooks.get(hook.id).url == hook.url
assert ann.webhooks.update(hook.id, status="disabled").status == "disabled"
assert [h.id for h in ann.webhooks.list()] == [hook.id]
assert ann.webhooks.delete(hook.id).deleted is True
assert ann.webhooks.list().total == 0

# Scoped keys, custom domains, events.
made = ann.keys.create("sdk-reader", ["api:read"])
reader = Mailroom(api_key=made["apiKey"])
assert reader.messages.list(first.id).total >= 1  # api:read reaches the mail
try:
    reader.messages.send(first.id, to=bob_email, subject="no", text="no")
    raise SystemExit("an api:read key sent mail")
except MailroomError as e:
    assert (e.code, e.status) == ("SCOPE_REQUIRED", 403), (e.code, e.status)
assert made["id"] in [k["id"] for k in ann.keys.list()["keys"]]
ann.keys.delete(made["id"])
dom = ann.domains.create("sdk-example.test")
assert dom["records"], dom
assert "sdk-example.test" in ann.domains.zone_file("sdk-example.test")
ann.domains.delete("sdk-example.test")
assert ann.events.list()["events"], "the account has events"
user = ann.users.create("operator@example.com", "correct horse battery", first_name="Op")
token = ann.auth.token("operator@example.com", "correct horse battery")
assert token["token_type"] == "bearer" and token["refresh_token"], token
me = Mailroom(api_key=token["access_token"]).auth.me()
assert me["email_address"] == "operator@example.com", me
assert user["id"] in [u["id"] for u in ann.users.list()["users"]]
assert ann.auth.revoke(token["refresh_token"])["revoked"] is True
ann.users.delete(user["id"])

# The operator is told, lists and resolves.
notice = ann.account.notify_operator("a human must approve the invoice", context={"amount": 12})
assert notice["notice_id"] and notice["operator_action_url"], notice
open_ids = [n["notice_id"] if "notice_id" in n else n["id"] for n in ann.account.notices()["notices"]]
assert notice["notice_id"] in open_ids, open_ids
ann.account.resolve_notice(notice["notice_id"])
assert not ann.account.notices()["notices"], "resolved notices are not open"
out["notice"] = notice

deleted = ann.inboxes.delete(created.id)
assert deleted.deleted is True and deleted.id == created.id, deleted
assert ann.inboxes.list().total == 1
out["deleted"] = deleted.to_dict()

assert ann.health()["status"] == "ok"

# The SDK's routes against the server's /openapi.json: every documented route is a method
# (or named in ROUTES_ELSEWHERE), and every method names a real method of the client.
import urllib.request
from mailroom.client import ROUTES, ROUTES_ELSEWHERE

doc = json.load(urllib.request.urlopen(ann.base_url + "/openapi.json"))
documented = {f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops
              if m in ("get", "post", "put", "patch", "delete")}
missing = sorted(documented - set(ROUTES) - set(ROUTES_ELSEWHERE))
assert not missing, f"routes of /openapi.json the SDK has no method for: {missing}"
for route, name in ROUTES.items():
    target = ann
    for part in name.split("."):
        target = getattr(target, part)
    assert callable(target), (route, name)
out["routes_not_in_openapi"] = sorted(set(ROUTES) - documented)

print(json.dumps(out))
