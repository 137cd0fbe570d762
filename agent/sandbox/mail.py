"""Mail as Exchange Online serves it through Graph: sendMail, drafts, attachments and the
upload sessions for large ones.

Modelled where the product could notice:
- Graph refuses a request body over ~4 MB with 413 ("The maximum request length supported
  is 4MB"): a sendMail with a 2.9 MiB attachment is already over it once base64 adds a
  third (https://learn.microsoft.com/graph/api/user-sendmail,
  https://github.com/O365/python-o365/issues/472).
- Drafts (`POST /users/{id}/messages`), attachments and `createUploadSession` need
  Mail.ReadWrite; `POST .../send` needs Mail.Send.
- An upload session's `uploadUrl` is on another host (outlook.office.com), pre-authenticated
  by a token in its query: a PUT must carry no Authorization header, must start where
  `nextExpectedRanges` says, and the last range answers 201 with a Location header
  (https://learn.microsoft.com/graph/outlook-large-attachments).
- A message sent while an upload session is incomplete goes out without that attachment.
"""

from __future__ import annotations

import base64
import re
import secrets
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx

from agent.sandbox.builders import iso
from agent.sandbox.listing import ListSpec
from agent.sandbox.tenant import SandboxTenant
from agent.sandbox.wire import Call, GraphFault, Reply

MAX_REQUEST_BYTES = 4_000_000  # Graph's front door: longer request bodies get 413
OUTLOOK_HOST = "outlook.sandbox.invalid"  # stands in for outlook.office.com
MAX_UPLOAD_BYTES = 150 * 1024 * 1024  # createUploadSession: files up to 150 MB
SESSION_LIFETIME = timedelta(minutes=15)
_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


def too_large(size: int) -> GraphFault:
    return GraphFault(413, f"The maximum request length supported is 4MB (got {size} bytes).",
                      code="RequestEntityTooLarge")


def _sender(call: Call) -> dict[str, Any]:
    sender = call.tenant.find_user(call.args["id"])
    if sender is None:
        raise GraphFault(404, f"The requested user '{call.args['id']}' is invalid.",
                         code="ErrorInvalidUser")
    if not sender.get("mail"):
        raise GraphFault(404, "The mailbox is either inactive, soft-deleted, or is hosted "
                              "on-premise.", code="MailboxNotEnabledForRESTAPI")
    return sender


def _object(call: Call) -> dict[str, Any]:
    body = call.body
    if not isinstance(body, dict):
        raise GraphFault(400, "Empty Payload. JSON content expected.", code="BadRequest")
    return body


def _recipients(message: Any) -> None:
    if not isinstance(message, dict) or not message.get("toRecipients"):
        raise GraphFault(400, "At least one recipient is required, but none were found.",
                         code="ErrorInvalidRecipients")


def _sent(tenant: SandboxTenant, sender: dict[str, Any], message: dict[str, Any],
          save: Any = True) -> None:
    tenant.add("sentMail", {
        "id": str(uuid.uuid4()),
        "from": sender["userPrincipalName"],
        "sentDateTime": iso(tenant.now),
        "saveToSentItems": save,
        "message": message,
    })


def send_mail(call: Call, spec: ListSpec | None) -> Reply:
    sender = _sender(call)
    body = _object(call)
    message = body.get("message")
    _recipients(message)
    assert isinstance(message, dict)
    _sent(call.tenant, sender, message, body.get("saveToSentItems", True))
    return Reply(202)


def _draft(call: Call) -> dict[str, Any]:
    sender = _sender(call)
    draft = call.tenant.get("messages", call.args["mid"])
    if draft is None or draft.get("_owner") != sender["id"]:
        raise GraphFault(404, "The specified object was not found in the store.",
                         code="ErrorItemNotFound")
    return draft


def create_message(call: Call, spec: ListSpec | None) -> Reply:
    sender = _sender(call)
    message = dict(_object(call))
    draft = {**message, "id": "AAMk" + secrets.token_urlsafe(24), "isDraft": True,
             "createdDateTime": iso(call.tenant.now), "_owner": sender["id"]}
    draft.setdefault("attachments", [])
    call.tenant.add("messages", draft)
    return Reply(201, {k: v for k, v in draft.items() if not k.startswith("_")})


def add_attachment(call: Call, spec: ListSpec | None) -> Reply:
    draft = _draft(call)
    body = _object(call)
    if body.get("@odata.type") != "#microsoft.graph.fileAttachment" or "contentBytes" not in body:
        raise GraphFault(400, "A fileAttachment with contentBytes is expected.",
                         code="ErrorInvalidRequest")
    attachment = {**body, "id": "AAMkAtt" + secrets.token_urlsafe(12),
                  "size": len(base64.b64decode(str(body["contentBytes"])))}
    draft["attachments"].append(attachment)
    call.tenant.touch()
    return Reply(201, attachment)


