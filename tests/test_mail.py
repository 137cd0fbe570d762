"""agent.graph.mail against the sandbox mailbox: inline sendMail, the 4 MB request limit,
drafts with attachments and upload sessions for large files."""

from __future__ import annotations

import base64
import os

import pytest

from agent.errors import GraphError, GraphPermissionError
from agent.graph import mail
from agent.graph.mail import Attachment, send_mail
from agent.sandbox import mail as sandbox_mail
from tests.helpers_sandbox import connect, raw, small_tenant

SENDER = "user001@contoso.nl"
TO = ["finance@contoso.nl"]
MIB = 1024 * 1024


def _file(size: int, name: str = "export.csv") -> Attachment:
    return Attachment(name, "text/csv", os.urandom(size))


def _attachments(sent: dict) -> dict[str, bytes]:
    return {a["name"]: base64.b64decode(a["contentBytes"])
            for a in sent["message"].get("attachments", [])}


def _calls(tenant) -> list[str]:  # type: ignore[no-untyped-def]
    return [f"{r.method} {r.path.split('/')[-1]}" for r in tenant.requests]


async def test_a_small_mail_is_one_send_mail_request() -> None:
    tenant = small_tenant(2)
    graph, _, _ = connect(tenant)
    export = _file(1000)
    async with graph:
        sent = await send_mail(graph, sender=SENDER, to=TO, subject="Actieve gebruikers",
                               text="Zie bijlage.", attachments=[export])
    assert (sent.via, sent.requests) == ("inline", 1)
    [record] = tenant.all("sentMail")
    assert record["from"] == SENDER
    assert record["message"]["body"] == {"contentType": "Text", "content": "Zie bijlage."}
    assert _attachments(record) == {"export.csv": export.content}
    assert _calls(tenant) == ["POST sendMail"]


async def test_the_sandbox_refuses_a_request_over_4_mb_as_graph_does() -> None:
    """What every delivering run met with a 2.9 MiB export: inline base64 is over 4 MB."""
    tenant = small_tenant(2)
    _, transport, _ = connect(tenant)
    content = base64.b64encode(os.urandom(int(2.9 * MIB))).decode()
    body = {"message": {"subject": "x", "toRecipients": [{"emailAddress": {"address": TO[0]}}],
                        "attachments": [{"@odata.type": "#microsoft.graph.fileAttachment",
                                         "name": "a.csv", "contentBytes": content}]}}
    response = await raw(transport, "POST", f"/users/{SENDER}/sendMail", json=body)
    assert response.status_code == 413
    assert "maximum request length" in response.json()["error"]["message"]
    assert tenant.all("sentMail") == []


@pytest.mark.parametrize("size", [int(2.9 * MIB), 3 * MIB - 1, 3 * MIB, 3 * MIB + 1])
async def test_at_the_boundary_the_file_goes_through_an_upload_session(size: int) -> None:
    tenant = small_tenant(2)
    graph, _, _ = connect(tenant)
    export = _file(size)
    assert mail.inline_body(TO, "s", "t", None, [export]) is None
    async with graph:
        sent = await send_mail(graph, sender=SENDER, to=TO, subject="s", text="t",
                               attachments=[export])
    assert sent.via == "draft"
    [record] = tenant.all("sentMail")
    assert _attachments(record) == {"export.csv": export.content}
    chunks = (size + mail.UPLOAD_CHUNK - 1) // mail.UPLOAD_CHUNK
    assert _calls(tenant) == ["POST messages", "POST createUploadSession",
                              *["PUT " + r.path.split("/")[-1] for r in tenant.requests[2:-1]],
                              "POST send"]
    assert len(tenant.requests) == 3 + chunks == sent.requests
    assert tenant.all("messages") == [] and tenant.all("uploadSessions") == []


async def test_just_under_the_boundary_it_is_still_inline() -> None:
    tenant = small_tenant(2)
    graph, _, _ = connect(tenant)
    export = _file(int(2.8 * MIB))  # 3.73 MB as base64: fits the 4 MB request
    async with graph:
        sent = await send_mail(graph, sender=SENDER, to=TO, subject="s", text="t",
                               attachments=[export])
    assert sent.via == "inline"
    assert _attachments(tenant.all("sentMail")[0]) == {"export.csv": export.content}


