"""Mailroom's Python SDK: standard library only (urllib), typed results (dataclasses).

    from mailroom import Mailroom, MailroomError
    client = Mailroom()            # MAILROOM_API_URL, MAILROOM_API_KEY
    inbox = client.inboxes.create(username="agent")
"""

from ._http import DEFAULT_BASE_URL, MailroomError
from .client import Mailroom, attachment
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
    Model,
    Page,
    Sent,
    SmtpCredentials,
    Thread,
    ThreadSummary,
    UpgradeLink,
    Webhook,
)

__all__ = [
    "DEFAULT_BASE_URL", "Mailroom", "MailroomError", "attachment", "Account", "Capabilities", "Deleted",
    "Inbox", "InboxCreated", "InboxDeleted", "InboxSummary", "Message", "MessageDeleted", "MessageSummary",
    "MessageUpdated", "Model", "Page", "Sent", "SmtpCredentials", "Thread", "ThreadSummary", "UpgradeLink",
    "Webhook",
]