def create_upload_session(call: Call, spec: ListSpec | None) -> Reply:
    draft = _draft(call)
    item = _object(call).get("AttachmentItem")
    if not isinstance(item, dict) or item.get("attachmentType") != "file" \
            or not isinstance(item.get("size"), int) or not item.get("name"):
        raise GraphFault(400, "AttachmentItem with attachmentType 'file', name and size is "
                              "required.", code="ErrorInvalidRequest")
    if item["size"] > MAX_UPLOAD_BYTES:
        raise GraphFault(400, "The attachment size exceeds the maximum of 150 MB.",
                         code="ErrorInvalidRequest")
    session_id = "AAMkSess" + secrets.token_urlsafe(12)
    token = secrets.token_urlsafe(24)
    expires = call.tenant.now + SESSION_LIFETIME
    call.tenant.add("uploadSessions", {
        "id": session_id, "messageId": draft["id"], "token": token, "name": item["name"],
        "contentType": item.get("contentType") or "application/octet-stream",
        "size": item["size"], "received": "", "expires": iso(expires)})
    url = (f"https://{OUTLOOK_HOST}/api/v2.0/Users('{draft['_owner']}')/Messages("
           f"'{draft['id']}')/AttachmentSessions('{session_id}')?authtoken={token}")
    return Reply(201, {
        "@odata.context": f"{call.base}/$metadata#microsoft.graph.uploadSession",
        "uploadUrl": url, "expirationDateTime": iso(expires), "nextExpectedRanges": ["0-"]})


def send_draft(call: Call, spec: ListSpec | None) -> Reply:
    draft = _draft(call)
    sender = _sender(call)
    _recipients(draft)
    call.tenant.remove("messages", draft["id"])
    for session in call.tenant.all("uploadSessions"):
        if session["messageId"] == draft["id"]:  # an unfinished upload is not attached
            call.tenant.remove("uploadSessions", session["id"])
    message = {k: v for k, v in draft.items()
               if not k.startswith("_") and k not in ("id", "isDraft", "createdDateTime")}
    _sent(call.tenant, sender, message)
    return Reply(202)


def delete_message(call: Call, spec: ListSpec | None) -> Reply:
    draft = _draft(call)
    call.tenant.remove("messages", draft["id"])
    return Reply(204)


# ---- the upload URL (another host, no Graph token) ---------------------------------------

_SESSION_PATH = re.compile(r"/AttachmentSessions\('([^']+)'\)$")


def upload_range(tenant: SandboxTenant, request: httpx.Request) -> tuple[int, dict[str, str],
                                                                        dict[str, Any] | None]:
    """One PUT to an upload URL: (status, headers, JSON body or None)."""
    if request.method != "PUT":
        return 405, {}, _error("ErrorInvalidRequest", "Only PUT is allowed on an upload URL.")
    if "authorization" in request.headers:
        # the URL carries its own token; a Graph token is for another audience
        return 401, {}, _error("InvalidAudience", "The audience of the token is not valid "
                                                  "for this resource.")
    found = _SESSION_PATH.search(request.url.path)
    session = tenant.get("uploadSessions", found.group(1)) if found else None
    token = parse_qs(request.url.query.decode()).get("authtoken", [""])[0]
    if session is None or not secrets.compare_digest(token, session["token"]):
        return 404, {}, _error("ErrorItemNotFound", "The upload session was not found.")
    match = _RANGE.match(request.headers.get("content-range", ""))
    data = request.content
    received = base64.b64decode(session["received"])
    if match is None:
        return 400, {}, _error("ErrorInvalidRequest", "Content-Range is required.")
    start, end, total = (int(g) for g in match.groups())
    if total != session["size"] or end - start + 1 != len(data) or end >= total:
        return 400, {}, _error("ErrorInvalidRequest", "Content-Range does not match the "
                                                      "session or the body.")
    if start != len(received):
        return 416, {}, _error("ErrorInvalidRange",
                               f"The next expected range starts at {len(received)}.")
    received += data
    if len(received) < session["size"]:
        session["received"] = base64.b64encode(received).decode()
        tenant.touch()
        return 200, {}, {"ExpirationDateTime": session["expires"],
                         "nextExpectedRanges": [str(len(received))]}
    draft = tenant.get("messages", session["messageId"])
    tenant.remove("uploadSessions", session["id"])
    attachment_id = "AAMkAtt" + secrets.token_urlsafe(12)
    if draft is not None:
        draft["attachments"].append({
            "@odata.type": "#microsoft.graph.fileAttachment", "id": attachment_id,
            "name": session["name"], "contentType": session["contentType"],
            "size": len(received), "contentBytes": base64.b64encode(received).decode()})
        tenant.touch()
    location = (f"https://{OUTLOOK_HOST}/api/v2.0/Users('{draft and draft['_owner']}')/"
                f"Messages('{session['messageId']}')/Attachments('{attachment_id}')")
    return 201, {"Location": location}, None


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
