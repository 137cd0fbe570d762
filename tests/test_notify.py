"""Notifications as a person receives them: a webhook (respx) and the sandbox mailbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from agent.audit import AuditLog
from agent.errors import ConfigError
from agent.notify import previous_report
from agent.notify.channels import teams_card
from agent.notify.messages import ITEM_LIMIT, Message
from agent.sandbox import builders as b
from agent.sandbox.seed import demo_tenant
from agent.sandbox.seed import licensing as mail_seed
from agent.sandbox.seed import roles as seed
from agent.sandbox.tenant import SandboxTenant
from agent.settings import Settings, load_settings
from tests.conftest import CLIENT_ID, TENANT_ID, make_settings, run_on, write_config
from tests.helpers_offboarding import add_leaver
from tests.helpers_offboarding import run_off as offboarding_run
from tests.helpers_offboarding import settings as offboarding_settings
from tests.helpers_offboarding import small_tenant as offboarding_tenant

NOW = datetime(2026, 3, 18, 9, 0, tzinfo=UTC)
HOOK = "https://hooks.example.test/workflows/abc?sig=TOPSECRETSIG"
JOB = "privileged-roles"


def notify_settings(tmp_path: Path, **notify: Any) -> Settings:
    table = {"webhook_url": HOOK, "mail_to": [mail_seed.SERVICE_MANAGER],
             "sender": mail_seed.SENDER, **notify}
    return make_settings(tmp_path, privileged_roles=seed.demo_policy(NOW)["privileged_roles"],
                         notify=table)


def new_global_admin(tenant: SandboxTenant, upn: str = "nieuwe.beheerder@contoso.nl") -> None:
    user = tenant.add("users", b.user(upn, "Nieuwe Beheerder"))
    tenant.add("roleAssignmentScheduleInstances",
               b.role_assignment_instance(user["id"], "Global Administrator"))
    tenant.add("roleAssignments", b.role_assignment(user["id"], "Global Administrator"))


def posted(route: respx.Route) -> list[dict[str, Any]]:
    return [json.loads(call.request.content) for call in route.calls]


def audit_entries(settings: Settings, event: str) -> list[dict[str, Any]]:
    return [e for e in AuditLog(settings.state_dir / "audit.jsonl").entries()
            if e.get("event") == event]


@respx.mock(assert_all_mocked=True)
async def test_a_new_global_admin_reaches_the_webhook_and_the_mailbox_once(
        tmp_path: Path, respx_mock: respx.MockRouter) -> None:
    hook = respx_mock.post(HOOK).mock(return_value=httpx.Response(202))
    settings = notify_settings(tmp_path)
    tenant = demo_tenant(NOW)
    first = await run_on(tenant, settings, JOB, now=NOW)
    baseline = posted(hook)
    assert [m["event"] for m in baseline] == ["new-finding"]  # the first run: all are new
    assert len(tenant.all("sentMail")) == 1

    new_global_admin(tenant)
    second = await run_on(tenant, settings, JOB, now=NOW + timedelta(hours=1))
    [digest] = posted(hook)[len(baseline):]
    assert digest["event"] == "new-finding" and digest["run_id"] == second.run_id
    assert any("nieuwe.beheerder@contoso.nl" in item for item in digest["items"])
    before = {(f.rule, f.subject.id) for f in first.findings}
    fresh = [f for f in second.findings if f.severity == "high"
             and (f.rule, f.subject.id) not in before]
    assert len(digest["items"]) == len(fresh) > 0  # only what is new, one message for all
    mail = tenant.all("sentMail")[-1]
    assert mail["message"]["toRecipients"] == [
        {"emailAddress": {"address": mail_seed.SERVICE_MANAGER}}]
    assert "nieuwe.beheerder@contoso.nl" in mail["message"]["body"]["content"]
    assert mail["message"]["subject"].startswith("[dap-agent] privileged-roles: ")

    # the message carries the checkpoint of the run's last entry; each send is audited
    run_end = next(e for e in AuditLog(settings.state_dir / "audit.jsonl").entries()
                   if e.get("event") == "run-finished" and e.get("run_id") == second.run_id)
    assert digest["audit_checkpoint"] == f"{run_end['seq']}:{run_end['hash']}"
    assert f"audit checkpoint: {run_end['seq']}:{run_end['hash']}" in \
        mail["message"]["body"]["content"]
    sent = [e for e in audit_entries(settings, "notify-sent") if e["run_id"] == second.run_id]
    assert sorted(e["channel"] for e in sent) == ["mail", "webhook"]
    assert {e["checkpoint"] for e in sent} == {digest["audit_checkpoint"]}

    third = await run_on(tenant, settings, JOB, now=NOW + timedelta(hours=2))
    assert third.findings and len(posted(hook)) == len(baseline) + 1  # still open: not again
    assert AuditLog(settings.state_dir / "audit.jsonl").verify().ok  # sends chain in as well


@respx.mock(assert_all_mocked=True)
async def test_teams_format_posts_an_adaptive_card_message(
        tmp_path: Path, respx_mock: respx.MockRouter) -> None:
    hook = respx_mock.post(HOOK).mock(return_value=httpx.Response(202))
    settings = notify_settings(tmp_path, webhook_format="teams", mail_to=[], sender="")
    await run_on(demo_tenant(NOW), settings, JOB, now=NOW)
    [payload] = posted(hook)
    assert payload["type"] == "message"
    [attachment] = payload["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    kinds = [block["type"] for block in card["body"]]
    assert kinds == ["TextBlock", "TextBlock", "FactSet"]
    facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
    assert facts["job"] == JOB and ":" in facts["audit checkpoint"]


def test_a_card_caps_long_lists() -> None:
    message = Message("new-finding", "t", tuple(f"x{i}" for i in range(ITEM_LIMIT)), omitted=7)
    text = teams_card(message)["attachments"][0]["content"]["body"][1]["text"]
    assert text.endswith("- and 7 more (see the run report)")
    assert "and 7 more" in message.text()


@respx.mock(assert_all_mocked=True)
async def test_a_failing_webhook_never_fails_the_run_and_never_shows_its_url(
        tmp_path: Path, respx_mock: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    respx_mock.post(HOOK).mock(side_effect=httpx.ConnectError(f"cannot reach {HOOK}"))
    settings = notify_settings(tmp_path, mail_to=[], sender="")
    report = await run_on(demo_tenant(NOW), settings, JOB, now=NOW)
    assert report.status == "ok"
    [failed] = audit_entries(settings, "notify-failed")
    assert failed["channel"] == "webhook"
    assert failed["error"] == "webhook: connection failed (ConnectError)"
    log = (settings.state_dir / "audit.jsonl").read_text()
    out = capsys.readouterr()
    for text in (log, out.out, out.err):
        assert "TOPSECRETSIG" not in text and "hooks.example.test" not in text


@respx.mock(assert_all_mocked=True)
async def test_a_webhook_answering_500_is_reported_and_mail_still_goes(
        tmp_path: Path, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(HOOK).mock(return_value=httpx.Response(500))
    settings = notify_settings(tmp_path)
    tenant = demo_tenant(NOW)
    report = await run_on(tenant, settings, JOB, now=NOW)
    assert report.status == "ok"
    assert [e["error"] for e in audit_entries(settings, "notify-failed")] == [
        "webhook: answered HTTP 500"]
    assert [e["channel"] for e in audit_entries(settings, "notify-sent")] == ["mail"]
    assert len(tenant.all("sentMail")) == 1


@respx.mock(assert_all_mocked=True)
async def test_a_failed_run_is_notified(tmp_path: Path, respx_mock: respx.MockRouter) -> None:
    hook = respx_mock.post(HOOK).mock(return_value=httpx.Response(202))
    settings = notify_settings(tmp_path, events=["run-failed"])
    tenant = demo_tenant(NOW)
    tenant.faults.malformed_path = "roleAssignmentScheduleInstances"
    with pytest.raises(Exception):  # noqa: B017 - whatever the job raises, it is notified
        await run_on(tenant, settings, JOB, now=NOW)
    [message] = posted(hook)
    assert message["event"] == "run-failed" and message["title"] == f"{JOB}: run failed"
    assert "not valid JSON" in message["facts"]["error"]


@respx.mock(assert_all_mocked=True)
async def test_min_severity_and_events_choose_what_is_sent(
        tmp_path: Path, respx_mock: respx.MockRouter) -> None:
    hook = respx_mock.post(HOOK).mock(return_value=httpx.Response(202))
    settings = notify_settings(tmp_path, mail_to=[], sender="", min_severity="low")
    report = await run_on(demo_tenant(NOW), settings, JOB, now=NOW)
    [digest] = posted(hook)
    assert len(digest["items"]) == sum(1 for f in report.findings if f.severity != "info")
    (tmp_path / "b").mkdir()
    quiet = notify_settings(tmp_path / "b", mail_to=[], sender="", events=["run-failed"])
    await run_on(demo_tenant(NOW), quiet, JOB, now=NOW)
    assert len(hook.calls) == 1


@respx.mock(assert_all_mocked=True)
async def test_purges_entering_the_veto_window_are_announced_once(
        tmp_path: Path, respx_mock: respx.MockRouter) -> None:
    hook = respx_mock.post(HOOK).mock(return_value=httpx.Response(202))
    tenant = offboarding_tenant()
    add_leaver(tenant, "nov.leaver")
    cfg = offboarding_settings(tmp_path, extra_sections={"notify": {
        "webhook_url": HOOK, "events": ["purge-announced"]}})
    day = timedelta(days=1)
    await offboarding_run(tenant, cfg)  # disabled on 18 March: purge date 18 June
    assert hook.calls == []
    report = await offboarding_run(tenant, cfg, now=NOW + 80 * day)  # 6 June: in the window
    [message] = posted(hook)
    assert message["event"] == "purge-announced" and message["run_id"] == report.run_id
    assert message["items"][0].startswith("nov.leaver@contoso.nl: purge from 2026-06-18")
    await offboarding_run(tenant, cfg, now=NOW + 81 * day)
    assert len(hook.calls) == 1


@respx.mock(assert_all_mocked=True)
async def test_the_delivered_month_is_notified_drafts_are_not(
        tmp_path: Path, respx_mock: respx.MockRouter) -> None:
    hook = respx_mock.post(HOOK).mock(return_value=httpx.Response(202))
    settings = make_settings(tmp_path, active_users={**mail_seed.DEMO_POLICY["active_users"],
                                                     "deliver_to": [], "sender": ""},
                             notify={"webhook_url": HOOK})
    tenant = demo_tenant(NOW)
    await run_on(tenant, settings, "active-users", now=NOW)
    assert hook.calls == []
    report = await run_on(tenant, settings, "active-users", now=NOW, final=True)
    [message] = posted(hook)
    assert message["event"] == "month-delivered"
    assert message["title"] == f"active users 2026-03 delivered: {report.summary['active']}"
    assert f"sha256: {report.summary['export_sha256']}" in message["items"]
    await run_on(tenant, settings, "active-users", now=NOW, final=True)  # already delivered
    assert len(hook.calls) == 1


@respx.mock(assert_all_mocked=True)
async def test_a_broken_audit_log_is_notified_once_and_not_audited(
        tmp_path: Path, respx_mock: respx.MockRouter) -> None:
    hook = respx_mock.post(HOOK).mock(return_value=httpx.Response(202))
    settings = notify_settings(tmp_path, mail_to=[], sender="", events=["audit-broken"])
    tenant = demo_tenant(NOW)
    await run_on(tenant, settings, JOB, now=NOW)
    log = settings.state_dir / "audit.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0] + b"".join(lines[2:]))  # an entry removed
    for _ in range(2):  # the daemon retries: one message for one break
        with pytest.raises(Exception):  # noqa: B017 - AuditBrokenError, exit 1
            await run_on(tenant, settings, JOB, now=NOW)
    [message] = posted(hook)
    assert message["event"] == "audit-broken" and "not intact" in message["items"][0]
    assert log.read_bytes().count(b"\n") == len(lines) - 1  # nothing appended


def test_previous_report_skips_failed_runs_and_orders_same_second_runs(
        tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    for rid, status in (("20260318T090000Z-privileged-roles-bbbbbb", "ok"),
                        ("20260318T090000Z-privileged-roles-aaaaaa", "partial"),
                        ("20260318T090500Z-privileged-roles-cccccc", "failed")):
        (runs / f"{rid}.json").write_text(json.dumps({"job": JOB, "status": status,
                                                      "run_id": rid}))
    found = previous_report(runs, JOB, "20260318T091000Z-privileged-roles-dddddd")
    assert found is not None and found["run_id"] == "20260318T090000Z-privileged-roles-aaaaaa"
    assert previous_report(runs, "offboarding", "20260318T091000Z-offboarding-x") is None


# ---- settings --------------------------------------------------------------------------

def base_config(tmp_path: Path, **notify: Any) -> Path:
    return write_config(tmp_path / "agent.toml", tenant_id=TENANT_ID, client_id=CLIENT_ID,
                        graph_url="sandbox:", state_dir=str(tmp_path / "state"), notify=notify)


def test_the_webhook_url_comes_from_the_environment_or_a_credential_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = base_config(tmp_path, webhook_format="teams")
    monkeypatch.setenv("DAP_AGENT_NOTIFY__WEBHOOK_URL", HOOK)
    settings = load_settings(config)
    assert settings.notify.webhook_url is not None
    assert settings.notify.webhook_url.get_secret_value() == HOOK
    assert settings.notify.webhook_format == "teams"
    assert "TOPSECRET" not in repr(settings.notify)
    monkeypatch.delenv("DAP_AGENT_NOTIFY__WEBHOOK_URL")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "notify_webhook_url").write_text(HOOK + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    from_file = load_settings(config)
    assert from_file.notify.webhook_url is not None
    assert from_file.notify.webhook_url.get_secret_value() == HOOK
    assert from_file.notify.webhook_format == "teams"  # merged with the file's [notify]


def test_bad_notify_settings_are_named_without_echoing_the_url(tmp_path: Path) -> None:
    config = base_config(tmp_path, webhook_url="http://hooks.example.test/x?sig=TOPSECRETSIG",
                         mail_to=["not-an-address"], min_severity="urgent")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    text = str(caught.value)
    assert "notify.webhook_url: must be an https:// URL" in text
    assert "notify.mail_to: not a mail address: not-an-address" in text
    assert "notify.min_severity" in text
    assert "TOPSECRETSIG" not in text and "hooks.example.test" not in text
    ok = load_settings(base_config(tmp_path, webhook_url="http://127.0.0.1:8080/hook"))
    assert ok.notify.channels == ("webhook",)
    with pytest.raises(ConfigError, match="mail_to is set but sender is empty"):
        load_settings(base_config(tmp_path, mail_to=["a@contoso.nl"]))


def test_no_channel_sends_nothing(tmp_path: Path) -> None:
    settings = load_settings(base_config(tmp_path))
    assert settings.notify.channels == () and not settings.notify.wants("run-failed")


@respx.mock(assert_all_mocked=True)
async def test_an_expiring_certificate_is_notified_once_a_day(
        tmp_path: Path, respx_mock: respx.MockRouter) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from agent.notify import notify

    hook = respx_mock.post(HOOK).mock(return_value=httpx.Response(202))
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dap-agent contoso")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=300))
            .not_valid_after(now + timedelta(days=10, hours=1)).sign(key, hashes.SHA256()))
    path = tmp_path / "client.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
                     + cert.public_bytes(serialization.Encoding.PEM))
    config = base_config(tmp_path, webhook_url=HOOK)
    text = config.read_text().replace('graph_url = "sandbox:"',
                                      f'graph_url = "sandbox:"\nclient_certificate_path = "{path}"')
    config.write_text(text)
    settings = load_settings(config)
    for hours in (0, 1):
        await notify(settings, "certificate-expiring",
                     details={"now": now + timedelta(hours=hours)})
    [message] = posted(hook)
    assert message["event"] == "certificate-expiring"
    assert message["title"].startswith("dap-agent client certificate expires in 10 days")
    assert message["data"]["thumbprint"] == cert.fingerprint(hashes.SHA1()).hex().upper()
    await notify(settings, "certificate-expiring", details={"now": now + timedelta(days=1)})
    assert len(hook.calls) == 2  # the next day again
    assert [e["notify_event"] for e in audit_entries(settings, "notify-sent")] == [
        "certificate-expiring"] * 2


def test_config_check_says_where_notifications_go_without_the_url(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    config = base_config(tmp_path, webhook_format="teams", min_severity="medium")
    monkeypatch.setenv("DAP_AGENT_NOTIFY__WEBHOOK_URL", HOOK)
    assert main(["--config", str(config), "config", "check"]) == 0
    out = capsys.readouterr().out
    assert "notify             webhook (teams); events run-failed," in out
    assert "min_severity medium" in out and "TOPSECRETSIG" not in out


def test_a_partial_run_names_each_failed_action_and_its_error() -> None:
    from agent.notify.messages import run_failed
    from agent.run import Action, RunReport

    report = RunReport(run_id="r1", job="offboarding", trigger="schedule", dry_run=False,
                       started_at="2026-03-18T09:00:00Z", status="partial")
    report.actions = [
        Action("delete-user", {"type": "user", "id": "u1", "name": "jan@contoso.nl"},
               "failed", "leaver", error="403 Authorization_RequestDenied"),
        Action("disable-user", {"type": "user", "id": "u2", "name": "piet@contoso.nl"},
               "done", "leaver")]
    message = run_failed(report, "tenant")
    assert message is not None
    assert message.title == "offboarding: run ended partial (1 failed action)"
    assert message.items == ("delete-user failed: jan@contoso.nl: 403 Authorization_RequestDenied",)
    report.status = "ok"
    assert run_failed(report, "tenant") is None
