"""The client: ``Mailroom(api_key=None, base_url=None)`` and one resource per API area."""

from __future__ import annotations

import base64
import urllib.parse
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from ._http import MailroomError, Transport
from .models import (
    Account,
    Capabilities,
    Deleted,
    Inbox,
    InboxCreated,
    InboxDeleted,
    InboxSummary,
    Message,
    MessageDeleted,
    MessageSummary,
    MessageUpdated,
    Page,
    Sent,
    SmtpCredentials,
    Thread,
    ThreadSummary,
    UpgradeLink,
    Webhook,
)

Addresses = Union[str, Sequence[str]]


def _q(part: str) -> str:
    return urllib.parse.quote(str(part), safe="")


def _body(**fields: Any) -> Dict[str, Any]:
    """A JSON body without the arguments left at ``None``."""
    return {k: v for k, v in fields.items() if v is not None}


def attachment(filename: str, content: bytes, content_type: str = "application/octet-stream") -> Dict[str, str]:
    """An ``attachments`` entry for send, reply and forward (the content base64-encoded)."""
    return {
        "filename": filename,
        "content_type": content_type,
        "content": base64.b64encode(content).decode("ascii"),
    }


class _Resource:
    def __init__(self, http: Transport) -> None:
        self._http = http

    def _call(self, method: str, path: str, body: Optional[Mapping[str, Any]] = None, query: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        answer = self._http.request(method, path, body=body, query=query)
        return answer if isinstance(answer, dict) else {"result": answer}


class Inboxes(_Resource):
    def create(self, username: Optional[str] = None, client_id: Optional[str] = None, domain: Optional[str] = None) -> InboxCreated:
        """``POST /v1/inboxes``. Without a key this creates an account and shows its
        ``account_api_key`` once; with the account key, another inbox."""
        a = self._call("POST", "/v1/inboxes", _body(username=username, client_id=client_id, domain=domain))
        return InboxCreated.from_json(a.get("result"), a.get("next_steps"))

    def list(self, limit: Optional[int] = None, offset: Optional[int] = None) -> Page[InboxSummary]:
        a = self._call("GET", "/v1/inboxes", query={"limit": limit, "offset": offset})
        return Page.from_json(a.get("result"), "inboxes", InboxSummary, a.get("next_steps"))

    def get(self, inbox_id: str) -> Inbox:
        a = self._call("GET", f"/v1/inboxes/{_q(inbox_id)}")
        return Inbox.from_json(a.get("result"), a.get("next_steps"))

    def delete(self, inbox_id: str) -> InboxDeleted:
        a = self._call("DELETE", f"/v1/inboxes/{_q(inbox_id)}")
        return InboxDeleted.from_json(a.get("result"), a.get("next_steps"))

    def rotate_key(self, inbox_id: str) -> Dict[str, Any]:
        """``POST /v1/inboxes/{id}/rotate-key``: ``{id, email, inbox_api_key}``."""
        return self._call("POST", f"/v1/inboxes/{_q(inbox_id)}/rotate-key").get("result") or {}


class Messages(_Resource):
    def _base(self, inbox_id: str) -> str:
        return f"/v1/inboxes/{_q(inbox_id)}"

    def list(
        self,
        inbox_id: str,
        *,
        unread: Optional[bool] = None,
        from_: Optional[str] = None,
        subject: Optional[str] = None,
        label: Optional[str] = None,
        since: Optional[str] = None,
        mailbox: Optional[str] = None,
        after: Optional[str] = None,
        wait: Optional[int] = None,
        limit: Optional[int] = None,
        offset: Optional[int] = None,
    ) -> Page[MessageSummary]:
        """Newest first. ``wait`` (seconds, at most 60) waits for a message newer than
        ``after`` when there is none yet."""
        query = {
            "unread": unread, "from": from_, "subject": subject, "label": label, "since": since,
            "mailbox": mailbox, "after": after, "wait": wait, "limit": limit, "offset": offset,
        }
        a = self._call("GET", self._base(inbox_id) + "/messages", query=query)
        return Page.from_json(a.get("result"), "messages", MessageSummary, a.get("next_steps"))

    def get(self, inbox_id: str, message_id: str) -> Message:
        a = self._call("GET", f"{self._base(inbox_id)}/messages/{_q(message_id)}")
        return Message.from_json(a.get("result"), a.get("next_steps"))

    def raw(self, inbox_id: str, message_id: str) -> bytes:
        """The message as stored (``message/rfc822``)."""
        return self._http.request("GET", f"{self._base(inbox_id)}/messages/{_q(message_id)}/raw", raw=True)

    def attachment(self, inbox_id: str, message_id: str, attachment_id: str) -> bytes:
        path = f"{self._base(inbox_id)}/messages/{_q(message_id)}/attachments/{_q(attachment_id)}"
        return self._http.request("GET", path, raw=True)

    def update(
        self,
        inbox_id: str,
        message_id: str,
        *,
        read: Optional[bool] = None,
        add_labels: Optional[Iterable[str]] = None,
        remove_labels: Optional[Iterable[str]] = None,
        mailbox: Optional[str] = None,
    ) -> MessageUpdated:
        body = _body(
            read=read,
            add_labels=list(add_labels) if add_labels is not None else None,
            remove_labels=list(remove_labels) if remove_labels is not None else None,
            mailbox=mailbox,
        )
        a = self._call("PATCH", f"{self._base(inbox_id)}/messages/{_q(message_id)}", body)
        return MessageUpdated.from_json(a.get("result"), a.get("next_steps"))

    def delete(self, inbox_id: str, message_id: str) -> MessageDeleted:
        """To Trash; from Trash, for good."""
        a = self._call("DELETE", f"{self._base(inbox_id)}/messages/{_q(message_id)}")
        return MessageDeleted.from_json(a.get("result"), a.get("next_steps"))

    def send(
        self,
        inbox_id: str,
        *,
        to: Addresses,
        subject: str,
        text: Optional[str] = None,
        html: Optional[str] = None,
        cc: Optional[Addresses] = None,
        bcc: Optional[Addresses] = None,
        reply_to: Optional[str] = None,
        attachments: Optional[List[Dict[str, str]]] = None,
        headers: Optional[Dict[str, str]] = None,
        client_id: Optional[str] = None,
    ) -> Sent:
        body = _body(to=to, cc=cc, bcc=bcc, subject=subject, text=text, html=html, reply_to=reply_to,
                     attachments=attachments, headers=headers, client_id=client_id)
        a = self._call("POST", self._base(inbox_id) + "/send", body)
        return Sent.from_json(a.get("result"), a.get("next_steps"))

    def _answer(self, verb: str, inbox_id: str, message_id: str, body: Dict[str, Any]) -> Sent:
        a = self._call("POST", f"{self._base(inbox_id)}/messages/{_q(message_id)}/{verb}", body)
        return Sent.from_json(a.get("result"), a.get("next_steps"))

    def reply(self, inbox_id: str, message_id: str, *, text: Optional[str] = None, html: Optional[str] = None,
              to: Optional[Addresses] = None, cc: Optional[Addresses] = None, bcc: Optional[Addresses] = None,
              attachments: Optional[List[Dict[str, str]]] = None, headers: Optional[Dict[str, str]] = None,
              client_id: Optional[str] = None) -> Sent:
        """``Re:``, ``In-Reply-To``, ``References``, the same thread."""
        return self._answer("reply", inbox_id, message_id, _body(text=text, html=html, to=to, cc=cc, bcc=bcc,
                                                                 attachments=attachments, headers=headers, client_id=client_id))

    def reply_all(self, inbox_id: str, message_id: str, *, text: Optional[str] = None, html: Optional[str] = None,
                  to: Optional[Addresses] = None, cc: Optional[Addresses] = None, bcc: Optional[Addresses] = None,
                  attachments: Optional[List[Dict[str, str]]] = None, headers: Optional[Dict[str, str]] = None,
                  client_id: Optional[str] = None) -> Sent:
        return self._answer("reply-all", inbox_id, message_id, _body(text=text, html=html, to=to, cc=cc, bcc=bcc,
                                                                     attachments=attachments, headers=headers, client_id=client_id))

    def forward(self, inbox_id: str, message_id: str, *, to: Addresses, text: Optional[str] = None,
                html: Optional[str] = None, cc: Optional[Addresses] = None, bcc: Optional[Addresses] = None,
                attachments: Optional[List[Dict[str, str]]] = None, headers: Optional[Dict[str, str]] = None,
                client_id: Optional[str] = None) -> Sent:
        """``Fwd:``, the original attached as ``message/rfc822``."""
        return self._answer("forward", inbox_id, message_id, _body(to=to, text=text, html=html, cc=cc, bcc=bcc,
                                                                   attachments=attachments, headers=headers, client_id=client_id))


class Threads(_Resource):
    def list(self, inbox_id: str, limit: Optional[int] = None, offset: Optional[int] = None) -> Page[ThreadSummary]:
        a = self._call("GET", f"/v1/inboxes/{_q(inbox_id)}/threads", query={"limit": limit, "offset": offset})
        return Page.from_json(a.get("result"), "threads", ThreadSummary, a.get("next_steps"))

    def get(self, inbox_id: str, thread_id: str) -> Thread:
        a = self._call("GET", f"/v1/inboxes/{_q(inbox_id)}/threads/{_q(thread_id)}")
        t = Thread.from_json(a.get("result"), a.get("next_steps"))
        t.messages = [MessageSummary.from_json(m) for m in t.messages or []]
        return t


class AccountResource(_Resource):
    def get(self) -> Account:
        a = self._call("GET", "/v1/account")
        return Account.from_json(a.get("result"), a.get("next_steps"))

    def get_smtp(self) -> SmtpCredentials:
        """``GET /v1/account/smtp``; on the free tier ``SMTP_REQUIRES_PAID`` with
        ``upgrade_context``."""
        a = self._call("GET", "/v1/account/smtp")
        return SmtpCredentials.from_json(a.get("result"), a.get("next_steps"))

    def rotate_smtp(self) -> SmtpCredentials:
        a = self._call("POST", "/v1/account/smtp/rotate")
        return SmtpCredentials.from_json(a.get("result"), a.get("next_steps"))

    def rotate_key(self) -> Dict[str, Any]:
        """``POST /v1/account/rotate-key``: ``{account_id, account_api_key}``; the old key stops."""
        return self._call("POST", "/v1/account/rotate-key").get("result") or {}

    def capabilities(self) -> Capabilities:
        a = self._call("GET", "/v1/capabilities")
        return Capabilities.from_json(a.get("result"), a.get("next_steps"))

    def notify_operator(self, issue: str, context: Optional[Mapping[str, Any]] = None,
                        action_label: Optional[str] = None) -> Dict[str, Any]:
        """``POST /v1/notify-operator``: tells the account's operator something needs a
        human; ``{notice_id, operator_action_url, operator_action_label, agent_script}``."""
        body = _body(issue=issue, context=dict(context) if context is not None else None,
                     action_label=action_label)
        return self._call("POST", "/v1/notify-operator", body).get("result") or {}

    def notices(self, all: bool = False, limit: Optional[int] = None) -> Dict[str, Any]:
        """``GET /v1/account/notices`` (account key or owner): open notices, newest first;
        ``all`` includes resolved ones."""
        query = {"all": "true" if all else None, "limit": limit}
        return self._call("GET", "/v1/account/notices", query=query).get("result") or {}

    def resolve_notice(self, notice_id: str) -> Dict[str, Any]:
        """``POST /v1/account/notices/{id}/resolve`` (account key or owner)."""
        return self._call("POST", f"/v1/account/notices/{_q(notice_id)}/resolve").get("result") or {}

    def upgrade_link(self, target_tier: str) -> UpgradeLink:
        a = self._call("POST", "/v1/upgrade-link", {"target_tier": target_tier})
        return UpgradeLink.from_json(a.get("result"), a.get("next_steps"))


class Webhooks(_Resource):
    def list(self) -> Page[Webhook]:
        a = self._call("GET", "/v1/webhooks")
        return Page.from_json(a.get("result"), "webhooks", Webhook, a.get("next_steps"))

    def create(self, url: str, events: Sequence[str] = ("*",), inbox_ids: Optional[Sequence[str]] = None,
               client_id: Optional[str] = None) -> Webhook:
        body = _body(url=url, events=list(events), inbox_ids=list(inbox_ids) if inbox_ids is not None else None,
                     client_id=client_id)
        a = self._call("POST", "/v1/webhooks", body)
        return Webhook.from_json(a.get("result"), a.get("next_steps"))

    def get(self, webhook_id: str) -> Webhook:
        a = self._call("GET", f"/v1/webhooks/{_q(webhook_id)}")
        return Webhook.from_json(a.get("result"), a.get("next_steps"))

    def update(self, webhook_id: str, *, url: Optional[str] = None, events: Optional[Sequence[str]] = None,
               inbox_ids: Optional[Sequence[str]] = None, status: Optional[str] = None) -> Webhook:
        body = _body(url=url, events=list(events) if events is not None else None,
                     inbox_ids=list(inbox_ids) if inbox_ids is not None else None, status=status)
        a = self._call("PATCH", f"/v1/webhooks/{_q(webhook_id)}", body)
        return Webhook.from_json(a.get("result"), a.get("next_steps"))

    def delete(self, webhook_id: str) -> Deleted:
        a = self._call("DELETE", f"/v1/webhooks/{_q(webhook_id)}")
        return Deleted.from_json(a.get("result"), a.get("next_steps"))

    def test(self, webhook_id: str) -> Dict[str, Any]:
        return self._call("POST", f"/v1/webhooks/{_q(webhook_id)}/test").get("result") or {}

    def deliveries(self, webhook_id: str) -> Dict[str, Any]:
        """``GET /v1/webhooks/{id}/deliveries``: the attempts."""
        return self._call("GET", f"/v1/webhooks/{_q(webhook_id)}/deliveries").get("result") or {}

    def replay(self, webhook_id: str, delivery_id: str) -> Dict[str, Any]:
        path = f"/v1/webhooks/{_q(webhook_id)}/deliveries/{_q(delivery_id)}/replay"
        return self._call("POST", path).get("result") or {}

    def rotate_secret(self, webhook_id: str) -> Webhook:
        a = self._call("POST", f"/v1/webhooks/{_q(webhook_id)}/rotate-secret")
        return Webhook.from_json(a.get("result"), a.get("next_steps"))


class Domains(_Resource):
    """Custom domains (paid tiers). Answers are the API's JSON ``result`` as dicts."""

    def create(self, domain: str) -> Dict[str, Any]:
        """``POST /v1/domains``: the domain with the DNS ``records`` to publish."""
        return self._call("POST", "/v1/domains", {"domain": domain}).get("result") or {}

    def list(self) -> Dict[str, Any]:
        return self._call("GET", "/v1/domains").get("result") or {}

    def get(self, domain: str) -> Dict[str, Any]:
        return self._call("GET", f"/v1/domains/{_q(domain)}").get("result") or {}

    def verify(self, domain: str) -> Dict[str, Any]:
        return self._call("POST", f"/v1/domains/{_q(domain)}/verify").get("result") or {}

    def delete(self, domain: str) -> None:
        self._http.request("DELETE", f"/v1/domains/{_q(domain)}")

    def zone_file(self, domain: str) -> str:
        return self._http.request("GET", f"/v1/domains/{_q(domain)}/zone-file", raw=True).decode("utf-8")


class DomainCredentials(_Resource):
    """A verified domain's SMTP credentials (seed 001's shapes: ``{success, message, data}``)."""

    def create(self, domain: str, username: str) -> Dict[str, Any]:
        """The credential with its ``password`` (shown once) in ``data.credential``."""
        return self._call("POST", f"/api/domains/{_q(domain)}/credentials", {"username": username})

    def list(self, domain: str) -> Dict[str, Any]:
        return self._call("GET", f"/api/domains/{_q(domain)}/credentials")

    def delete(self, domain: str, user_smtp_guid: str) -> None:
        self._http.request("DELETE", f"/api/domains/{_q(domain)}/credentials/{_q(user_smtp_guid)}")


class Keys(_Resource):
    """Scoped API keys (``mr_key_…``, seed 002), managed with the account key. Answers are
    the API's JSON as dicts (seed 002's camelCase: ``apiKey``, ``isActive``, …)."""

    def list(self) -> Dict[str, Any]:
        """``{connectionInfo, keys}``."""
        return self._call("GET", "/v1/keys")

    def create(self, name: str, scopes: Sequence[str]) -> Dict[str, Any]:
        """The key with its secret in ``apiKey`` (shown once)."""
        return self._call("POST", "/v1/keys", {"name": name, "scopes": list(scopes)})

    def delete(self, key_id: str) -> None:
        self._http.request("DELETE", f"/v1/keys/{_q(key_id)}")

    def rotate(self, key_id: str) -> Dict[str, Any]:
        return self._call("POST", f"/v1/keys/{_q(key_id)}/rotate")

    def create_mobile(self, name: str, platform: str, device_id: str) -> Dict[str, Any]:
        """``POST /api/smtp-credentials/mobile``: scopes smtp, pop3, imap, api:read, api:write."""
        return self._call("POST", "/api/smtp-credentials/mobile",
                          {"name": name, "platform": platform, "deviceId": device_id})


class Users(_Resource):
    """The account's operator users (seed 004), managed with the account key or an owner's token."""

    def create(self, email: str, password: str, first_name: Optional[str] = None, surname: Optional[str] = None,
               is_owner: Optional[bool] = None) -> Dict[str, Any]:
        body = _body(email=email, password=password, first_name=first_name, surname=surname, is_owner=is_owner)
        return self._call("POST", "/v1/account/users", body).get("result") or {}

    def list(self) -> Dict[str, Any]:
        return self._call("GET", "/v1/account/users").get("result") or {}

    def update(self, user_id: str, *, disabled: bool) -> Dict[str, Any]:
        return self._call("PATCH", f"/v1/account/users/{_q(user_id)}", {"disabled": disabled}).get("result") or {}

    def delete(self, user_id: str) -> None:
        self._http.request("DELETE", f"/v1/account/users/{_q(user_id)}")


class Auth(_Resource):
    """User tokens (seed 004): the answers are the seed's JSON as dicts."""

    def token(self, email: str, password: str) -> Dict[str, Any]:
        """``{token_type, access_token, expires_at, scope, refresh_token}``; use
        ``Mailroom(api_key=answer['access_token'])``."""
        return self._call("POST", "/v1/auth/token", {"email": email, "password": password})

    def refresh(self, refresh_token: str) -> Dict[str, Any]:
        return self._call("POST", "/v1/auth/refresh", {"refresh_token": refresh_token})

    def revoke(self, refresh_token: str) -> Dict[str, Any]:
        return self._call("POST", "/v1/auth/revoke", {"refresh_token": refresh_token})

    def me(self) -> Dict[str, Any]:
        """``GET /v1/me`` with a user's access token."""
        return self._call("GET", "/v1/me")


class Events(_Resource):
    def list(self, after: Optional[str] = None, limit: Optional[int] = None) -> Dict[str, Any]:
        """``GET /v1/events``: the account's events, oldest first; ``after`` an event id."""
        return self._call("GET", "/v1/events", query={"after": after, "limit": limit}).get("result") or {}


class Mailroom:
    """A Mailroom API client.

    ``api_key``: an account key (``mr_acc_…``), inbox key, scoped API key or user token;
    ``MAILROOM_API_KEY`` when not given (none at all is allowed: ``inboxes.create()``
    then creates an account). ``base_url``: ``MAILROOM_API_URL`` when not given, else
    ``http://127.0.0.1:8080`` (``mailroom serve --dev``).
    """

    error_class = MailroomError

    def __init__(self, api_key: Optional[str] = None, base_url: Optional[str] = None, timeout: float = 90.0) -> None:
        self._http = Transport(api_key, base_url, timeout, error_class=self.error_class)
        self.inboxes = Inboxes(self._http)
        self.messages = Messages(self._http)
        self.threads = Threads(self._http)
        self.account = AccountResource(self._http)
        self.webhooks = Webhooks(self._http)
        self.domains = Domains(self._http)
        self.keys = Keys(self._http)
        self.events = Events(self._http)
        self.domain_credentials = DomainCredentials(self._http)
        self.users = Users(self._http)
        self.auth = Auth(self._http)

    @property
    def base_url(self) -> str:
        return self._http.base_url

    def health(self) -> Dict[str, Any]:
        """``GET /healthz``: ``{status, database}`` while the server and its database answer."""
        return self._http.request("GET", "/healthz")

    def capabilities(self) -> Capabilities:
        """``GET /v1/capabilities``: what this key's tier can and cannot do."""
        return self.account.capabilities()

    def request(self, method: str, path: str, body: Optional[Mapping[str, Any]] = None,
                query: Optional[Mapping[str, Any]] = None) -> Any:
        """Any route, answering the decoded JSON (``{"result": …, "next_steps": …}``)."""
        return self._http.request(method, path, body=body, query=query)


# Every route this SDK calls, as /openapi.json names it, and the method that calls it
# (tests/clients/sdk_python_steps.py compares this with the server's /openapi.json).
ROUTES: Dict[str, str] = {
    "POST /v1/inboxes": "inboxes.create",
    "GET /v1/inboxes": "inboxes.list",
    "GET /v1/inboxes/{id}": "inboxes.get",
    "DELETE /v1/inboxes/{id}": "inboxes.delete",
    "POST /v1/inboxes/{id}/rotate-key": "inboxes.rotate_key",
    "GET /v1/inboxes/{id}/messages": "messages.list",
    "GET /v1/inboxes/{id}/messages/{mid}": "messages.get",
    "PATCH /v1/inboxes/{id}/messages/{mid}": "messages.update",
    "DELETE /v1/inboxes/{id}/messages/{mid}": "messages.delete",
    "GET /v1/inboxes/{id}/messages/{mid}/raw": "messages.raw",
    "GET /v1/inboxes/{id}/messages/{mid}/attachments/{aid}": "messages.attachment",
    "POST /v1/inboxes/{id}/send": "messages.send",
    "POST /v1/inboxes/{id}/messages/{mid}/reply": "messages.reply",
    "POST /v1/inboxes/{id}/messages/{mid}/reply-all": "messages.reply_all",
    "POST /v1/inboxes/{id}/messages/{mid}/forward": "messages.forward",
    "GET /v1/inboxes/{id}/threads": "threads.list",
    "GET /v1/inboxes/{id}/threads/{tid}": "threads.get",
    "GET /v1/account": "account.get",
    "GET /v1/account/smtp": "account.get_smtp",
    "POST /v1/account/smtp/rotate": "account.rotate_smtp",
    "POST /v1/account/rotate-key": "account.rotate_key",
    "GET /v1/capabilities": "capabilities",
    "POST /v1/upgrade-link": "account.upgrade_link",
    "POST /v1/notify-operator": "account.notify_operator",
    "GET /v1/account/notices": "account.notices",
    "POST /v1/account/notices/{id}/resolve": "account.resolve_notice",
    "POST /v1/webhooks": "webhooks.create",
    "GET /v1/webhooks": "webhooks.list",
    "GET /v1/webhooks/{id}": "webhooks.get",
    "PATCH /v1/webhooks/{id}": "webhooks.update",
    "DELETE /v1/webhooks/{id}": "webhooks.delete",
    "POST /v1/webhooks/{id}/test": "webhooks.test",
    "POST /v1/webhooks/{id}/rotate-secret": "webhooks.rotate_secret",
    "GET /v1/webhooks/{id}/deliveries": "webhooks.deliveries",
    "POST /v1/webhooks/{id}/deliveries/{did}/replay": "webhooks.replay",
    "GET /v1/events": "events.list",
    "POST /v1/domains": "domains.create",
    "GET /v1/domains": "domains.list",
    "GET /v1/domains/{domain}": "domains.get",
    "DELETE /v1/domains/{domain}": "domains.delete",
    "POST /v1/domains/{domain}/verify": "domains.verify",
    "GET /v1/domains/{domain}/zone-file": "domains.zone_file",
    "POST /api/domains/{domain}/credentials": "domain_credentials.create",
    "GET /api/domains/{domain}/credentials": "domain_credentials.list",
    "DELETE /api/domains/{domain}/credentials/{guid}": "domain_credentials.delete",
    "GET /v1/keys": "keys.list",
    "POST /v1/keys": "keys.create",
    "DELETE /v1/keys/{key_id}": "keys.delete",
    "POST /v1/keys/{key_id}/rotate": "keys.rotate",
    "POST /api/smtp-credentials/mobile": "keys.create_mobile",
    "POST /v1/account/users": "users.create",
    "GET /v1/account/users": "users.list",
    "PATCH /v1/account/users/{id}": "users.update",
    "DELETE /v1/account/users/{id}": "users.delete",
    "POST /v1/auth/token": "auth.token",
    "POST /v1/auth/refresh": "auth.refresh",
    "POST /v1/auth/revoke": "auth.revoke",
    "GET /v1/me": "auth.me",
    "GET /healthz": "health",
}

# Routes of the document this SDK reaches by another path or not as a method.
ROUTES_ELSEWHERE: Dict[str, str] = {
    "GET /api/smtp-credentials": "keys.list (/v1/keys, the same handler)",
    "POST /api/smtp-credentials": "keys.create (/v1/keys)",
    "DELETE /api/smtp-credentials/{keyId}": "keys.delete (/v1/keys/{key_id})",
    "POST /api/smtp-credentials/{keyId}/rotate": "keys.rotate (/v1/keys/{key_id}/rotate)",
    "GET /v1/inboxes/{id}/events": "Server-Sent Events: not a method yet (use messages.list(wait=...))",
}
