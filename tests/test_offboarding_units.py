"""The pure parts of offboarding, row by row: the device-action table, notice, the gate."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from agent.decisions import Decision, Decisions
from agent.graph.lifecycle import ManagedDevice
from agent.ledger import Ledger
from jobs.offboarding import devices, notice
from jobs.offboarding.devices import fit

TODAY = date(2026, 3, 18)


def device(os: str = "Windows", owner: str = "company", agent: str = "mdm",
           model: str | None = None) -> ManagedDevice:
    return ManagedDevice("d", "DEV", "u", owner, "managed", os, (), management_agent=agent,
                         model=model)


@pytest.mark.parametrize(("dev", "kind"), [
    # one case per row of devices.TABLE, in its order
    (device(model="Cloud PC Enterprise 2vCPU/8GB/128GB"), "none"),
    (device(agent="eas"), "manual"),
    (device(agent="configurationManagerClient"), "manual"),
    (device(agent="msSense"), "manual"),
    (device(agent="jamf", os="macOS"), "manual"),
    (device(os="Linux"), "manual"),
    (device(os="Windows"), "wipe"),
    (device(os="macOS"), "wipe"),
    (device(os="iOS"), "wipe"),
    (device(os="iPadOS"), "wipe"),
    (device(os="Android"), "wipe"),
    (device(os="Android", owner="personal"), "retire"),
    (device(os="iOS", owner="unknown"), "retire"),
    (device(os="Windows", agent="configurationManagerClientMdm"), "wipe"),  # co-managed
    (device(os="Tizen"), "manual"),
    (device(os=""), "manual"),
])
def test_device_table(dev: ManagedDevice, kind: str) -> None:
    assert fit(dev).kind == kind


def test_every_table_row_is_reachable() -> None:
    names = [name for name, _, _ in devices.TABLE]
    assert names == ["cloud-pc", "not-mdm", "linux", "company", "personal", "unknown-owner",
                     "unknown-os"]


def test_parse_device_without_agent_is_not_mdm() -> None:
    from agent.graph.lifecycle import parse_device

    parsed = parse_device({"id": "d", "operatingSystem": "Windows",
                           "managedDeviceOwnerType": "company"})
    assert fit(parsed).kind == "manual"


def _record(tmp_path: Path, announced: datetime | None) -> object:
    ledger = Ledger.open(tmp_path / "l.jsonl")
    ledger.record("inactive", "u", at=datetime(2025, 12, 1, tzinfo=UTC), run_id="r0")
    if announced is not None:
        ledger.record("announced", "u", at=announced, run_id="r1")
    return ledger.get("u")


def _check(tmp_path: Path, announced: datetime | None, *, ends: date = date(2026, 3, 1),
           notice_days: int = 7, decisions: Decisions | None = None, approval: bool = False,
           run_id: str = "now") -> notice.PurgeCheck | None:
    return notice.check("u", _record(tmp_path, announced), ends, today=TODAY,  # type: ignore[arg-type]
                        run_id=run_id, decisions=decisions or Decisions(),
                        notice_days=notice_days, requires_approval=approval)


def test_notice_first_sight_is_announced(tmp_path: Path) -> None:
    check = _check(tmp_path, None)
    assert check is not None and check.status == "announce" and check.announce
    assert check.purge_date == date(2026, 3, 25)


@pytest.mark.parametrize(("days_ago", "status"), [(6, "notice"), (7, "make"), (30, "make")])
def test_notice_days(tmp_path: Path, days_ago: int, status: str) -> None:
    at = datetime(2026, 3, 18 - days_ago, 8, tzinfo=UTC) if days_ago < 18 else \
        datetime(2026, 2, 16, 8, tzinfo=UTC)
    check = _check(tmp_path, at)
    assert check is not None and check.status == status


def test_notice_zero_needs_an_earlier_run(tmp_path: Path) -> None:
    at = datetime(2026, 3, 18, 6, tzinfo=UTC)
    assert _check(tmp_path, at, notice_days=0, run_id="r1").status == "notice"  # type: ignore[union-attr]
    assert _check(tmp_path / "b", at, notice_days=0).status == "make"  # type: ignore[union-attr]


def test_beyond_the_window_is_not_listed(tmp_path: Path) -> None:
    assert _check(tmp_path, None, ends=date(2026, 4, 2)) is None
    upcoming = _check(tmp_path / "b", None, ends=date(2026, 3, 30))
    assert upcoming is not None and upcoming.status == "upcoming" and upcoming.announce


def test_veto_until_and_approval(tmp_path: Path) -> None:
    at = datetime(2026, 3, 1, tzinfo=UTC)
    veto = Decision("2026-03-02T00:00:00Z", "veto", "u", None, "sm", "hold", until="2026-03-19")
    assert _check(tmp_path, at, decisions=Decisions([veto])).status == "vetoed"  # type: ignore[union-attr]
    ended = Decision("2026-03-02T00:00:00Z", "veto", "u", None, "sm", "hold", until="2026-03-18")
    assert _check(tmp_path / "b", at, decisions=Decisions([ended])).status == "make"  # type: ignore[union-attr]
    before = Decision("2026-02-28T00:00:00Z", "approve", "u", None, "sm", None)
    after = Decision("2026-03-10T00:00:00Z", "approve", "u", None, "sm", None)
    assert _check(tmp_path / "c", at, decisions=Decisions([before]),  # type: ignore[union-attr]
                  approval=True).status == "approval"
    assert _check(tmp_path / "d", at, decisions=Decisions([before, after]),  # type: ignore[union-attr]
                  approval=True).status == "make"


def test_decisions_file_round_trip_and_torn_tail(tmp_path: Path) -> None:
    from agent import decisions as d

    d.append(tmp_path, Decision("2026-03-02T00:00:00Z", "veto", "u", "a@x", "sm", "why"))
    path = d.path_of(tmp_path)
    path.write_bytes(path.read_bytes() + b'{"ts": "2026')  # a crash mid-append
    assert [x.kind for x in d.load(tmp_path)] == ["veto"]
    d.append(tmp_path, Decision("2026-03-03T00:00:00Z", "lift", "u", "a@x", "sm", "ok"))
    assert [x.kind for x in d.load(tmp_path)] == ["veto", "lift"]
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_bytes(b"garbage\n" + path.read_bytes())
    with pytest.raises(d.DecisionsError, match="line 1"):
        d.load(tmp_path)