async def test_a_large_file_is_uploaded_in_ranges_without_our_token() -> None:
    """7 MiB: three PUTs of at most 3 MiB; the sandbox's upload host answers 401 to a
    request that carries an Authorization header, so passing proves none was sent."""
    tenant = small_tenant(2)
    graph, _, _ = connect(tenant)
    export = _file(7 * MIB, "big.xlsx")
    async with graph:
        sent = await send_mail(graph, sender=SENDER, to=TO, subject="s", text="t",
                               html="<p>Zie <b>bijlage</b></p>", attachments=[export])
    puts = [r for r in tenant.requests if r.method == "PUT"]
    assert [r.status for r in puts] == [200, 200, 201]
    [record] = tenant.all("sentMail")
    assert record["message"]["body"]["contentType"] == "HTML"
    assert _attachments(record) == {"big.xlsx": export.content}
    assert sent.requests == 6


async def test_many_small_files_over_4_mb_together_go_one_by_one_into_a_draft() -> None:
    tenant = small_tenant(2)
    graph, _, _ = connect(tenant)
    files = [_file(int(1.5 * MIB), f"part{i}.csv") for i in range(3)]
    async with graph:
        sent = await send_mail(graph, sender=SENDER, to=TO, subject="s", text="t",
                               attachments=files)
    assert sent.via == "draft"
    assert _calls(tenant) == ["POST messages"] + ["POST attachments"] * 3 + ["POST send"]
    assert _attachments(tenant.all("sentMail")[0]) == {f.name: f.content for f in files}


async def test_without_mail_readwrite_a_large_mail_names_the_permission() -> None:
    tenant = small_tenant(2)
    graph, _, _ = connect(tenant, roles=["Mail.Send"])
    async with graph:
        with pytest.raises(GraphPermissionError, match=r"Mail\.ReadWrite"):
            await send_mail(graph, sender=SENDER, to=TO, subject="s", text="t",
                            attachments=[_file(3 * MIB)])
    assert tenant.all("sentMail") == [] and tenant.all("messages") == []


async def test_a_failed_upload_removes_the_draft_and_sends_nothing() -> None:
    tenant = small_tenant(2)
    tenant.faults.fail_writes = {"createUploadSession": 500}
    graph, _, _ = connect(tenant)
    async with graph:
        with pytest.raises(GraphError):
            await send_mail(graph, sender=SENDER, to=TO, subject="s", text="t",
                            attachments=[_file(4 * MIB)])
    assert tenant.all("sentMail") == [] and tenant.all("messages") == []
    assert _calls(tenant)[-1].startswith("DELETE")


async def test_an_upload_url_must_start_where_the_session_expects() -> None:
    tenant = small_tenant(2)
    graph, transport, _ = connect(tenant)
    async with graph:
        draft = await graph.post(f"/users/{SENDER}/messages", {"subject": "s"},
                                 permission="Mail.ReadWrite")
        assert draft.body is not None
        session = await graph.post(
            f"/users/{SENDER}/messages/{draft.body['id']}/attachments/createUploadSession",
            {"AttachmentItem": {"attachmentType": "file", "name": "a", "size": 10}},
            permission="Mail.ReadWrite")
    assert session.body is not None
    url = session.body["uploadUrl"]
    assert url.startswith(f"https://{sandbox_mail.OUTLOOK_HOST}/") and "authtoken=" in url
    skipped = await raw(transport, "PUT", url, token=None, content=b"12345",
                        headers={"Content-Range": "bytes 5-9/10"})
    assert skipped.status_code == 416
    first = await raw(transport, "PUT", url, token=None, content=b"12345",
                      headers={"Content-Range": "bytes 0-4/10"})
    assert first.json()["nextExpectedRanges"] == ["5"]
    stolen = await raw(transport, "PUT", url.split("?")[0], token=None, content=b"67890",
                       headers={"Content-Range": "bytes 5-9/10"})
    assert stolen.status_code == 404  # no authtoken, no session


async def test_an_attachment_over_150_mb_is_refused_before_any_request(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mail, "UPLOAD_MAX", 10)
    tenant = small_tenant(2)
    graph, _, _ = connect(tenant)
    async with graph:
        with pytest.raises(mail.MailTooLargeError, match="over the 10-byte limit"):
            await send_mail(graph, sender=SENDER, to=TO, subject="s", text="t",
                            attachments=[_file(11)])
    assert tenant.requests == []
