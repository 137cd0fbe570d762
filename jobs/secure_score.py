"""Job `secure-score`: records Microsoft Secure Score once a day (DAP 3.12.5).

Reads `/security/secureScores` (SecurityEvents.Read.All) and keeps one record per day in
`<state>/secure-score/YYYY-MM-DD.json` (the day of Graph's `createdDateTime`, UTC): current
and maximum score, the per-control scores and the comparison averages. Graph holds only 90
days, so the agent's records are the long history the service report's trend is drawn from.
The first run backfills what Graph still holds; later runs ask only for the days since the
newest record (at least one). Changes nothing in the tenant and has no findings.

Summary: `date`, `current`, `max`, `percent`, `change_since_last_week` (points against the
record of seven days before, null without one), `records_written`, `records_stored`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from agent.files import read_state_bytes, write_atomic
from agent.graph import secure_score as graph_scores
from agent.graph.secure_score import SecureScore
from agent.job import JobContext, JobPolicy, JobSpec
from agent.run import iso_z

STORE = "secure-score"
WEEK = timedelta(days=7)
# a week-ago record may be missing (the agent did not run that day): accept one this close
WEEK_SLACK = timedelta(days=3)


class Policy(JobPolicy):
    schedule: str = "0 6 * * *"


# ---- the store ------------------------------------------------------------------------------

def store_dir(state_dir: Path) -> Path:
    return state_dir / STORE


def record_of(score: SecureScore) -> dict[str, Any]:
    """One day's record as stored (plain JSON, stable key order)."""
    return {
        "date": score.day.isoformat(),
        "created_at": iso_z(score.created),
        "current": score.current,
        "max": score.max,
        "percent": percent(score.current, score.max),
        "active_user_count": score.active_user_count,
        "licensed_user_count": score.licensed_user_count,
        "comparative": dict(sorted(score.comparative.items())),
        "enabled_services": list(score.enabled_services),
        "controls": [{"name": c.name, "category": c.category, "score": c.score}
                     for c in sorted(score.controls, key=lambda c: c.name)],
        "source_id": score.id,
    }


def encode(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def load_records(state_dir: Path) -> list[dict[str, Any]]:
    """Every stored day, oldest first; a file that is not a record is skipped."""
    directory = store_dir(state_dir)
    if not directory.is_dir():
        return []
    records = []
    for path in sorted(directory.glob("????-??-??.json")):
        try:
            record = json.loads(read_state_bytes(path))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("current"), (int, float)):
            records.append(record)
    return records


def percent(current: float, maximum: float) -> float | None:
    return round(current / maximum * 100, 1) if maximum > 0 else None


def change_since_last_week(records: Iterable[dict[str, Any]], day: date,
                           current: float) -> float | None:
    """Points gained (or lost) since the record of seven days before `day`."""
    target = day - WEEK
    best: dict[str, Any] | None = None
    for record in records:
        recorded = date.fromisoformat(record["date"])
        if target - WEEK_SLACK <= recorded <= target and (
                best is None or recorded > date.fromisoformat(best["date"])):
            best = record
    return None if best is None else round(current - float(best["current"]), 2)


def _newest_day(state_dir: Path) -> date | None:
    directory = store_dir(state_dir)
    days = sorted(p.stem for p in directory.glob("????-??-??.json")) if directory.is_dir() else []
    for stem in reversed(days):
        try:
            return date.fromisoformat(stem)
        except ValueError:
            continue
    return None


# ---- the job --------------------------------------------------------------------------------

async def run(ctx: JobContext) -> None:
    today = ctx.now.astimezone(ctx.tz).date()
    newest = _newest_day(ctx.state_dir)
    days = graph_scores.HISTORY_DAYS if newest is None else (today - newest).days + 1
    scores = await graph_scores.latest_scores(ctx.graph, days)
    written = 0
    for score in scores:
        path = store_dir(ctx.state_dir) / f"{score.day.isoformat()}.json"
        data = encode(record_of(score))
        if path.is_file() and read_state_bytes(path) == data:
            continue  # idempotent: the same day seen again writes nothing
        write_atomic(path, data)
        written += 1
    records = load_records(ctx.state_dir)
    summary: dict[str, Any] = {"date": None, "current": None, "max": None, "percent": None,
                               "change_since_last_week": None}
    if scores:
        latest = scores[0]
        summary.update(
            date=latest.day.isoformat(), current=latest.current, max=latest.max,
            percent=percent(latest.current, latest.max),
            change_since_last_week=change_since_last_week(records, latest.day, latest.current))
    else:
        ctx.run.warn("Graph returned no Secure Score for this tenant (none calculated yet?)")
    summary.update(records_written=written, records_stored=len(records),
                   records_path=str(store_dir(ctx.state_dir)))
    ctx.run.report.summary.update(summary)


JOB = JobSpec(
    id="secure-score",
    title="Microsoft Secure Score, recorded daily",
    policy_section="secure_score",
    policy_model=Policy,
    permissions=(graph_scores.PERMISSION,),
    changes_tenant=False,
    run=run,
)
