"""Microsoft Secure Score reads for the secure-score job.

`GET /security/secureScores` (application permission SecurityEvents.Read.All) lists one
secureScore per day, newest first; Graph holds 90 days and `$top=n` asks for the latest n
days ("This data is sorted by createdDateTime, from latest to earliest. This will allow you
to page responses by using $top=n, where n = the number of days of data that you want to
retrieve": learn.microsoft.com/graph/api/resources/securescore). No `$select`: the job keeps
the per-control scores, which are most of each object anyway.

The CSDL (v1.0 `secureScore`, `controlScore`) marks only `azureTenantId` non-nullable, but a
day without `currentScore`, `maxScore` or `createdDateTime` is not a score we can report, so
such an object is a `GraphDataError` naming the property, not a zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from agent.errors import GraphDataError
from agent.graph.client import GraphClient

PERMISSION = "SecurityEvents.Read.All"
PATH = "/security/secureScores"
HISTORY_DAYS = 90  # what Graph holds


@dataclass(frozen=True, slots=True)
class ControlScore:
    name: str
    category: str | None
    score: float
    description: str | None


@dataclass(frozen=True, slots=True)
class SecureScore:
    id: str
    created: datetime
    current: float
    max: float
    active_user_count: int | None
    licensed_user_count: int | None
    comparative: dict[str, float]  # basis (AllTenants, TotalSeats, IndustryTypes) -> average
    controls: tuple[ControlScore, ...]
    enabled_services: tuple[str, ...]

    @property
    def day(self) -> date:
        return self.created.astimezone(UTC).date()


async def latest_scores(graph: GraphClient, days: int) -> list[SecureScore]:
    """The latest `days` daily scores (at most the 90 Graph holds), newest first."""
    days = max(1, min(days, HISTORY_DAYS))
    scores = [_score(item) async for item in graph.list(PATH, permission=PERMISSION, top=days)]
    # sorted by Graph already; sort again so a reordered page cannot change "latest"
    scores.sort(key=lambda s: s.created, reverse=True)
    return scores[:days]


def _score(item: dict[str, Any]) -> SecureScore:
    ident = str(item.get("id") or "?")
    current = _number(item, "currentScore", ident)
    maximum = _number(item, "maxScore", ident)
    created_raw = item.get("createdDateTime")
    try:
        created = datetime.fromisoformat(str(created_raw).replace("Z", "+00:00"))
    except ValueError:
        raise GraphDataError(f"GET {PATH}: secureScore {ident} has no valid createdDateTime "
                             f"({created_raw!r})") from None
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    controls = tuple(
        ControlScore(name=str(c.get("controlName") or "?"),
                     category=c.get("controlCategory") if isinstance(
                         c.get("controlCategory"), str) else None,
                     score=float(c["score"]) if _is_number(c.get("score")) else 0.0,
                     description=c.get("description") if isinstance(
                         c.get("description"), str) else None)
        for c in item.get("controlScores") or () if isinstance(c, dict))
    comparative = {str(c.get("basis")): float(c["averageScore"])
                   for c in item.get("averageComparativeScores") or ()
                   if isinstance(c, dict) and _is_number(c.get("averageScore"))}
    return SecureScore(
        id=ident, created=created, current=current, max=maximum,
        active_user_count=_int_or_none(item.get("activeUserCount")),
        licensed_user_count=_int_or_none(item.get("licensedUserCount")),
        comparative=comparative, controls=controls,
        enabled_services=tuple(str(s) for s in item.get("enabledServices") or ()))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(item: dict[str, Any], key: str, ident: str) -> float:
    value = item.get(key)
    if not _is_number(value):
        raise GraphDataError(f"GET {PATH}: secureScore {ident} has no numeric {key} "
                             f"({value!r})")
    return float(value)  # type: ignore[arg-type]


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
