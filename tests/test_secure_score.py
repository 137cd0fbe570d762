"""secure-score end to end: the real runner and GraphClient against the sandbox tenant."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.errors import GraphDataError, GraphPermissionError
from agent.graph import secure_score as graph_scores
from agent.runner import run_job
from agent.sandbox.seed import demo_tenant
from agent.sandbox.seed import secure_score as seed
from agent.sandbox.tenant import SandboxTenant
from agent.settings import Settings
from jobs import REGISTRY
from jobs.secure_score import load_records
from tests.conftest import make_settings, run_on, sandbox_client

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
JOB = "secure-score"
DATA = Path(__file__).resolve().parent / "data"  # Microsoft's documented example, copied


def score_requests(tenant: SandboxTenant) -> list[dict[str, str]]:
    return [r.query for r in tenant.requests if r.path == graph_scores.PATH]


async def test_first_run_keeps_the_90_days_graph_holds_and_sums_them_up(tmp_path: Path) -> None:
    tenant = demo_tenant(NOW)
    settings = make_settings(tmp_path)
    report = await run_on(tenant, settings, JOB, now=NOW)

    assert report.status == "ok", report.error
    assert score_requests(tenant) == [{"$top": "90"}]  # the latest 90 days, one request
    records = load_records(settings.state_dir)
    assert len(records) == 90 == report.summary["records_written"]
    assert records[-1]["date"] == "2026-11-30" and records[0]["date"] == "2026-09-02"
    today, week_ago = seed.score_on(0), seed.score_on(7)
    assert report.summary["date"] == "2026-11-30"
    assert report.summary["current"] == today["currentScore"]
    assert report.summary["max"] == seed.max_score()
    assert report.summary["percent"] == round(today["currentScore"] / seed.max_score() * 100, 1)
    assert report.summary["change_since_last_week"] == round(
        today["currentScore"] - week_ago["currentScore"], 2)
    assert report.summary["change_since_last_week"] > 0  # the seed improved this week
    latest = records[-1]
    assert {c["name"]: c["score"] for c in latest["controls"]} == {
        c["controlName"]: c["score"] for c in today["controlScores"]}
    assert report.findings == [] and report.actions == []
    assert all(r.method == "GET" for r in tenant.requests)


async def test_later_runs_ask_only_for_the_new_days_and_rewrite_nothing(tmp_path: Path) -> None:
    tenant = demo_tenant(NOW)
    settings = make_settings(tmp_path)
    await run_on(tenant, settings, JOB, now=NOW)
    store = settings.state_dir / "secure-score"
    before = {p.name: p.stat().st_mtime_ns for p in store.iterdir()}

    again = await run_on(tenant, settings, JOB, now=NOW)  # same day: nothing new
    assert again.summary["records_written"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in store.iterdir()} == before

    # the next day Graph has one more score
    tomorrow = NOW + timedelta(days=1)
    day = tomorrow.date()
    created = datetime.combine(day, seed.CREATED_AT, UTC)
    tenant.add("secureScores", {**seed.score_on(0), "currentScore": 140.5,
                                "id": f"{tenant.tenant_id}_{day}",
                                "createdDateTime": created.strftime("%Y-%m-%dT%H:%M:%SZ")})
    tenant.requests.clear()
    later = await run_on(tenant, settings, JOB, now=tomorrow)
    assert score_requests(tenant) == [{"$top": "2"}]  # yesterday (may have changed) + today
    assert later.summary["records_written"] == 1
    assert later.summary["current"] == 140.5
    assert later.summary["records_stored"] == 91
    week = json.loads((store / f"{day - timedelta(days=7)}.json").read_bytes())
    assert later.summary["change_since_last_week"] == round(140.5 - week["current"], 2)


async def test_the_documented_example_is_read_as_microsoft_shows_it(tmp_path: Path) -> None:
    example = json.loads((DATA / "security-list-securescores.json").read_text())
    tenant = SandboxTenant(NOW)
    for item in example["value"]:
        tenant.add("secureScores", item)
    settings = make_settings(tmp_path)
    report = await run_on(tenant, settings, JOB, now=NOW)
    assert report.summary["current"] == 387.0 and report.summary["max"] == 697.0
    assert report.summary["percent"] == 55.5
    assert report.summary["date"] == "2019-03-19"
    assert report.summary["change_since_last_week"] is None  # no earlier record
    record = json.loads((settings.state_dir / "secure-score" / "2019-03-19.json").read_bytes())
    assert record["comparative"] == {"AllTenants": 37.0, "IndustryTypes": 109.0,
                                     "TotalSeats": 46.0}
    assert [c["name"] for c in record["controls"]] == ["AdminMFA", "DLPEnabled"]


async def test_a_tenant_without_scores_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    report = await run_on(SandboxTenant(NOW), make_settings(tmp_path), JOB, now=NOW)
    assert report.status == "ok"
    assert report.summary["current"] is None and report.summary["records_written"] == 0
    assert any("no Secure Score" in w for w in report.warnings)


@pytest.mark.parametrize("key", ["currentScore", "maxScore", "createdDateTime"])
async def test_a_score_without_its_numbers_fails_the_run_and_stores_nothing(
        tmp_path: Path, key: str) -> None:
    tenant = demo_tenant(NOW)
    newest = max(tenant.all("secureScores"), key=lambda s: s["createdDateTime"])
    newest[key] = None
    settings = make_settings(tmp_path)
    with pytest.raises(GraphDataError) as caught:
        await run_on(tenant, settings, JOB, now=NOW)
    assert caught.value.exit_code == 3
    report = caught.value.report  # type: ignore[attr-defined]
    assert report.status == "failed" and key in (report.error or "")
    assert load_records(settings.state_dir) == []


async def test_missing_permission_is_named(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with sandbox_client(demo_tenant(NOW), roles=["User.Read.All"]) as graph:
        with pytest.raises(GraphPermissionError) as caught:
            await run_job(settings, JOB, now=NOW, graph=graph)
    assert caught.value.permission == "SecurityEvents.Read.All"
    assert caught.value.exit_code == 3


def test_a_job_is_one_module_and_one_registry_row() -> None:
    """The CLI's choices and the settings' sections come from the registry, nothing else."""
    from agent.cli import build_parser

    for spec in REGISTRY.values():
        assert build_parser().parse_args(["run", spec.id]).job == spec.id
        field = Settings.model_fields[spec.policy_section]
        assert field.annotation is spec.policy_model
    assert REGISTRY[JOB].changes_tenant is False


def test_policy_defaults_and_config(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, secure_score={"schedule": "30 5 * * *"})
    assert settings.policy("secure_score").schedule == "30 5 * * *"
    assert make_settings(tmp_path).policy("secure_score").schedule == "0 6 * * *"

