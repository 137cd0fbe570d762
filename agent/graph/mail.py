"""Sending mail from a mailbox through Graph, attachments of any size up to 150 MB.

Two ways, chosen on the bytes:
- **inline**: one `POST /users/{sender}/sendMail` (Mail.Send) with the attachments in it,
  base64. Graph refuses a request body over ~4 MB with 413 ("The maximum request length
  supported is 4MB"), and base64 adds a third: a 2.9 MiB file is already too much. So
  inline only when every attachment is under 3 MiB raw and the encoded request fits.
- **draft**: `POST /users/{sender}/messages` creates a draft (Mail.ReadWrite), each
  attachment is added by `POST .../attachments` when its own request fits, otherwise
  through `attachments/createUploadSession` and byte ranges PUT to the session's
  pre-authenticated URL; then `POST .../messages/{id}/send` (Mail.Send).
  https://learn.microsoft.com/graph/outlook-large-attachments

Not idempotent: a send that may have reached Graph is not repeated here; callers that
need at-least-once keep their own record (see jobs/active_users delivery).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import structlog

from agent.errors import DapError, GraphDataError, GraphError
from agent.graph.client import GraphClient

log = structlog.get_logger("agent.graph.mail")

SEND_PERMISSION = "Mail.Send"
DRAFT_PERMISSION = "Mail.ReadWrite"  # drafts, attachments, upload sessions
INLINE_ATTACHMENT_MAX = 3 * 1024 * 1024  # raw bytes: "under 3 MB" goes in one request
REQUEST_LIMIT = 4_000_000  # Graph's request-body limit ("4MB"), taken as decimal to be safe
REQUEST_BUDGET = REQUEST_LIMIT - 16 * 1024  # room for what a proxy may add
UPLOAD_CHUNK = 3 * 1024 * 1024  # each PUT "less than 4 MB"; no 320 KiB rule for Outlook
UPLOAD_MAX = 150 * 1024 * 1024  # the most an upload session takes


@dataclass(frozen=True, slots=True)
class Attachment:
    name: str
    content_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class Sent:
    """How a mail went out: `via` inline (one sendMail) or draft (draft, attach, send)."""

    via: Literal["inline", "draft"]
    request_id: str | None  # of the request that sent it
    requests: int


class MailTooLargeError(DapError):
    """An attachment over what Graph takes (150 MB): nothing was sent."""


def _message(to: Sequence[str], subject: str, text: str, html: str | None) -> dict[str, Any]:
    body = ({"contentType": "HTML", "content": html} if html is not None
            else {"contentType": "Text", "content": text})
    return {"subject": subject, "body": body,
            "toRecipients": [{"emailAddress": {"address": a}} for a in to]}


def _file(attachment: Attachment) -> dict[str, Any]:
    return {"@odata.type": "#microsoft.graph.fileAttachment", "name": attachment.name,
            "contentType": attachment.content_type,
            "contentBytes": base64.b64encode(attachment.content).decode("ascii")}


def encoded_size(body: dict[str, Any]) -> int:
    """The request body's length as httpx sends it (compact JSON, UTF-8)."""
    return len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())


def inline_body(to: Sequence[str], subject: str, text: str, html: str | None,
                attachments: Sequence[Attachment]) -> dict[str, Any] | None:
    """The sendMail body, or None when it may not go in one request."""
    if any(len(a.content) >= INLINE_ATTACHMENT_MAX for a in attachments):
        return None
    message = _message(to, subject, text, html)
    if attachments:
        message["attachments"] = [_file(a) for a in attachments]
    body = {"message": message, "saveToSentItems": True}
    return body if encoded_size(body) <= REQUEST_BUDGET else None


async def send_mail(graph: GraphClient, *, sender: str, to: Sequence[str], subject: str,
                    text: str, html: str | None = None,
                    attachments: Sequence[Attachment] = ()) -> Sent:
    """Send a mail from `sender` (UPN or id) to `to`. `html`, when given, is the body
    (Graph takes one body per message); otherwise `text` is, as plain text."""
    if not to:
        raise ValueError("send_mail: no recipients")
    for a in attachments:
        if len(a.content) > UPLOAD_MAX:
            raise MailTooLargeError(f"attachment {a.name} is {len(a.content)} bytes, over the "
                                    f"{UPLOAD_MAX}-byte limit of Graph mail attachments")
    user = f"/users/{quote(sender, safe='@')}"
    body = inline_body(to, subject, text, html, attachments)
    if body is not None:
        result = await graph.post(f"{user}/sendMail", body, permission=SEND_PERMISSION)
        return Sent("inline", result.request_id, 1)
    return await _send_as_draft(graph, user, _message(to, subject, text, html), attachments)


async def _send_as_draft(graph: GraphClient, user: str, message: dict[str, Any],
                         attachments: Sequence[Attachment]) -> Sent:
    created = await graph.post(f"{user}/messages", message, permission=DRAFT_PERMISSION)
    draft_id = (created.body or {}).get("id")
    if not isinstance(draft_id, str) or not draft_id:
        raise GraphDataError(f"POST {user}/messages: the created draft has no id",
                             request_id=created.request_id)
    draft = f"{user}/messages/{quote(draft_id, safe='')}"
    requests = 1
    try:
        for attachment in attachments:
            requests += await _attach(graph, draft, attachment)
    except BaseException:
        # the draft would sit in the sender's Drafts folder: remove it, best effort
        try:
            await graph.delete(draft, permission=DRAFT_PERMISSION)
        except GraphError as exc:
            log.warning("could not remove the unsent draft", error=str(exc))
        raise
    result = await graph.post(f"{draft}/send", permission=SEND_PERMISSION)
    return Sent("draft", result.request_id, requests + 1)


async def _attach(graph: GraphClient, draft: str, attachment: Attachment) -> int:
    """Attach one file to the draft; returns the number of requests it took."""
    small = _file(attachment)
    if len(attachment.content) < INLINE_ATTACHMENT_MAX and encoded_size(small) <= REQUEST_BUDGET:
        await graph.post(f"{draft}/attachments", small, permission=DRAFT_PERMISSION)
        return 1
    total = len(attachment.content)
    session = await graph.post(f"{draft}/attachments/createUploadSession", {
        "AttachmentItem": {"attachmentType": "file", "name": attachment.name, "size": total,
                           "contentType": attachment.content_type}},
        permission=DRAFT_PERMISSION)
    url = (session.body or {}).get("uploadUrl")
    if not isinstance(url, str) or not url:
        raise GraphDataError("createUploadSession: no uploadUrl in the answer",
                             request_id=session.request_id)
    requests = 1
    start = 0
    while start < total:
        chunk = attachment.content[start:start + UPLOAD_CHUNK]
        response = await graph.put_range(url, chunk, start=start, total=total,
                                         permission=DRAFT_PERMISSION)
        requests += 1
        start += len(chunk)
        if (response.status_code == 201) != (start == total) or (
                start < total and _next_expected(response) != start):
            # the session and we disagree on what it holds: do not send a broken file
            raise GraphDataError(f"upload of {attachment.name}: the session answered "
                                 f"{response.status_code} after byte {start} of {total}")
    return requests


def _next_expected(response: Any) -> int | None:
    """Outlook's `nextExpectedRanges` is a single "{start}" (not OneDrive's "a-b" list)."""
    try:
        ranges = json.loads(response.content).get("nextExpectedRanges") or []
        return int(str(ranges[0]).split("-")[0])
    except (ValueError, AttributeError, IndexError, TypeError):
        return None
