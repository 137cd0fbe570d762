"""`dap-agent veto` / `veto --lift` / `veto --list` / `approve`: the customer's decisions.

Each decision names the user (a UPN or object id the offboarding ledger or Graph knows;
anything else is exit 2), who decided and why. It is written to `<state>/decisions.jsonl`
(what the job obeys) and to the audit log (who, why, when, until). The audit log is checked
first: a broken log refuses the decision before anything is written.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from datetime import date, datetime
from typing import Any

from agent import decisions
from agent.decisions import Decision
from agent.errors import UsageError
from agent.ledger import Ledger
from agent.settings import Settings

AUDIT_EVENTS = {"veto": "veto", "lift": "veto-lifted", "approve": "purge-approved"}


def _from_ledger(settings: Settings, key: str) -> tuple[str, str | None] | None:
    from jobs.offboarding import LEDGER_FILE

    wanted = key.strip().lower()
    ledger = Ledger.open(settings.state_dir / LEDGER_FILE, write=False)
    for record in ledger.records():
        if record.user_id.lower() == wanted or (record.upn or "").lower() == wanted:
            return record.user_id, record.upn
    return None


async def _from_graph(settings: Settings, key: str) -> tuple[str, str | None] | None:
    from agent.graph import lifecycle
    from agent.graph.connect import build_graph_client

    async with build_graph_client(settings) as graph:
        user = await lifecycle.get_user(graph, key)
        if user is not None:
            return user.id, user.upn
        if "@" not in key:  # deleted items are addressed by object id only
            gone = await lifecycle.get_deleted_user(graph, key)
            if gone is not None:
                return gone.id, gone.upn
    return None


def resolve(settings: Settings, key: str) -> tuple[str, str | None]:
    """(object id, UPN) of USER: the ledger first (no Graph needed), then Graph."""
    key = key.strip()
    if not key or "/" in key:
        raise UsageError(f"USER: {key!r} is not a UPN or an object id")
    found = _from_ledger(settings, key) or asyncio.run(_from_graph(settings, key))
    if found is None:
        raise UsageError(f"USER: no user {key!r} in the tenant or the offboarding ledger")
    return found


def _until(text: str | None, today: date) -> str | None:
    if text is None:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--until: not a date YYYY-MM-DD: {text!r}") from None
    if day <= today:
        raise UsageError(f"--until: {day.isoformat()} is not in the future (a veto ends on "
                         "that day)")
    return day.isoformat()


def record(settings: Settings, kind: decisions.Kind, key: str, *, by: str | None,
           reason: str | None, until: str | None = None,
           now: datetime | None = None) -> Decision:
    from agent.runner import agent_now, audit_log

    moment = now or agent_now(settings)
    if kind in ("veto", "lift") and not (reason or "").strip():
        raise UsageError("--reason: say why (it is recorded for both parties)")
    if kind == "approve" and not (by or "").strip():
        raise UsageError("--by: name who approves, on the customer's side")
    user_id, upn = resolve(settings, key)
    log = audit_log(settings)
    log.check()  # a broken log: refuse before anything is written (exit 1)
    decision = Decision(ts=decisions.now_ts(moment), kind=kind, user_id=user_id,
                        user_principal_name=upn, by=(by or getpass.getuser()).strip(),
                        reason=(reason or "").strip() or None,
                        until=_until(until, moment.astimezone(settings.zone).date()))
    decisions.append(settings.state_dir, decision)
    log.append({"event": AUDIT_EVENTS[kind], "job": "offboarding", **decision.to_json()})
    return decision


def listing(settings: Settings, *, as_json: bool) -> str:
    from agent.runner import agent_now

    today = agent_now(settings).astimezone(settings.zone).date()
    standing = decisions.load(settings.state_dir).standing_vetoes(today)
    if as_json:
        return json.dumps([v.to_json() for v in standing], indent=2, ensure_ascii=False)
    if not standing:
        return "no veto stands"
    lines = [f"{'USER':<40} {'BY':<20} {'SINCE':<11} {'UNTIL':<11} REASON"]
    for v in standing:
        lines.append(f"{(v.user_principal_name or v.user_id):<40} {(v.by or '-'):<20} "
                     f"{v.ts[:10]:<11} {(v.until or '-'):<11} {v.reason or ''}")
    return "\n".join(lines)


def describe(decision: Decision) -> str:
    name = decision.user_principal_name or decision.user_id
    text: dict[str, Any] = {"veto": f"veto recorded for {name}",
                            "lift": f"veto lifted for {name}",
                            "approve": f"purge of {name} approved"}
    until = f" until {decision.until}" if decision.until else ""
    return f"{text[decision.kind]}{until} by {decision.by} ({decisions.DECISIONS_FILE}, audit log)"
