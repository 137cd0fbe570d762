"""offboarding's pure parts, no HTTP: who is due for what, devices, the ledger, the overview."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from agent.graph.lifecycle import DeletedUser, DirectoryUser, ManagedDevice, parse_device
from agent.ledger import Ledger, LedgerError
from jobs.offboarding import (
    Plan,
    Policy,
    Protection,
    add_months,
    deleted_accounts_rows,
    leaver_reason,
    plan,
    plan_device,
)
from jobs.offboarding.gate import decide

NOW = datetime(2026, 3, 18, 9, 0, tzinfo=UTC)
TZ = ZoneInfo("Europe/Amsterdam")
DAY = timedelta(days=1)


def user(name: str, *, left: float | None = 2, enabled: bool = True,
         revoked: datetime | None = None) -> DirectoryUser:
    return DirectoryUser(id=f"id-{name}", upn=f"{name}@contoso.nl", display_name=name.title(),
                         enabled=enabled, leave_date=NOW - left * DAY if left is not None else None,
                         sessions_valid_from=revoked, user_type="Member")


def deleted(name: str, *, left: float | None = 120, enabled: bool | None = False) -> DeletedUser:
    return DeletedUser(id=f"id-{name}", upn=f"{name}@contoso.nl", display_name=name.title(),
                       enabled=enabled, leave_date=NOW - left * DAY if left is not None else None,
                       deleted_at=NOW - DAY)


def make_plan(users: list[DirectoryUser], *, deleted_users: tuple[DeletedUser, ...] = (),
              group: frozenset[str] = frozenset(), ledger: Ledger | None = None,
              protected: tuple[str, ...] = (), now: datetime = NOW, **policy: object) -> Plan:
    return plan(users=users, deleted=list(deleted_users), group_members=group,
                ledger=ledger or Ledger(Path("/nonexistent/ledger.jsonl"), write=False),
                protection=Protection.of(protected), policy=Policy.model_validate(policy),
                now=now, tz=TZ)


def kinds(p: Plan) -> dict[str, str]:
    return {u.user.upn.split("@")[0]: u.kind for u in p.users}


# ---- dates ------------------------------------------------------------------------------

@pytest.mark.parametrize(("start", "months", "expected"), [
    (date(2026, 1, 15), 3, date(2026, 4, 15)),
    (date(2025, 11, 30), 3, date(2026, 2, 28)),   # clamped to the month's end
    (date(2023, 11, 30), 3, date(2024, 2, 29)),   # leap year
    (date(2026, 10, 31), 3, date(2027, 1, 31)),   # over the year end
    (date(2026, 12, 1), 12, date(2027, 12, 1)),
    (date(2026, 3, 31), 1, date(2026, 4, 30)),
])
def test_add_months_is_calendar_months(start: date, months: int, expected: date) -> None:
    assert add_months(start, months) == expected


def test_leaver_reason_leave_date_and_group() -> None:
    assert leaver_reason(user("a", left=1), False, NOW) is not None
    assert leaver_reason(user("a", left=0), False, NOW) is not None  # exactly now: passed
    assert leaver_reason(user("a", left=-1), False, NOW) is None      # tomorrow
    assert leaver_reason(user("a", left=None), False, NOW) is None
    assert leaver_reason(user("a", left=None), True, NOW) == "member of the leave group"
    # a group member whose leave date is ahead waits for it
    assert leaver_reason(user("a", left=-5), True, NOW) is None


# ---- who is due for what -------------------------------------------------------------------

def test_enabled_leavers_are_set_inactive_future_ones_wait() -> None:
    p = make_plan([user("gone"), user("later", left=-3), user("staff", left=None)])
    assert kinds(p) == {"gone": "set-inactive"}
    assert p.upcoming == 1 and p.to_disable == 1


def test_protected_users_and_emergency_accounts_by_upn_or_id_any_case() -> None:
    users = [user("a"), user("b"), user("c", enabled=False, left=200)]
    p = make_plan(users, protected=("A@CONTOSO.NL", "id-b", "c@contoso.nl"))
    assert kinds(p) == {"a": "protected", "b": "protected", "c": "protected"}
    assert p.to_disable == 0


def test_disable_limit_blocks_only_when_exceeded() -> None:
    users = [user(f"u{i}") for i in range(3)]
    assert not decide(make_plan(users), Policy(max_disable_per_run=3),
                      device_steps={}, purges={}).stopped
    for limit in (2, 0):
        gate = decide(make_plan(users), Policy(max_disable_per_run=limit), device_steps={},
                      purges={})
        assert gate.stopped == ("max_disable_per_run",) and not gate.disable


def test_inactive_date_from_ledger_else_leave_date_else_now(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.jsonl")
    ledger.record("inactive", "id-known", at=NOW - 10 * DAY, run_id="r", since=NOW - 10 * DAY,
                  source="disabled")
    p = make_plan([user("known", enabled=False, left=200),
                   user("fallback", enabled=False, left=100),
                   user("member", enabled=False, left=None)],
                  group=frozenset({"id-member"}), ledger=ledger)
    by = {u.user.upn.split("@")[0]: u for u in p.users}
    # the ledger wins over a leave date 200 days ago: not due
    assert by["known"].inactive_since == NOW - 10 * DAY and not by["known"].purge_due
    assert by["known"].record_inactive is None
    assert by["fallback"].record_inactive == "leave-date" and by["fallback"].purge_due
    assert by["member"].record_inactive == "observed"
    assert by["member"].inactive_since == NOW and not by["member"].purge_due


def test_purge_due_on_the_purge_date_in_local_time() -> None:
    # inactive 30 Nov 2025 23:30 UTC = 1 Dec 00:30 in Amsterdam: purge date 1 March
    left = datetime(2025, 11, 30, 23, 30, tzinfo=UTC)
    u = DirectoryUser("id-x", "x@contoso.nl", "X", False, left, left + DAY, "Member")
    before = make_plan([u], now=datetime(2026, 2, 28, 22, 0, tzinfo=UTC))  # 23:00 local
    at = make_plan([u], now=datetime(2026, 2, 28, 23, 30, tzinfo=UTC))     # 00:30 1 March
    assert before.users[0].purge_date == date(2026, 3, 1) and not before.users[0].purge_due
    assert at.users[0].purge_due


def test_revoke_pending_unless_ledger_or_graph_says_done(tmp_path: Path) -> None:
    p = make_plan([user("never", enabled=False), user("after", enabled=False, revoked=NOW - DAY),
                   user("before", enabled=False, left=5, revoked=NOW - 30 * DAY)])
    assert {u.user.upn.split("@")[0]: u.revoke for u in p.users} == {
        "never": True, "after": False, "before": True}


def test_reenabled_from_ledger_or_from_sessions_revoked_after_leaving(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.jsonl")
    ledger.record("inactive", "id-ours", at=NOW - 9 * DAY, run_id="r", since=NOW - 9 * DAY,
                  source="disabled")
    p = make_plan([user("ours", left=10), user("graph", left=10, revoked=NOW - 9 * DAY),
                   user("fresh", left=10, revoked=NOW - 20 * DAY)], ledger=ledger)
    assert kinds(p) == {"ours": "reenabled", "graph": "reenabled", "fresh": "set-inactive"}
    assert p.newly_enabled == ("id-ours",)
    assert p.to_disable == 1


def test_disabled_again_after_reenable_starts_a_new_period(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.jsonl")
    ledger.record("inactive", "id-x", at=NOW - 200 * DAY, run_id="r", since=NOW - 200 * DAY,
                  source="disabled")
    ledger.record("reenabled", "id-x", at=NOW - 100 * DAY, run_id="r")
    p = make_plan([user("x", enabled=False, left=201)], ledger=ledger)
    assert p.users[0].record_inactive == "observed" and p.users[0].inactive_since == NOW
    assert not p.users[0].purge_due


def test_ledger_user_no_longer_a_leaver_is_stale_not_purged(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.jsonl")
    ledger.record("inactive", "id-x", at=NOW - 200 * DAY, run_id="r", since=NOW - 200 * DAY,
                  source="disabled")
    p = make_plan([user("x", enabled=False, left=None)], ledger=ledger)
    assert p.users == () and [u.upn for u, _ in p.stale] == ["x@contoso.nl"]


def test_deleted_items_ours_or_due_disabled_leavers_only(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.jsonl")
    ledger.record("purge-started", "id-ours", at=NOW - DAY, run_id="r")
    ledger.record("deleted", "id-ours", at=NOW - DAY, run_id="r")
    p = make_plan([], deleted_users=(
        deleted("ours", left=None, enabled=True), deleted("due"), deleted("young", left=30),
        deleted("enabled", enabled=True), deleted("noleave", left=None),
        deleted("prot")), ledger=ledger, protected=("prot@contoso.nl",))
    assert {(d.user.upn.split("@")[0], d.ours, d.protected) for d in p.deleted} == {
        ("ours", True, False), ("due", False, False), ("prot", False, True)}


def test_vanished_half_purge_and_restored_user(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.jsonl")
    for uid in ("id-gone", "id-back"):
        ledger.record("inactive", uid, at=NOW - 100 * DAY, run_id="r", since=NOW - 100 * DAY)
        ledger.record("purge-started", uid, at=NOW - DAY, run_id="r")
        ledger.record("deleted", uid, at=NOW - DAY, run_id="r")
    p = make_plan([user("back", enabled=False, left=101)], ledger=ledger)
    assert [r.user_id for r in p.vanished] == ["id-gone"]
    assert kinds(p) == {"back": "restored"}


# ---- devices ------------------------------------------------------------------------------------

def dev(owner_type: str = "company", state: str = "managed",
        actions: tuple[str, ...] = ()) -> ManagedDevice:
    return ManagedDevice("dev-1", "LT-1", "id-u", owner_type, state, "Windows", actions)


@pytest.mark.parametrize(("device", "action", "observed"), [
    (dev("company"), "wipe", None),
    (dev("personal"), "retire", None),
    (dev("unknown"), "retire", None),              # never wipe what may be personal
    (dev("company", "unhealthy"), "wipe", None),
    (dev("company", "wipePending"), None, "wipe"),
    (dev("company", "wipeIssued"), None, "wipe"),
    (dev("personal", "retirePending"), None, "retire"),
    (dev("company", "managed", ("wipe",)), None, "wipe"),
    (dev("company", "deletePending"), None, None),
    (dev("company", "discovered"), None, None),
    (dev("company", "wipeCanceled"), None, None),
])
def test_plan_device(device: ManagedDevice, action: str | None, observed: str | None) -> None:
    step = plan_device(device, None)
    assert (step.action, step.observed) == (action, observed)


def test_device_in_ledger_is_never_sent_again(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.jsonl")
    ledger.record("device", "id-u", at=NOW, run_id="r", device_id="dev-1", action="wipe")
    assert plan_device(dev(), ledger.get("id-u")).action is None
    failed = plan_device(dev(state="wipeFailed"), ledger.get("id-u"))
    assert failed.action is None and failed.warning and "wipeFailed" in failed.warning


def test_parse_device_reads_pending_actions() -> None:
    device = parse_device({"id": "d", "deviceName": "LT", "userId": "u",
                           "managedDeviceOwnerType": "company", "managementState": "managed",
                           "deviceActionResults": [
                               {"actionName": "wipe", "actionState": "pending"},
                               {"actionName": "retire", "actionState": "failed"}]})
    assert device.actions_in_progress == ("wipe",)


# ---- the ledger ---------------------------------------------------------------------------------

def test_ledger_round_trip_and_private_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ledger.jsonl"
    ledger = Ledger.open(path)
    ledger.record("inactive", "u1", at=NOW, run_id="r1", since=NOW, source="disabled",
                  request_id="q1", upn="a@x")
    ledger.record("revoked", "u1", at=NOW, run_id="r1", request_id="q2")
    again = Ledger.open(path).get("u1")
    assert again is not None and again.inactive and again.revoked_at == NOW
    assert again.inactive_request_id == "q1" and again.upn == "a@x"
    assert path.stat().st_mode & 0o777 == 0o600


def test_ledger_cut_last_line_is_discarded_and_cut_off_before_next_append(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger.open(path)
    ledger.record("inactive", "u1", at=NOW, run_id="r", since=NOW)
    path.write_bytes(path.read_bytes() + b'{"event":"revoked","user_id":"u1","at":"20')
    reopened = Ledger.open(path)
    assert reopened.discarded_tail and reopened.get("u1").revoked_at is None  # type: ignore[union-attr]
    reopened.record("revoked", "u1", at=NOW, run_id="r2")
    lines = path.read_bytes().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)
    assert Ledger.open(path).get("u1").revoked_at == NOW  # type: ignore[union-attr]


def test_ledger_damaged_line_in_the_middle_stops_the_job(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(b'{"event":"inactive","user_id":"u1","at":"2026-01-01T00:00:00Z"}\n'
                     b'garbage\n'
                     b'{"event":"revoked","user_id":"u1","at":"2026-01-01T00:00:00Z"}\n')
    with pytest.raises(LedgerError, match="line 2"):
        Ledger.open(path)


def test_dry_run_ledger_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger.open(path, write=False)
    ledger.record("inactive", "u1", at=NOW, run_id="r")
    assert not path.exists() and ledger.get("u1") is not None


def test_ledger_purge_failed_clears_the_intent(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.jsonl")
    ledger.record("purge-started", "u1", at=NOW, run_id="r")
    assert ledger.get("u1").purge_pending  # type: ignore[union-attr]
    ledger.record("purge-failed", "u1", at=NOW, run_id="r", error="403")
    assert not ledger.get("u1").purge_pending  # type: ignore[union-attr]


def test_overview_rows_by_local_month(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.jsonl")
    # 31 March 23:30 UTC is already 1 April in Amsterdam
    ledger.record("purged", "u1", at=datetime(2026, 3, 31, 23, 30, tzinfo=UTC), run_id="r1",
                  request_id="q1", upn="a@contoso.nl")
    ledger.record("purged", "u2", at=datetime(2026, 3, 15, 8, 0, tzinfo=UTC), run_id="r2",
                  request_id="q2", upn="b@contoso.nl")
    ledger.record("inactive", "u3", at=NOW, run_id="r3")
    march = deleted_accounts_rows(ledger.records(), date(2026, 3, 1), TZ)
    april = deleted_accounts_rows(ledger.records(), date(2026, 4, 1), TZ)
    assert [r["user_principal_name"] for r in march] == ["b@contoso.nl"]
    assert [(r["user_id"], r["purge_run_id"], r["purge_request_id"]) for r in april] == [
        ("u1", "r1", "q1")]


# ---- policy ---------------------------------------------------------------------------------

def test_policy_is_strict() -> None:
    assert Policy().mode == "report" and Policy().retention_months == 3
    with pytest.raises(ValidationError):
        Policy(leave_group_id="offboarding-group")
    with pytest.raises(ValidationError):
        Policy(protected_users=[" "])
    with pytest.raises(ValidationError):
        Policy(retention_months=0)
    with pytest.raises(ValidationError):
        Policy(max_disable=3)  # type: ignore[call-arg]
    assert Policy(leave_group_id="ce9fed53-64ae-5acf-a1c0-85bd29e21492").leave_group_id
