"""The service report: built from a year of stored sandbox state, read as a person would."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from babel.numbers import parse_decimal

from agent.cli import main
from agent.report import write_report
from agent.report.i18n import LANGUAGES, translations
from agent.report.state import collect
from agent.run import load_report
from agent.sandbox.history import history_months, seed_history
from agent.sandbox.seed import demo_tenant
from agent.settings import Settings, load_settings
from jobs.active_users import load_snapshot
from jobs.secure_score import load_records
from tests.conftest import run_on
from tests.helpers_hardening import demo_config

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # a Monday, November's last working day
MONTH = "2026-11"
ROOT = Path(__file__).resolve().parents[1]
CURRENT_JOBS = ("active-users", "offboarding", "device-compliance", "privileged-roles",
                "secure-score")


@dataclass
class History:
    config: Path
    settings: Settings
    state: Path
    reports: dict[str, Any]  # job -> the current month's run report (as stored)


def build_history(directory: Path) -> History:
    from agent.sandbox.seed import roles

    config = demo_config(directory, privileged_roles=roles.demo_policy(NOW)["privileged_roles"])
    settings = load_settings(config)

    async def seed() -> dict[str, Any]:
        await seed_history(settings, NOW)
        tenant = demo_tenant(NOW)
        reports = {}
        for job in CURRENT_JOBS:
            report = await run_on(tenant, settings, job, now=NOW, trigger="schedule",
                                  scheduled_for=NOW if job == "active-users" else None)
            reports[job] = load_report(report.run_id, settings.state_dir / "runs")
        return reports

    return History(config, settings, settings.state_dir, asyncio.run(seed()))


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    return build_history(tmp_path_factory.mktemp("history"))


@pytest.fixture(scope="module")
def rendered(history: History) -> dict[str, bytes]:
    """The month's report in each language, rendered once for the tests that only read it."""
    return {lang: write_report(history.state, MONTH, tz=history.settings.zone, language=lang,
                               output=history.config.parent / f"report-{lang}.html"
                               ).path.read_bytes()
            for lang in ("nl", "en")}


@pytest.fixture
def copy(history: History, tmp_path: Path) -> Iterator[History]:
    """The history in a directory of this test's own (it may change it)."""
    target = tmp_path / "h"
    shutil.copytree(history.config.parent, target)
    text = history.config.read_text().replace(str(history.config.parent), str(target))
    (target / "agent.toml").write_text(text)
    settings = load_settings(target / "agent.toml")
    yield History(target / "agent.toml", settings, settings.state_dir, history.reports)


