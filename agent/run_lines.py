"""The findings and actions of a run report as lines a person reads on a terminal.

Each line names its subjects, capped for big tenants ("and N more"; every one of them is
in `--json` and the stored report):

    finding OFF-PRIVILEGED-LEAVER: 1 (high) — jan@contoso.nl
    finding DEV-STALE: 240 (low) — PC-001, PC-002, PC-003, PC-004, PC-005 and 235 more
    action delete-user failed: 1
      - jan@contoso.nl: 403 Authorization_RequestDenied ...
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from agent.run import Action, Finding, RunReport

NAMES_PER_LINE = 5  # subjects named on a finding's or a done/planned action's line
REASONS_PER_ACTION = 10  # failed/skipped actions listed one per line, with why
_SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}


def subject_label(subject: Mapping[str, Any] | Any) -> str:
    """'jan@contoso.nl', or 'device 1234-...' when Graph gave no name."""
    get = subject.get if isinstance(subject, Mapping) else lambda k: getattr(subject, k, None)
    name, kind, ident = get("name"), get("type"), get("id")
    if name and name != ident:
        return str(name)
    return f"{kind} {ident}" if kind else str(ident)


def names(labels: Sequence[str], limit: int = NAMES_PER_LINE) -> str:
    """'a, b, c' or 'a, b, c, d, e and 7 more' (distinct, in order of appearance)."""
    distinct = list(dict.fromkeys(labels))
    shown = ", ".join(distinct[:limit])
    more = len(distinct) - limit
    return f"{shown} and {more} more" if more > 0 else shown


def finding_lines(findings: Sequence[Finding]) -> Iterator[str]:
    by_rule: dict[str, list[Finding]] = {}
    for f in findings:
        by_rule.setdefault(f.rule, []).append(f)
    order = sorted(by_rule, key=lambda r: (_SEVERITY_ORDER.get(by_rule[r][0].severity, 9), r))
    for rule in order:
        group = by_rule[rule]
        yield (f"finding {rule}: {len(group)} ({group[0].severity}) — "
               + names([subject_label(f.subject) for f in group]))


def action_lines(actions: Sequence[Action]) -> Iterator[str]:
    by_kind: dict[tuple[str, str], list[Action]] = {}
    for a in actions:
        by_kind.setdefault((a.action, a.status), []).append(a)
    for (action, status), group in sorted(by_kind.items()):
        labels = [subject_label(a.target) for a in group]
        if status not in ("failed", "skipped"):
            yield f"action {action} {status}: {len(group)} — {names(labels)}"
            continue
        yield f"action {action} {status}: {len(group)}"
        for a, label in list(zip(group, labels, strict=True))[:REASONS_PER_ACTION]:
            why = a.error if status == "failed" and a.error else a.reason
            yield f"  - {label}: {why}"
        if len(group) > REASONS_PER_ACTION:
            yield f"  - and {len(group) - REASONS_PER_ACTION} more (see --json)"


def report_lines(report: RunReport) -> Iterator[str]:
    yield from finding_lines(report.findings)
    yield from action_lines(report.actions)
