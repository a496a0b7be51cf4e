"""Typed results: dataclasses for the API's JSON objects.

Every model keeps the fields it does not name in ``extra`` (a newer server may add some),
and the answer's ``next_steps`` in ``next_steps``. Field names are the API's, except
``from`` which is ``from_``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Generic, List, Optional, Type, TypeVar

T = TypeVar("T", bound="Model")

_RENAMES = {"from": "from_"}


@dataclass
class Model:
    extra: Dict[str, Any] = field(default_factory=dict, repr=False, kw_only=True)
    next_steps: List[str] = field(default_factory=list, repr=False, kw_only=True)

    @classmethod
    def from_json(cls: Type[T], data: Any, next_steps: Optional[List[str]] = None) -> T:
        data = data if isinstance(data, dict) else {}
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "next_steps"}
        known: Dict[str, Any] = {}
        extra: Dict[str, Any] = {}
        for key, value in data.items():
            name = _RENAMES.get(key, key)
            if name in names:
                known[name] = value
            else:
                extra[key] = value
        for f in dataclasses.fields(cls):
            if f.name in names and f.name not in known and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                known[f.name] = None
        return cls(**known, extra=extra, next_steps=list(next_steps or []))

    def to_dict(self) -> Dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("extra", "next_steps")}
        if "from_" in out:
            out["from"] = out.pop("from_")
        out.update(self.extra)
        return out


@dataclass
class InboxCreated(Model):
    """``POST /v1/inboxes``: the keys are shown here once (``account_api_key`` only when
    the call created the account)."""

    id: str
    account_id: str
    username: str
    email: str
    tier: str
    created_at: str
    inbox_api_key: Optional[str] = None
    account_api_key: Optional[str] = None


@dataclass
class InboxSummary(Model):
    id: str
    email: str
    status: str
    created_at: str


@dataclass
class Inbox(Model):
    id: str
    account_id: str
    username: str
    email: str
    status: str
    created_at: str
    client_id: Optional[str] = None
    storage: Optional[Dict[str, Any]] = None


@dataclass
class InboxDeleted(Model):
    id: str
    email: str
    deleted: bool


@dataclass
class MessageSummary(Model):
    id: str
    thread_id: str
    mailbox: str
    received_at: str
    size: int
    read: bool
    labels: List[str]
    from_: Optional[str] = None
    subject: Optional[str] = None


@dataclass
class Message(Model):
    """``GET /v1/inboxes/{id}/messages/{mid}``: the parsed message."""

    id: str
    thread_id: Optional[str] = None
    mailbox: Optional[str] = None
    from_: Any = None
    to: Any = None
    cc: Any = None
    reply_to: Any = None
    subject: Optional[str] = None
    date: Optional[str] = None
    message_id: Optional[str] = None
    in_reply_to: Optional[str] = None
    references: Any = None
    text: Optional[str] = None
    html: Optional[str] = None
    attachments: List[Dict[str, Any]] = field(default_factory=list)
    headers: Any = None
    labels: List[str] = field(default_factory=list)
    read: Optional[bool] = None
    authentication: Optional[Dict[str, Any]] = None
    extracted: Optional[Dict[str, Any]] = None


@dataclass
class MessageUpdated(Model):
    id: str


@dataclass
class MessageDeleted(Model):
    id: str
    outcome: str


@dataclass
class Sent(Model):
    """A send, reply or forward: ``id`` is the Sent copy."""

    id: str
    message_id: str
    thread_id: str
    recipients: List[Dict[str, Any]]


@dataclass
class Account(Model):
    account_id: str
    tier: str
    limits: Dict[str, Any]
    created_at: str


@dataclass
class SmtpCredentials(Model):
    host: str
    port: int
    username: str
    password: str


@dataclass
class Capabilities(Model):
    tier: str
    can: List[Any]
    cannot: List[Any]
    limits: Dict[str, Any]


@dataclass
class UpgradeLink(Model):
    url: str
    expires_at: str
    target_tier: str


@dataclass
class Webhook(Model):
    id: str
    url: str
    events: List[str]
    inbox_ids: List[str]
    status: str
    created_at: str
    updated_at: str
    secret: Optional[str] = None


@dataclass
class Deleted(Model):
    id: str
    deleted: bool


@dataclass
class ThreadSummary(Model):
    id: str
    messages: int


@dataclass
class Thread(Model):
    id: str
    messages: List[Any]


M = TypeVar("M", bound=Model)


@dataclass
class Page(Generic[M]):
    """A list answer: ``items`` (the API's ``inboxes``, ``messages``, ``webhooks``, …),
    ``total``, ``limit``, ``offset``. Iterating a page iterates its items."""

    items: List[M]
    total: int
    limit: Optional[int] = None
    offset: Optional[int] = None
    next_steps: List[str] = field(default_factory=list, repr=False)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def from_json(cls, data: Any, key: str, model: Type[M], next_steps: Optional[List[str]] = None) -> "Page[M]":
        data = data if isinstance(data, dict) else {}
        items = [model.from_json(x) for x in data.get(key) or []]
        return cls(
            items=items,
            total=data.get("total", len(items)),
            limit=data.get("limit"),
            offset=data.get("offset"),
            next_steps=list(next_steps or []),
        )
