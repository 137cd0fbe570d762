"""The customer's decisions on purges: vetoes, lifts and approvals (`<state>/decisions.jsonl`).

DAP 3.6 asks for actions "only with mutual approval, recorded by both parties". A veto stops
the delete and the purge of one leaver while it stands; `--until` ends it on that day, a
`lift` ends it now. An approval (`purge_requires_approval = true`) lets an announced purge
go ahead; it counts only when it was recorded after the announcement.

One JSON object per line, appended and fsynced, never rewritten:
`{ts, kind: veto|lift|approve, user_id, user_principal_name, by, reason, until}`. The
`veto`/`approve` commands also write each decision to the audit log; the offboarding job and
the service report read them through `load()`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from agent.errors import DapError
from agent.files import make_private_dirs, read_state_bytes

DECISIONS_FILE = "decisions.jsonl"
Kind = Literal["veto", "lift", "approve"]
KINDS: tuple[Kind, ...] = ("veto", "lift", "approve")


class DecisionsError(DapError):
    """decisions.jsonl cannot be read: the job does not guess whether a veto stands."""


@dataclass(frozen=True)
class Decision:
    ts: str  # ISO 8601 UTC, "...Z"
    kind: Kind
    user_id: str
    user_principal_name: str | None
    by: str | None
    reason: str | None
    until: str | None = None  # veto only: YYYY-MM-DD, the day it ends

    @property
    def at(self) -> datetime:
        return datetime.fromisoformat(self.ts.replace("Z", "+00:00"))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def path_of(state_dir: Path) -> Path:
    return state_dir / DECISIONS_FILE


def now_ts(moment: datetime | None = None) -> str:
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse(raw: bytes, number: int, path: Path) -> Decision:
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("kind") not in KINDS \
                or not isinstance(data.get("user_id"), str):
            raise ValueError("not a decision")
        decision = Decision(ts=str(data["ts"]), kind=data["kind"], user_id=data["user_id"],
                            user_principal_name=data.get("user_principal_name"),
                            by=data.get("by"), reason=data.get("reason"),
                            until=data.get("until"))
        decision.at  # noqa: B018 - a bad timestamp is a damaged line
        if decision.until is not None:
            date.fromisoformat(decision.until)
        return decision
    except (ValueError, KeyError, TypeError) as exc:
        raise DecisionsError(f"{path} line {number} is damaged ({exc}); no purge is made while "
                             "it cannot be read: restore it from backup") from None


class Decisions:
    """All decisions, oldest first, with the questions the job asks of them."""

    def __init__(self, decisions: Iterable[Decision] = ()) -> None:
        self.all: tuple[Decision, ...] = tuple(decisions)

    def __iter__(self) -> Iterator[Decision]:
        return iter(self.all)

    def of(self, user_id: str) -> list[Decision]:
        return [d for d in self.all if d.user_id == user_id]

    def veto(self, user_id: str, today: date) -> Decision | None:
        """The veto that stands for this user today, if any (the latest veto not lifted
        since and not past its `until` day)."""
        standing: Decision | None = None
        for decision in self.of(user_id):
            if decision.kind == "veto":
                standing = decision
            elif decision.kind == "lift":
                standing = None
        if standing is not None and standing.until is not None \
                and date.fromisoformat(standing.until) <= today:
            return None
        return standing

    def approval(self, user_id: str, after: datetime) -> Decision | None:
        """The latest approval recorded at or after `after` (the announcement)."""
        found = [d for d in self.of(user_id) if d.kind == "approve" and d.at >= after]
        return found[-1] if found else None

    def standing_vetoes(self, today: date) -> list[Decision]:
        users = dict.fromkeys(d.user_id for d in self.all)
        return [v for v in (self.veto(u, today) for u in users) if v is not None]


def load(state_dir: Path) -> Decisions:
    path = path_of(state_dir)
    try:
        data = read_state_bytes(path)
    except FileNotFoundError:
        return Decisions()
    lines = data.split(b"\n")
    if lines and lines[-1]:  # no newline after it: cut off by a crash, never acknowledged
        lines = lines[:-1]
    return Decisions(_parse(raw, n, path) for n, raw in enumerate(lines, start=1) if raw.strip())


def append(state_dir: Path, decision: Decision) -> None:
    """Append one decision (fsynced); a cut-off last line is cut off first."""
    path = path_of(state_dir)
    make_private_dirs(path.parent)
    line = json.dumps(decision.to_json(), sort_keys=True, ensure_ascii=False).encode() + b"\n"
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        size = os.fstat(fd).st_size
        if size:
            last = os.pread(fd, 1, size - 1)
            if last != b"\n":
                data = os.pread(fd, size, 0)
                os.ftruncate(fd, data.rfind(b"\n") + 1)
        view = memoryview(line)
        while view:  # a short write is continued, never left half
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