class Cells(HTMLParser):
    """Text of every element with a data-key, per key; table rows per table id."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, list[str]] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self.captions: dict[str, str] = {}
        self._key: list[str | None] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._caption: list[str] | None = None
        self.svgs: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg":
            self.svgs.append(a)
        if tag == "table":
            self._table = a.get("id") or f"table-{len(self.tables)}"
            self.tables[self._table] = []
        if tag == "caption":
            self._caption = []
        if tag == "tr" and self._table:
            self._row = []
        if tag in ("td", "th") and self._row is not None:
            self._cell = []
        if tag not in ("br", "meta"):
            self._key.append(a.get("data-key"))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        if tag == "caption" and self._caption is not None and self._table:
            self.captions[self._table] = "".join(self._caption).strip()
            self._caption = None
        if tag == "table":
            self._table = None
        if tag not in ("br", "meta") and self._key:
            self._key.pop()

    def handle_data(self, data: str) -> None:
        for key in self._key:
            if key:
                self.keys.setdefault(key, []).append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._caption is not None:
            self._caption.append(data)

    def value(self, key: str) -> str:
        return "".join(self.keys[key]).strip()


def parse(html: bytes) -> Cells:
    cells = Cells()
    cells.feed(html.decode("utf-8"))
    return cells


def number(text: str, language: str = "nl") -> float:
    return float(parse_decimal(text.replace("\u00a0%", "").strip(), locale=LANGUAGES[language]))


def report_cli(config: Path, *args: str) -> int:
    return main(["--config", str(config), "report", *args])


# ---- the numbers are the stored state's ---------------------------------------------------

def test_summary_and_section_numbers_match_the_stored_state(
        history: History, rendered: dict[str, bytes]) -> None:
    cells = parse(rendered["nl"])
    snapshot = load_snapshot(history.state, MONTH)
    assert snapshot is not None
    totals = snapshot["totals"]
    assert number(cells.value("active")) == totals["active"]
    assert number(cells.value("total_active")) == totals["active"]
    for key in ("e5", "exchange_only", "licensed_disabled"):
        assert number(cells.value(key)) == totals[key], key
    assert cells.value("export_sha256") == snapshot["export"]["sha256"]
    assert history.reports["active-users"]["summary"]["export_sha256"] == \
        snapshot["export"]["sha256"]  # the job's own report says the same

    offboarding = history.reports["offboarding"]["summary"]
    assert number(cells.value("veto_window")) == len(offboarding["veto_window"]) > 0
    veto_rows = cells.tables["veto-window"][1:]
    assert [r[0] for r in veto_rows] == [v["user_principal_name"]
                                        for v in offboarding["veto_window"]]

    devices = history.reports["device-compliance"]["summary"]
    for key in ("compliant_percent", "encrypted_percent", "escrowed_percent"):
        assert number(cells.value(key)) == pytest.approx(devices[key], abs=0.05), key
    assert cells.value("summary_compliant") == cells.value("compliant_percent")
    assert cells.value("summary_encrypted") == cells.value("encrypted_percent")
    assert number(cells.value("unmanaged")) == devices["devices"]["unmanaged"]

    privileged = history.reports["privileged-roles"]["summary"]
    shown = cells.value("global_admins")
    assert shown == f"{privileged['global_admin_holders']} ({privileged['global_admin_expected']})"

    latest = load_records(history.state)[-1]
    assert latest["date"] == "2026-11-30"
    assert number(cells.value("secure_score")) == pytest.approx(latest["percent"], abs=0.05)
    assert history.reports["secure-score"]["summary"]["percent"] == latest["percent"]


def test_findings_are_listed_by_rule_with_their_subjects(
        history: History, rendered: dict[str, bytes]) -> None:
    cells = parse(rendered["en"])
    for table, job in (("device-findings", "device-compliance"),
                       ("privileged-findings", "privileged-roles")):
        findings = history.reports[job]["findings"]
        rows = {r[0]: r for r in cells.tables[table][1:]}
        expected: dict[str, list[str]] = {}
        for f in findings:
            expected.setdefault(f["rule"], []).append(f["subject"]["name"] or f["subject"]["id"])
        assert set(rows) == set(expected), table
        for rule, names in expected.items():
            assert number(rows[rule][2], "en") == len(names)
            for name in sorted(set(names), key=str.casefold)[:10]:
                assert name in rows[rule][3], (rule, name)


def test_twelve_month_trends_come_from_snapshots_runs_and_score_records(
        history: History, rendered: dict[str, bytes]) -> None:
    state = collect(history.state, MONTH, history.settings.zone)
    months = [*history_months(NOW), MONTH]
    assert state.months == months
    for point in state.active_trend:
        snapshot = load_snapshot(history.state, point["month"])
        assert snapshot is not None, point["month"]
        assert point["active"] == snapshot["totals"]["active"]
        assert snapshot["delivered"] is True  # every month delivered, November too
    actives = [p["active"] for p in state.active_trend]
    assert actives[0] < actives[-1]  # staff joined over the year
    assert all(p["compliant"] is not None for p in state.device_trend)
    assert state.device_trend[0]["compliant"] < state.device_trend[-1]["compliant"]
    records = load_records(history.state)
    for point in state.score_trend:
        in_month = [r for r in records if r["date"].startswith(point["month"])]
        assert point["current"] == in_month[-1]["current"], point["month"]
    # the tables beside the charts hold the same numbers
    cells = parse(rendered["en"])
    trend = [t for t, caption in cells.captions.items() if caption == "Active users per month"]
    rows = cells.tables[trend[0]][1:]
    assert [number(r[1], "en") for r in rows] == actives


def test_joiners_and_leavers_are_named(history: History, rendered: dict[str, bytes]) -> None:
    state = collect(history.state, MONTH, history.settings.zone)
    assert state.active_users is not None
    joiners = [p["upn"] for p in state.active_users.joiners]
    leavers = [p["upn"] for p in state.active_users.leavers]
    assert joiners and leavers
    assert "stagiair.tijdelijk@contoso.nl" in leavers
    text = rendered["nl"].decode()
    for upn in joiners + leavers:
        assert upn in text


# ---- one self-contained, deterministic, audited document ---------------------------------

def test_same_state_same_bytes_and_the_checkpoint_is_the_last_runs(copy: History) -> None:
    first = write_report(copy.state, MONTH, tz=copy.settings.zone, language="nl")
    data = first.path.read_bytes()
    entries = [json.loads(line) for line in (copy.state / "audit.jsonl").read_text().splitlines()]
    written = [e for e in entries if e["event"] == "report-written"]
    assert written[-1]["sha256"] == hashlib.sha256(data).hexdigest() == first.sha256
    # the checkpoint is the entry before the last reported run's run-finished entry
    state = collect(copy.state, MONTH, copy.settings.zone)
    assert state.last_run is not None
    finished = next(i for i, e in enumerate(entries) if e.get("run_id") == state.last_run["run_id"]
                    and e["event"] == "run-finished")
    before = entries[finished - 1]
    assert first.checkpoint == f"{before['seq']}:{before['hash']}"
    assert parse(data).value("checkpoint") == first.checkpoint
    assert parse(data).value("audit_verified") == "ja"
    # the log grew (report-written): rendering again gives the same bytes
    again = write_report(copy.state, MONTH, tz=copy.settings.zone, language="nl")
    assert again.path.read_bytes() == data


def test_a_broken_audit_log_is_reported_as_not_verified(copy: History) -> None:
    log = copy.state / "audit.jsonl"
    lines = log.read_text().splitlines()
    entry = json.loads(lines[3])
    entry["ts"] = "2000-01-01T00:00:00.000Z"  # an edit the hash chain catches
    lines[3] = json.dumps(entry)
    log.write_text("\n".join(lines) + "\n")
    from agent.audit.log import AuditBrokenError

    with pytest.raises(AuditBrokenError):  # written, but not appended to a broken log
        write_report(copy.state, MONTH, tz=copy.settings.zone, language="en")
    path = copy.state / "reports" / f"service-report-{MONTH}.html"
    cells = parse(path.read_bytes())
    assert cells.value("audit_verified") == "no"
    assert "did NOT verify" in path.read_text()


def test_the_document_is_self_contained_and_every_chart_is_labelled(
        rendered: dict[str, bytes]) -> None:
    html = rendered["nl"].decode()
    cells = parse(rendered["nl"])
    assert len(cells.svgs) == 3
    titles = [svg["aria-label"] for svg in cells.svgs]
    assert titles == ["Actieve gebruikers, laatste 12 maanden",
                      "Apparaten compliant, versleuteld, herstelsleutel bewaard",
                      "Microsoft Secure Score, laatste 12 maanden"]
    for title in titles:
        assert html.count(f">{title}</text>") == 1  # drawn in the chart too
    assert "Maand</text>" in html  # axis label
    assert "<script" not in html and "<link" not in html and "<img" not in html
    assert not re.search(r'(src|href)="(?!#)', html)  # nothing loaded from anywhere
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "ids are unique across the charts"
    assert "@page { size: A4" in html


def test_names_from_the_tenant_are_escaped(copy: History) -> None:
    runs = copy.state / "runs"
    path = next(p for p in sorted(runs.iterdir()) if "-device-compliance-" in p.name
                and p.name.startswith("20261130"))
    report = load_report(path)
    report["findings"][0]["subject"]["name"] = "<img src=x onerror=alert(1)>"
    data = json.dumps(report).encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    written = write_report(copy.state, MONTH, tz=copy.settings.zone, language="en")
    html = written.path.read_text()
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_dutch_by_default_english_on_request(copy: History) -> None:
    assert report_cli(copy.config, "--month", MONTH) == 0
    nl = (copy.state / "reports" / f"service-report-{MONTH}.html").read_text()
    assert '<html lang="nl">' in nl and "Servicerapport november 2026" in nl
    assert report_cli(copy.config, "--month", MONTH, "--language", "en",
                      "--output", str(copy.config.parent / "en.html")) == 0
    en = (copy.config.parent / "en.html").read_text()
    assert '<html lang="en">' in en and "Service report November 2026" in en


def test_every_string_has_a_dutch_translation() -> None:
    from babel.messages.extract import extract_from_dir

    method_map = [("agent/report/**.py", "python"), ("jobs/service_report.py", "python"),
                  ("agent/report/templates/**.html", "jinja2")]
    found = {m[2] for m in extract_from_dir(str(ROOT), method_map)}
    ids = {m if isinstance(m, str) else m[0] for m in found}
    catalog = translations("nl")
    missing = [m for m in ids if catalog.gettext(m) == m and m not in UNCHANGED]
    assert missing == []
    assert len(ids) > 100


UNCHANGED = {"Account", "Apps", "Compliant", "E5", "Export %(file)s, SHA-256:", "Maximum",
             "Microsoft Secure Score", "Principal", "Principals", "SKU", "Secure Score",
             "Status", "Tenant", "info", "veto"}


# ---- the command -----------------------------------------------------------------------

def test_a_month_without_data_is_exit_2(copy: History, capsys: pytest.CaptureFixture[str]) -> None:
    assert report_cli(copy.config, "--month", "2020-01") == 2
    assert "no stored data for 2020-01" in capsys.readouterr().err
    assert report_cli(copy.config, "--month", "2026-13") == 2
    assert "YYYY-MM" in capsys.readouterr().err
    assert report_cli(copy.config, "--month", MONTH, "--output",
                      str(copy.state / "audit.jsonl")) == 2
    assert "inside the state directory" in capsys.readouterr().err


def test_pdf_without_the_extra_is_exit_2_naming_it(
        copy: History, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "weasyprint", None)  # import fails as if not installed
    assert report_cli(copy.config, "--month", MONTH, "--format", "pdf") == 2
    err = capsys.readouterr().err
    assert "dap-agent[pdf]" in err and "Traceback" not in err


def test_pdf_has_its_a4_pages(copy: History) -> None:
    pytest.importorskip("weasyprint")
    assert report_cli(copy.config, "--month", MONTH, "--format", "pdf") == 0
    pdf = copy.state / "reports" / f"service-report-{MONTH}.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed")
    out = copy.config.parent / "page"
    subprocess.run(["pdftoppm", "-r", "20", "-png", str(pdf), str(out)], check=True)
    pages = sorted(copy.config.parent.glob("page-*.png"))
    assert 3 <= len(pages) <= 8
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True).stdout
    assert "595.276 x 841.89 pts (A4)" in info or "(A4)" in info


def test_chromium_renders_it_without_console_errors(history: History, tmp_path: Path,
                                                    rendered: dict[str, bytes]) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    page = history.config.parent / "report-nl.html"
    assert page.read_bytes() == rendered["nl"]
    flags = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    result = subprocess.run([*flags, "--dump-dom", page.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line
               or "Content Security Policy" in line]
    assert console == []
    dom = result.stdout
    assert dom.count("<svg") == 3 and "Servicerapport november 2026" in dom
    assert dom.count("<polyline") + dom.count("<path") > 30  # the charts are drawn


# ---- the scheduled run: written and mailed --------------------------------------------------

def mailed(tenant: Any) -> list[dict[str, Any]]:
    return [m["message"] for m in tenant.all("sentMail")]


async def test_the_scheduled_run_writes_and_mails_the_month_it_serves(copy: History) -> None:
    import base64

    from agent.sandbox.seed.licensing import SENDER, SERVICE_MANAGER

    settings = load_settings(copy.config).model_copy(update={
        "service_report": load_settings(copy.config).policy("service_report").model_copy(
            update={"deliver_to": [SERVICE_MANAGER], "sender": SENDER})})
    tenant = demo_tenant(NOW)
    # a catch-up run on 2 December serves the fire time of 30 November: November's report
    report = await run_on(tenant, settings, "service-report", now=datetime(2026, 12, 2, 8,
                          tzinfo=UTC), trigger="schedule", scheduled_for=NOW)
    assert report.summary["month"] == MONTH
    path = Path(report.summary["report_path"])
    assert path == copy.state / "reports" / f"service-report-{MONTH}.html"
    assert report.summary["mailed_to"] == [SERVICE_MANAGER]
    [action] = report.actions
    assert (action.action, action.status) == ("send-mail", "done")
    [message] = mailed(tenant)
    assert message["subject"] == "Servicerapport november 2026"
    [attachment] = message["attachments"]
    assert attachment["name"] == f"service-report-{MONTH}.html"
    stored = await asyncio.to_thread(path.read_bytes)
    assert base64.b64decode(attachment["contentBytes"]) == stored
    assert hashlib.sha256(stored).hexdigest() == report.summary["report_sha256"]

    tenant.collections["sentMail"].clear()
    dry = await run_on(tenant, settings, "service-report", now=NOW, dry_run=True)
    assert [(a.action, a.status) for a in dry.actions] == [("send-mail", "planned")]
    assert mailed(tenant) == []


def test_the_readme_shows_the_first_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## Service report" in readme
    assert "(docs/service-report.png)" in readme
    assert (ROOT / "docs" / "service-report.png").read_bytes().startswith(b"\x89PNG")


def test_deleted_accounts_and_decisions_of_the_month(copy: History) -> None:
    from agent.ledger import Ledger

    ledger = Ledger.open(copy.state / "offboarding-ledger.jsonl")
    for uid, upn, purged in (("u-nov", "karel.klaar@contoso.nl", datetime(2026, 11, 12, 9,
                                                                          tzinfo=UTC)),
                             ("u-oct", "oud.geval@contoso.nl", datetime(2026, 10, 31, 23, 30,
                                                                        tzinfo=UTC))):
        ledger.record("inactive", uid, at=datetime(2026, 8, 1, tzinfo=UTC), run_id="r1",
                      upn=upn, name=upn.split("@")[0].replace(".", " ").title(),
                      leave_date="2026-07-31")
        ledger.record("deleted", uid, at=purged.replace(day=1), run_id="r2")
        ledger.record("purged", uid, at=purged, run_id="r3", source="deleted-items")
    decisions = [
        {"ts": "2026-11-15T10:00:00Z", "kind": "veto", "user_id": "u-x",
         "user_principal_name": "olaf.oud@contoso.nl", "by": "J. Jansen (klant)",
         "reason": "lopend onderzoek <FIOD>", "until": "2027-01-31"},
        {"ts": "2026-10-02T10:00:00Z", "kind": "approve", "user_id": "u-y",
         "user_principal_name": "pim.beheerder@contoso.nl", "by": "J. Jansen",
         "reason": "", "until": None},
    ]
    (copy.state / "decisions.jsonl").write_text(
        "".join(json.dumps(d) + "\n" for d in decisions))

    state = collect(copy.state, MONTH, copy.settings.zone)
    # 31 October 23:30 UTC is 1 November in Amsterdam: that purge belongs to November too
    assert [r["upn"] for r in state.deleted_accounts] == ["oud.geval@contoso.nl",
                                                          "karel.klaar@contoso.nl"]
    assert [d["user"] for d in state.decisions] == ["olaf.oud@contoso.nl"]
    written = write_report(copy.state, MONTH, tz=copy.settings.zone, language="nl")
    cells = parse(written.path.read_bytes())
    assert number(cells.value("deleted")) == 2
    rows = cells.tables["deleted-accounts"][1:]
    assert rows[1][:2] == ["Karel Klaar", "karel.klaar@contoso.nl"]
    assert [r[4] for r in rows] == ["1 november 2026", "12 november 2026"]  # oldest first
    [decision] = cells.tables["decisions"][1:]
    assert decision[1] == "veto (tot 31 januari 2027)"
    assert decision[4] == "lopend onderzoek <FIOD>"  # shown as text, escaped in the HTML
    assert "lopend onderzoek &lt;FIOD&gt;" in written.path.read_text()


def test_report_output_to_a_fifo_or_symlink_is_refused(
        copy: History, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 15: --output never replaces a device, fifo or symlink (exit 2)."""
    fifo = copy.config.parent / "pipe.html"
    os.mkfifo(fifo)
    link = copy.config.parent / "link.html"
    link.symlink_to(copy.config)
    for target in (fifo, link):
        assert report_cli(copy.config, "--month", MONTH, "--output", str(target)) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert os.path.islink(link) and stat.S_ISFIFO(os.lstat(fifo).st_mode)
