"""The offboarding ledger: what the agent did to each leaver, kept in the state dir.

Graph does not remember *when* an account was set inactive, whether we already issued a
wipe for a device, or that a purge was under way; the ledger does. It is the source of the
purge date (inactive date + retention), of `OFF-REENABLED` (we disabled it, now it is
enabled) and of the monthly deleted-accounts overview.

Format: append-only JSONL, one event per line, folded into one `LeaverRecord` per user on
load. Why append-only rather than a JSON document replaced atomically: each event is one
small `write` on an O_APPEND descriptor, fsynced before the next Graph change, so the cost
per change is constant (a rewrite grows with the ledger); the history is kept (the overview
lists who was purged when, by which run, with request ids); and the only damage a crash can
do is cut the last line. A cut last line carries an event that was never acknowledged: it is
discarded (and cut off before the next append), exactly as if the crash had come before the
write, and the job re-derives that step from Graph. A bad line anywhere else is not a crash
artefact: the ledger refuses to load rather than guess inactive dates for accounts it is
about to delete.

Write-ahead: before each change the job appends an `intent` (what, to whom, when); after
Graph's 2xx it appends the outcome (`inactive`, `revoked`, `device`, `deleted`, `purged`),
which settles the intent. An intent without outcome is a change whose answer was lost (a
crash, a full disk): the next run reconciles it against Graph before planning (did the
disable happen? then the inactive date is the intent's date, not an older leave date) and
settles it with the outcome or with `intent-void` (it did not happen). Other events:
`reenabled`, `restored` (a veto for good), `announced` (the purge was listed in the veto
window), `refused` (Graph refused the change for a privileged account), `purge-failed`
(a refused or called-off purge). `purge-started` is the older name of the delete intent.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.errors import DapError, DiskFullError
from agent.files import make_private_dirs, open_state_file, read_state_bytes

EVENTS = ("inactive", "revoked", "device", "reenabled", "purge-started", "purge-failed",
          "deleted", "purged", "intent", "intent-void", "announced", "refused", "restored")
# the changes an intent can announce; device actions are keyed "wipe:<device id>"
INTENT_ACTIONS = ("disable", "revoke", "wipe", "retire", "delete", "purge")


class LedgerError(DapError):
    """The ledger cannot be read safely; the job stops rather than guess."""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class DeviceRecord:
    device_id: str
    name: str | None
    action: str  # "wipe" | "retire"
    source: str  # "issued" (by this agent) | "observed" (already pending in Intune)
    at: datetime
    run_id: str | None
    request_id: str | None


@dataclass(frozen=True)
class Intent:
    """A change the job was about to make (written before it was sent)."""

    key: str  # "disable", "revoke", "delete", "purge", "wipe:<device id>", ...
    at: datetime
    run_id: str | None

    @property
    def action(self) -> str:
        return self.key.split(":", 1)[0]

    @property
    def device_id(self) -> str | None:
        return self.key.split(":", 1)[1] if ":" in self.key else None


def intent_key(action: str, device_id: str | None = None) -> str:
    if action not in INTENT_ACTIONS:
        raise ValueError(f"unknown intent action {action!r}")
    return f"{action}:{device_id}" if device_id else action


@dataclass
class LeaverRecord:
    """Everything the ledger knows about one user, folded from its events in order."""

    user_id: str
    upn: str | None = None
    name: str | None = None
    leave_date: str | None = None
    inactive_since: datetime | None = None
    # "disabled": this agent disabled it; "leave-date": found disabled, dated by its leave
    # date; "observed": found disabled with no leave date, dated when first seen
    inactive_source: str | None = None
    inactive_run_id: str | None = None
    inactive_request_id: str | None = None
    revoked_at: datetime | None = None
    revoke_request_id: str | None = None
    devices: dict[str, DeviceRecord] = field(default_factory=dict)
    reenabled_at: datetime | None = None
    purge_started_at: datetime | None = None
    deleted_at: datetime | None = None
    delete_request_id: str | None = None
    delete_run_id: str | None = None
    purged_at: datetime | None = None
    purge_request_id: str | None = None
    purge_run_id: str | None = None
    purge_source: str | None = None
    intents: dict[str, Intent] = field(default_factory=dict)  # written, not yet settled
    announced_at: datetime | None = None  # first listed in the veto window (this period)
    announced_run_id: str | None = None
    refused: dict[str, datetime] = field(default_factory=dict)  # action -> last 403
    restored_at: datetime | None = None  # restored from deleted items: never deleted again

    @property
    def inactive(self) -> bool:
        """Set inactive and not enabled again since."""
        return self.inactive_since is not None and self.reenabled_at is None

    @property
    def purge_pending(self) -> bool:
        """A purge this agent started (or half made) and did not finish."""
        return (self.purge_started_at is not None or self.deleted_at is not None
                or "delete" in self.intents or "purge" in self.intents) \
            and self.purged_at is None and self.restored_at is None

    def _settle(self, *keys: str) -> None:
        for key in keys:
            self.intents.pop(key, None)

    def apply(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        at = _time(event.get("at")) or datetime.now(UTC)
        for key in ("upn", "name", "leave_date"):
            if event.get(key):
                setattr(self, key, event[key])
        if kind == "inactive":
            # a new inactive period: the first, after a re-enable, or after a restore
            self.inactive_since = _time(event.get("since")) or at
            self.inactive_source = event.get("source")
            self.inactive_run_id = event.get("run_id")
            self.inactive_request_id = event.get("request_id")
            if self.reenabled_at is not None:  # enabled in between: new sessions to revoke
                self.revoked_at = None
                self.revoke_request_id = None
                self.announced_at = None  # a new period: a new announcement
                self.announced_run_id = None
            self.reenabled_at = None
            self._settle("disable")
            self.refused.pop("disable", None)
        elif kind == "revoked":
            self.revoked_at = at
            self.revoke_request_id = event.get("request_id")
            self._settle("revoke")
        elif kind == "device":
            device_id = str(event["device_id"])
            self.devices[device_id] = DeviceRecord(
                device_id=device_id, name=event.get("device_name"),
                action=str(event.get("action")), source=str(event.get("source", "issued")),
                at=at, run_id=event.get("run_id"), request_id=event.get("request_id"))
            self._settle(f"wipe:{device_id}", f"retire:{device_id}")
        elif kind == "reenabled":
            self.reenabled_at = at
        elif kind == "purge-started":  # the delete intent, by its older name
            self.purge_started_at = at
            self.intents["delete"] = Intent("delete", at, event.get("run_id"))
        elif kind == "purge-failed":  # refused, or called off (restored): no half purge
            self.purge_started_at = None
            self.deleted_at = None
            self._settle("delete", "purge")
        elif kind == "deleted":
            self.deleted_at = _time(event.get("deleted_at")) or at
            self.delete_request_id = event.get("request_id")
            self.delete_run_id = event.get("run_id")
            self._settle("delete")
            self.refused.pop("delete", None)
        elif kind == "purged":
            self.purged_at = at
            self.purge_request_id = event.get("request_id")
            self.purge_run_id = event.get("run_id")
            self.purge_source = event.get("source")
            self._settle("delete", "purge")
        elif kind == "intent":
            key = str(event["key"])
            self.intents[key] = Intent(key, at, event.get("run_id"))
        elif kind == "intent-void":  # reconciled: the change did not happen
            self._settle(str(event["key"]))
        elif kind == "announced":
            if self.announced_at is None:
                self.announced_at = at
                self.announced_run_id = event.get("run_id")
        elif kind == "refused":
            self.refused[str(event["action"])] = at
            self._settle(str(event["action"]))
        elif kind == "restored":
            self.restored_at = at
            self.purge_started_at = None
            self._settle("delete", "purge")


class Ledger:
    """The ledger file and its folded state. `write=False` (dry runs) keeps it in memory only.

    Appends are not locked: the runner's per-job lock already serialises offboarding runs.
    """

    def __init__(self, path: Path, *, write: bool = True) -> None:
        self.path = path
        self.write = write
        self._records: dict[str, LeaverRecord] = {}
        self._cut_at: int | None = None  # offset of a cut-off last line, removed on append
        self.discarded_tail = False

    @classmethod
    def open(cls, path: Path, *, write: bool = True) -> Ledger:
        ledger = cls(path, write=write)
        ledger._load()
        return ledger

    # ---- reading -----------------------------------------------------------------------

    def _load(self) -> None:
        try:
            data = read_state_bytes(self.path)
        except FileNotFoundError:
            return
        offset = 0
        lines = data.split(b"\n")
        for number, raw in enumerate(lines, start=1):
            last = number == len(lines)
            if last:
                if raw:  # no newline after it: a write cut off by a crash
                    self._cut_at = offset
                    self.discarded_tail = True
                break
            offset_next = offset + len(raw) + 1
            if raw.strip():
                try:
                    event = json.loads(raw)
                    if not isinstance(event, dict) or event.get("event") not in EVENTS \
                            or not isinstance(event.get("user_id"), str):
                        raise ValueError("not a ledger event")
                    self._fold(event)
                except (ValueError, KeyError, TypeError) as exc:
                    raise LedgerError(
                        f"offboarding ledger {self.path} line {number} is damaged ({exc}); "
                        "the job will not act on a ledger it cannot read: restore it from "
                        "backup or move it aside (inactive dates then fall back to leave "
                        "dates)") from None
            offset = offset_next

    def _fold(self, event: dict[str, Any]) -> None:
        user_id = event["user_id"]
        record = self._records.get(user_id)
        if record is None:
            record = self._records[user_id] = LeaverRecord(user_id=user_id)
        record.apply(event)

    def get(self, user_id: str) -> LeaverRecord | None:
        return self._records.get(user_id)

    def records(self) -> Iterator[LeaverRecord]:
        return iter(list(self._records.values()))

    # ---- writing -----------------------------------------------------------------------

    def record(self, event: str, user_id: str, *, at: datetime, run_id: str | None,
               **data: Any) -> None:
        """Append one event (flushed and fsynced) and fold it into the state."""
        if event not in EVENTS:
            raise ValueError(f"unknown ledger event {event!r}")
        entry: dict[str, Any] = {"event": event, "user_id": user_id, "at": _iso(at),
                                 "run_id": run_id}
        for key, value in data.items():
            if value is None:
                continue
            entry[key] = _iso(value) if isinstance(value, datetime) else value
        if self.write:
            self._append(json.dumps(entry, sort_keys=True, separators=(",", ":"),
                                    ensure_ascii=False).encode() + b"\n")
        self._fold(entry)

    def _append(self, line: bytes) -> None:
        make_private_dirs(self.path.parent)
        fd = open_state_file(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            if self._cut_at is not None:
                os.ftruncate(fd, self._cut_at)
                self._cut_at = None
            written = os.write(fd, line)
            if written != len(line):  # a short write: treat like a crash mid-line
                raise OSError(f"short write to {self.path}")
            os.fsync(fd)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(self.path, "the ledger entry was not written; the run "
                                    "stops before its next change") from None
            raise
        finally:
            os.close(fd)
