"""daimon.email's Python call shapes on Mailroom, so that code written for them runs here:

    from daimon_email import DaimonClient, DaimonError
    client = DaimonClient(api_key=...)     # or DaimonClient(): MAILROOM_API_KEY, or none
    smtp = client.account.get_smtp()       # smtp.host, .port, .username, .password
    result = client.inboxes.create(username='agent', client_id='agent-001')
    inboxes = client.inboxes.list()        # inboxes.total, inboxes.result[i].email / .id

The server is ``MAILROOM_API_URL`` (or ``base_url=``). Errors raise ``DaimonError`` (a
``MailroomError``): ``.code`` (``SMTP_REQUIRES_PAID``, …), ``.upgrade_context`` (a dict with
``operator_action_url``, ``operator_action_label``, ``agent_script``), ``.message``,
``.status``, ``.next_steps``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import mailroom
from mailroom import InboxSummary, MailroomError
from mailroom.client import Inboxes as _Inboxes


class DaimonError(MailroomError):
    """An API error, with ``code`` and ``upgrade_context`` as daimon.email's SDK has them."""


@dataclass
class InboxList:
    """``client.inboxes.list()``: ``result`` is the list of inboxes (each with ``id``,
    ``email``, ``status``, ``created_at``), beside ``total``, ``limit`` and ``offset``."""

    result: List[InboxSummary]
    total: int
    limit: Optional[int] = None
    offset: Optional[int] = None
    next_steps: List[str] = field(default_factory=list, repr=False)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.result)

    def __len__(self) -> int:
        return len(self.result)


class _DaimonInboxes(_Inboxes):
    def list(self, limit: Optional[int] = None, offset: Optional[int] = None) -> InboxList:  # type: ignore[override]
        page = super().list(limit=limit, offset=offset)
        return InboxList(result=page.items, total=page.total, limit=page.limit, offset=page.offset,
                         next_steps=page.next_steps)


class DaimonClient(mailroom.Mailroom):
    """``DaimonClient(api_key=None, base_url=None)``: a :class:`mailroom.Mailroom` whose
    errors are :class:`DaimonError` and whose ``inboxes.list()`` answers ``.result`` and
    ``.total``."""

    error_class = DaimonError

    def __init__(self, api_key: Optional[str] = None, base_url: Optional[str] = None, timeout: float = 90.0) -> None:
        super().__init__(api_key=api_key, base_url=base_url, timeout=timeout)
        self.inboxes = _DaimonInboxes(self._http)


__all__ = ["DaimonClient", "DaimonError", "InboxList"]
