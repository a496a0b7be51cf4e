"""The transport: urllib from the standard library, JSON in and out, errors as MailroomError."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Mapping, Optional

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
"""Where ``mailroom serve --dev`` listens; used when neither the code nor
``MAILROOM_API_URL`` names a server."""


class MailroomError(Exception):
    """An error answer of the API (or no answer at all).

    ``code`` is the API's ``error`` (``NOT_FOUND``, ``SMTP_REQUIRES_PAID``, …), ``status``
    the HTTP status (0 when the server could not be reached), ``upgrade_context`` the
    API's ``upgrade_context`` (``operator_action_url``, ``operator_action_label``,
    ``agent_script``) when a tier stands in the way, else ``None``. ``next_steps`` are the
    answer's ``next_steps`` when it has them; otherwise, for a tier refusal,
    ``[upgrade_context['agent_script']]``, else ``[]``.
    """

    def __init__(
        self,
        code: str,
        message: str,
        status: int = 0,
        upgrade_context: Optional[Dict[str, Any]] = None,
        next_steps: Optional[List[str]] = None,
        field: Optional[str] = None,
        retry_after: Optional[int] = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.status = status
        self.upgrade_context = upgrade_context
        self.next_steps = list(next_steps or [])
        self.field = field
        self.retry_after = retry_after
        self.body = body

    @classmethod
    def from_answer(cls, status: int, body: Any) -> "MailroomError":
        if not isinstance(body, dict):
            text = body if isinstance(body, str) else ""
            return cls("HTTP_ERROR", text or f"HTTP {status}", status, body=body)
        upgrade = body.get("upgrade_context")
        steps = body.get("next_steps")
        if not steps and isinstance(upgrade, dict) and upgrade.get("agent_script"):
            steps = [upgrade["agent_script"]]
        code = body.get("error")
        return cls(
            code=str(code) if code is not None else f"HTTP_{status}",
            message=str(body.get("message", "")),
            status=status,
            upgrade_context=upgrade if isinstance(upgrade, dict) else None,
            next_steps=steps if isinstance(steps, list) else [],
            field=body.get("field"),
            retry_after=body.get("retry_after"),
            body=body,
        )


class Transport:
    """One server and one key; every call answers the decoded JSON body."""

    error_class = MailroomError

    def __init__(
        self,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        timeout: float = 90.0,
        error_class: Optional[type] = None,
    ) -> None:
        self.api_key = api_key if api_key is not None else os.environ.get("MAILROOM_API_KEY") or None
        self.base_url = (base_url or os.environ.get("MAILROOM_API_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.timeout = timeout
        if error_class is not None:
            self.error_class = error_class

    def request(
        self,
        method: str,
        path: str,
        body: Optional[Mapping[str, Any]] = None,
        query: Optional[Mapping[str, Any]] = None,
        raw: bool = False,
    ) -> Any:
        url = self.base_url + path
        if query:
            pairs = []
            for k, v in query.items():
                if v is None:
                    continue
                if isinstance(v, bool):
                    v = "true" if v else "false"
                pairs.append((k, str(v)))
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        headers = {"Accept": "application/json", "User-Agent": "mailroom-python"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = resp.read()
                status = resp.status
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            payload = e.read()
            raise self.error_class.from_answer(e.code, _decode(payload, e.headers.get("Content-Type", ""))) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise self.error_class("CONNECTION_ERROR", f"{self.base_url}: {reason}", 0) from None
        if raw:
            return payload
        if status == 204 or not payload:
            return None
        return _decode(payload, ctype)


def _decode(payload: bytes, ctype: str) -> Any:
    text = payload.decode("utf-8", "replace")
    if "json" in ctype or text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text
