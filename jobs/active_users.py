"""Job `active-users`: the monthly count of active users (E5 or Exchange-only) and its export.

DAP 3.4.1: every month, at the latest on its last working day, the provider delivers an
overview of the active users; the customer approves it and the provider invoices that
number. So the count must be right, explainable line by line, and reproducible.

Flow of a run:
1. One `/subscribedSkus` call and one paged pass over `/users` (licence properties only).
2. `categorise` (pure) gives each licensed user a row: category, counted, and why.
3. The month's snapshot (rows, policy, time, tenant) is stored in
   `<state>/snapshots/active-users/YYYY-MM.json` and the export rendered from it to
   `<state>/exports/active-users-YYYY-MM.csv`. Until the month is delivered each run
   replaces this draft. The month is delivered by `run --final` or by the scheduled run
   (trigger "schedule") on its last working day; from then on snapshot and export are
   immutable and later runs that month only report the live count next to them.
   The delivery is audited once (`month-delivered`: month, count, export and snapshot
   checksums); a run killed between snapshot and audit entry is made good by the next run.
4. On delivery, optionally (`deliver_to`, `sender`), the export and the totals are mailed
   through Graph `sendMail`, recorded as action `send-mail` (audited, planned in a dry run),
   at least once: a send whose outcome is unknown is repeated, marked as a possible repeat.

A dry run counts and reports (with the checksum the export would have) but writes no file
and sends nothing. `export_month` re-renders a month's export from its snapshot, byte for
byte (`dap-agent export active-users --month YYYY-MM`).
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo

import structlog
from pydantic import Field, field_validator, model_validator

from agent.errors import DapError, GraphError, UsageError
from agent.exports import Sheet, check_delivered, render_csv, render_xlsx, sha256_hex
from agent.files import remove_stale_temporaries, write_atomic
from agent.graph import licensing
from agent.graph.licensing import LicensedUser, SubscribedSku
from agent.graph.mail import UPLOAD_MAX, Attachment, send_mail
from agent.job import Accounts, JobContext, JobPolicy, JobSpec
from agent.run import Subject, iso_z
from agent.workdays import LiberationDay, WorkdayCalendar, local_date

# Full E5 seats, from Microsoft's licensing reference (graph-reference/licensing-service-
# plan-reference.csv, GUID column, each checked there). Not included: the E5 Security /
# Compliance add-ons, EMS E5, Windows E5, "Microsoft 365 E5 Suite features", the E5
# Developer plan, US government clouds, and the A5 education plans.
DEFAULT_E5_SKU_IDS = [
    "06ebc4ee-1bb5-47dd-8120-11324bc54e06",  # SPE_E5: Microsoft 365 E5
    "cd2925a3-5076-4233-8931-638a8c94f773",  # SPE_E5_NOPSTNCONF: M365 E5 without Audio Conf.
    "a91fc4e0-65e5-4266-aa76-4037509c1626",  # SPE_E5_CALLINGMINUTES: M365 E5 with Calling Min.
    "db684ac5-c0e7-4f92-8284-ef9ebde75d33",  # Microsoft_365_E5: M365 E5 (500 seats min)_HUB
    "2113661c-6509-4034-98bb-9c47bd28d63c",  # M365 E5 without Audio Conf. (500 seats min)_HUB
    "3271cf8e-2be5-4a09-a549-70fd05baaa17",  # O365_w/o_Teams_Bundle_M5: M365 E5 EEA (no Teams)
    "1e988bf3-8b7c-4731-bec0-4e2a2946600c",  # M365 E5 EEA (no Teams) (500 seats min)_HUB
    "6ee4114a-9b2d-4577-9e7a-49fa43d222d3",  # M365 E5 EEA (no Teams) with Calling Minutes
    "90277bc7-a6fe-4181-99d8-712b08b8d32b",  # M365 E5 EEA (no Teams) without Audio Conf.
    "a640eead-25f6-4bec-97e3-23cfd382d7c2",  # ... without Audio Conf. (500 seats min)_HUB
    "c7df2760-2c81-4ef7-b578-5b5392b571df",  # ENTERPRISEPREMIUM: Office 365 E5
    "26d45bd9-adf1-46cd-a9e1-51e9a5524128",  # ENTERPRISEPREMIUM_NOPSTNCONF: O365 E5 w/o Audio
    "cf50bae9-29e8-4775-b07c-56ee10e3776d",  # Office_365_w/o_Teams_Bundle_E5: O365 E5 EEA (no T.)
    "71772aeb-4bb8-4f74-9dd4-36c7a9b5ca74",  # O365 E5 EEA (no Teams) without Audio Conf.
]
DEFAULT_EXCHANGE_ONLY_SKU_IDS = [
    "4b9405b0-7788-4568-add1-99614e613b69",  # EXCHANGESTANDARD: Exchange Online (Plan 1)
    "19ec0d23-8335-4cbd-94ac-6050e30712fa",  # EXCHANGEENTERPRISE: Exchange Online (Plan 2)
    "80b2d799-d2ba-4d2a-8842-fb0d0f3a4b82",  # EXCHANGEDESKLESS: Exchange Online Kiosk
]
ASSIGNMENT_STATES = ("Active", "ActiveWithError", "Disabled", "Error")

Category = Literal["e5", "exchange-only", "other"]
CATEGORIES: tuple[Category, ...] = ("e5", "exchange-only", "other")

SNAPSHOT_FORMAT = 1
COLUMNS = (
    "user_id",
    "user_principal_name",
    "display_name",
    "user_type",
    "category",
    "account_enabled",
    "counted",
    "sku_part_numbers",  # every licence the user holds (assignment state held)
    "sku_ids",
    "category_skus",  # the held SKU(s) that made the category
    "category_sources",  # how each came: direct and/or via group <id>
    "not_held",  # assignments that are not a held licence (state, error, source)
    "reason",  # counted or not, and why
)
log = structlog.get_logger("jobs.active_users")
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _guid(value: str) -> str:
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise ValueError(f"{value!r} is not an SKU id (a GUID such as "
                         "06ebc4ee-1bb5-47dd-8120-11324bc54e06)") from None


class Policy(JobPolicy):
    """`[active_users]`: what counts as an active user, and how the month is delivered."""

    schedule: str = Field(
        "last-working-day 07:00",
        description="when the daemon runs the count; the run on the month's last working "
                    "day delivers the month ('last-working-day HH:MM' or a cron expression)")
    e5_sku_ids: list[str] = Field(
        default_factory=lambda: list(DEFAULT_E5_SKU_IDS),
        description="SKU ids that make a user 'e5' (default: the full E5 seats)")
    exchange_only_sku_ids: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXCHANGE_ONLY_SKU_IDS),
        description="SKU ids that make a user without E5 'exchange-only' "
                    "(default: Exchange Online Plan 1, Plan 2, Kiosk)")
    count_disabled: bool = Field(
        False, description="count disabled accounts too (default: listed as licensed, "
                           "disabled, but not counted)")
    exclude_users: Accounts = Field(
        default_factory=list, description="UPNs or object ids never counted (listed with "
                                          "the reason)")
    count_guests: bool = Field(
        True, description="count guests (userType Guest) that hold an E5 or Exchange seat")
    held_states: list[str] = Field(
        default_factory=lambda: ["Active"],
        description="licenseAssignmentStates states that count as holding the licence; "
                    "others (Error: e.g. CountViolation, the tenant ran out of seats) are "
                    "listed as not held")
    deliver_to: list[str] = Field(
        default_factory=list,
        description="mail addresses that receive the delivered export and totals "
                    "(empty: no mail). Needs `sender` and the Mail.Send permission")
    sender: str = Field(
        "", description="UPN or id of the mailbox the overview is sent from")
    good_friday_is_holiday: bool = Field(
        True, description="Good Friday is not a working day (it is in the holidays "
                          "package's NL public holidays and the Algemene termijnenwet)")
    liberation_day: LiberationDay = Field(
        "every-5-years",
        description="when 5 May is not a working day: 'every-5-years' (2025, 2030, ...: the "
                    "holidays package's NL public calendar and most collective agreements), "
                    "'every-year' (the Algemene termijnenwet) or 'never'")

    @field_validator("e5_sku_ids", "exchange_only_sku_ids")
    @classmethod
    def _sku_ids(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(_guid(v) for v in value))

    @field_validator("held_states")
    @classmethod
    def _states(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in ASSIGNMENT_STATES]
        if unknown:
            raise ValueError(f"unknown state(s) {', '.join(unknown)}; states are "
                             f"{', '.join(ASSIGNMENT_STATES)}")
        if "Active" not in value:
            raise ValueError("must include 'Active'")
        return list(dict.fromkeys(value))

    @field_validator("deliver_to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not _ADDRESS.match(v)]
        if bad:
            raise ValueError(f"not a mail address: {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        both = sorted(set(self.e5_sku_ids) & set(self.exchange_only_sku_ids))
        if both:
            raise ValueError(f"SKU id(s) in both e5_sku_ids and exchange_only_sku_ids: "
                             f"{', '.join(both)}")
        if self.deliver_to and not self.sender.strip():
            raise ValueError("deliver_to is set but sender is empty: set sender to the "
                             "UPN of the mailbox the overview is sent from")
        return self

    @property
    def calendar(self) -> WorkdayCalendar:
        return WorkdayCalendar(good_friday=self.good_friday_is_holiday,
                               liberation_day=self.liberation_day)

    def extra_permissions(self) -> tuple[str, ...]:
        return ("Mail.Send",) if self.deliver_to else ()


# ---- categorisation (pure: no HTTP, no files) ---------------------------------------------

@dataclass(frozen=True)
class Rules:
    """The policy and the tenant's SKU names, in the shape `categorise` needs."""

    e5: frozenset[str]
    exchange_only: frozenset[str]
    held_states: frozenset[str]
    count_disabled: bool
    count_guests: bool
    exclude: frozenset[str]  # lower-cased UPNs and ids
    part_numbers: dict[str, str]  # sku id -> part number (from /subscribedSkus)

    @classmethod
    def from_policy(cls, policy: Policy, skus: Iterable[SubscribedSku] = ()) -> Rules:
        return cls(e5=frozenset(policy.e5_sku_ids),
                   exchange_only=frozenset(policy.exchange_only_sku_ids),
                   held_states=frozenset(policy.held_states),
                   count_disabled=policy.count_disabled, count_guests=policy.count_guests,
                   exclude=frozenset(v.lower() for v in policy.exclude_users),
                   part_numbers={s.sku_id: s.part_number for s in skus})

    def name(self, sku_id: str) -> str:
        return self.part_numbers.get(sku_id, sku_id)

    def category_of(self, sku_id: str) -> Category:
        if sku_id in self.e5:
            return "e5"
        return "exchange-only" if sku_id in self.exchange_only else "other"


@dataclass(frozen=True, slots=True)
class Row:
    """One licensed user in the overview, with everything that explains its line."""

    user_id: str
    user_principal_name: str
    display_name: str
    user_type: str
    account_enabled: bool | None
    category: Category
    counted: bool
    held: tuple[str, ...]  # SKU ids held, ordered by part number
    category_skus: tuple[str, ...]  # the held SKU ids that made the category
    sources: tuple[tuple[str, tuple[str, ...]], ...]  # per held SKU: ("direct", "group <id>")
    not_held: tuple[licensing.LicenseAssignment, ...]
    excluded: bool
    reason: str

    def cells(self, rules: Rules) -> list[str]:
        source = dict(self.sources)
        return [
            self.user_id,
            self.user_principal_name,
            self.display_name,
            self.user_type,
            self.category,
            _flag(self.account_enabled),
            _flag(self.counted),
            ";".join(rules.name(s) for s in self.held),
            ";".join(self.held),
            ";".join(rules.name(s) for s in self.category_skus),
            "; ".join(f"{rules.name(s)}: {' + '.join(source[s])}" for s in self.category_skus),
            "; ".join(_not_held(a, rules) for a in self.not_held),
            self.reason,
        ]


def _flag(value: bool | None) -> str:
    return "unknown" if value is None else "true" if value else "false"


def _source(assignment: licensing.LicenseAssignment) -> str:
    group = assignment.assigned_by_group
    return f"group {group}" if group else "direct"


def _not_held(a: licensing.LicenseAssignment, rules: Rules) -> str:
    error = f" ({a.error})" if a.error else ""
    return f"{rules.name(a.sku_id)}: {a.state}{error} {_source(a)}"


def categorise(user: LicensedUser, rules: Rules) -> Row | None:
    """The user's line in the overview, or None for a user without any licence.

    Held licences: each `licenseAssignmentStates` entry whose state is in `held_states`
    (direct and group-inherited alike; a SKU reached several ways is held once); an SKU in
    `assignedLicenses` without any state entry is held too (Graph gave no state to doubt it).
    Category: `e5` if a held SKU is an E5 SKU, else `exchange-only` if one is an Exchange
    SKU, else `other`. Counted: e5/exchange-only, enabled (unless count_disabled), a member
    (unless count_guests), and not in exclude_users.
    """
    if not user.has_licence_data:
        return None
    sources: dict[str, list[str]] = {}
    not_held: list[licensing.LicenseAssignment] = []
    stated: set[str] = set()
    for a in user.assignments:
        stated.add(a.sku_id)
        if a.state in rules.held_states:
            found = sources.setdefault(a.sku_id, [])
            label = _source(a)
            if label not in found:
                found.append(label)
        else:
            not_held.append(a)
    for sku in user.assigned_sku_ids:
        if sku not in stated:
            sources.setdefault(sku, ["assignedLicenses (no assignment state)"])
    held = (tuple(sources) if len(sources) < 2
            else tuple(sorted(sources, key=lambda s: (rules.name(s), s))))
    e5 = tuple(s for s in held if s in rules.e5)
    exo = tuple(s for s in held if s in rules.exchange_only)
    category: Category = "e5" if e5 else "exchange-only" if exo else "other"
    category_skus = e5 or exo
    excluded = (user.id.lower() in rules.exclude
                or user.user_principal_name.lower() in rules.exclude)
    counted, reason = _verdict(user, rules, category, excluded, not_held)
    return Row(
        user_id=user.id, user_principal_name=user.user_principal_name,
        display_name=user.display_name, user_type=user.user_type,
        account_enabled=user.account_enabled, category=category, counted=counted,
        held=held, category_skus=category_skus,
        sources=tuple((s, _ordered_sources(sources[s])) for s in held),
        not_held=(tuple(not_held) if len(not_held) < 2 else
                  tuple(sorted(not_held, key=lambda a: (a.sku_id, a.assigned_by_group or "")))),
        excluded=excluded, reason=reason)


def _ordered_sources(labels: list[str]) -> tuple[str, ...]:
    """'direct' first, then the groups by id: the same cell whatever Graph's order."""
    if len(labels) < 2:
        return tuple(labels)
    return tuple(sorted(labels, key=lambda x: (x != "direct", x)))


def _verdict(user: LicensedUser, rules: Rules, category: Category, excluded: bool,
             not_held: Sequence[licensing.LicenseAssignment]) -> tuple[bool, str]:
    if category == "other":
        why = "not counted: holds no E5 or Exchange Online licence"
        failed = sorted({rules.name(a.sku_id) for a in not_held
                         if rules.category_of(a.sku_id) != "other"})
        if failed:
            why += f" ({', '.join(failed)} assigned but not held: see not_held)"
        return False, why
    label = "E5" if category == "e5" else "Exchange Online (no E5)"
    if excluded:
        return False, f"not counted: in exclude_users ({label})"
    if user.account_enabled is False and not rules.count_disabled:
        return False, f"not counted: licensed, disabled ({label})"
    if user.user_type == "Guest" and not rules.count_guests:
        return False, f"not counted: guest ({label}; count_guests = false)"
    why = f"counted: {label}"
    if user.account_enabled is None:
        why += "; account state not reported by Graph, taken as enabled"
    elif user.account_enabled is False:
        why += "; account disabled (count_disabled = true)"
    return True, why


@dataclass(frozen=True)
class Totals:
    active: int
    e5: int
    exchange_only: int
    licensed_disabled: int
    excluded: int
    other: int
    licensed_users: int
    not_held_users: int

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.__dict__.items()}


def totals(rows: Sequence[Row]) -> Totals:
    counted = Counter(r.category for r in rows if r.counted)
    return Totals(
        active=sum(counted.values()),
        e5=counted["e5"],
        exchange_only=counted["exchange-only"],
        licensed_disabled=sum(1 for r in rows
                              if r.category != "other" and r.account_enabled is False),
        excluded=sum(1 for r in rows if r.category != "other" and r.excluded),
        other=sum(1 for r in rows if r.category == "other"),
        licensed_users=len(rows),
        not_held_users=sum(1 for r in rows if r.not_held),
    )


def per_sku(rows: Sequence[Row], rules: Rules,
            skus: Sequence[SubscribedSku]) -> dict[str, dict[str, Any]]:
    """Per SKU part number: its category, holders, counted holders, not-held assignments."""
    holders: Counter[str] = Counter()
    counted: Counter[str] = Counter()
    failing: Counter[str] = Counter()
    for row in rows:
        for sku in row.held:
            holders[sku] += 1
            if row.counted:
                counted[sku] += 1
        for sku in {a.sku_id for a in row.not_held}:
            failing[sku] += 1
    known = {s.sku_id: s for s in skus}
    result: dict[str, dict[str, Any]] = {}
    for sku in sorted(set(holders) | set(failing) | set(known), key=lambda s: (rules.name(s), s)):
        sub = known.get(sku)
        result[rules.name(sku)] = {
            "sku_id": sku,
            "category": rules.category_of(sku),
            "holders": holders[sku],
            "counted": counted[sku],
            "not_held": failing[sku],
            "prepaid_units": sub.enabled_units if sub else None,
            "consumed_units": sub.consumed_units if sub else None,
        }
    return result


def sort_rows(rows: list[Row]) -> None:
    rows.sort(key=lambda r: (r.user_principal_name.casefold(), r.user_id))


# ---- months, snapshots and exports ---------------------------------------------------------

def month_of(moment: datetime, tz: ZoneInfo) -> str:
    day = local_date(moment, tz)
    return f"{day.year:04d}-{day.month:02d}"


def parse_month(month: str) -> tuple[int, int]:
    match = _MONTH.match(month)
    if not match:
        raise UsageError(f"--month: {month!r} is not a month; use YYYY-MM, e.g. 2026-05")
    return int(match[1]), int(match[2])


def previous_month(month: str) -> str:
    year, mon = parse_month(month)
    return f"{year - 1:04d}-12" if mon == 1 else f"{year:04d}-{mon - 1:02d}"


def snapshot_path(state_dir: Path, month: str) -> Path:
    return state_dir / "snapshots" / "active-users" / f"{month}.json"


def export_name(month: str, fmt: str = "csv") -> str:
    return f"active-users-{month}.{fmt}"


def load_snapshot(state_dir: Path, month: str) -> dict[str, Any] | None:
    path = snapshot_path(state_dir, month)
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DapError(f"{path}: cannot read the active-users snapshot: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != SNAPSHOT_FORMAT:
        raise DapError(f"{path}: not an active-users snapshot (format {SNAPSHOT_FORMAT})")
    return data


def render_export(snapshot: dict[str, Any], fmt: str = "csv") -> bytes:
    """The month's export from its snapshot: the only way an export is ever rendered."""
    columns, rows = snapshot["columns"], snapshot["rows"]
    if fmt == "csv":
        return render_csv(columns, rows)
    if fmt == "xlsx":
        return render_xlsx(_sheets(snapshot), title=f"Active users {snapshot['month']}",
                           timestamp=datetime.fromisoformat(
                               snapshot["taken_at"].replace("Z", "+00:00")))
    raise UsageError(f"--format: {fmt!r} is not an export format; use csv or xlsx")


def _sheets(snapshot: dict[str, Any]) -> list[Sheet]:
    t = snapshot["totals"]
    counts: list[list[Any]] = [
        ["active (counted)", "", "", t["active"]],
        ["e5", "", "e5", t["e5"]],
        ["exchange-only", "", "exchange-only", t["exchange_only"]],
        ["licensed, disabled (not counted)", "", "", t["licensed_disabled"]],
        ["excluded (not counted)", "", "", t["excluded"]],
        ["other licences only (not counted)", "", "other", t["other"]],
        ["licensed users (rows)", "", "", t["licensed_users"]],
    ]
    skus: list[list[Any]] = [
        [part, info["sku_id"], info["category"], info["holders"], info["counted"],
         info["not_held"]]
        for part, info in snapshot["per_sku"].items()
    ]
    about: list[list[Any]] = [
        ["month", snapshot["month"]],
        ["tenant_id", snapshot["tenant_id"]],
        ["taken_at", snapshot["taken_at"]],
        ["run_id", snapshot["run_id"]],
        ["delivered", "true" if snapshot["delivered"] else "false (draft)"],
        ["csv export", snapshot["export"]["file"]],
        ["csv sha256", snapshot["export"]["sha256"]],
        ["policy", json.dumps(snapshot["policy"], sort_keys=True)],
    ]
    return [
        Sheet("users", snapshot["columns"], snapshot["rows"],
              widths={0: 38, 1: 36, 2: 28, 4: 14, 7: 30, 9: 20, 10: 50, 11: 50, 12: 50}),
        Sheet("summary", ["total", "", "category", "users"], counts, widths={0: 36}),
        Sheet("per SKU", ["sku_part_number", "sku_id", "category", "holders", "counted",
                          "not_held"], skus, widths={0: 36, 1: 38, 2: 14}),
        Sheet("about", ["key", "value"], about, widths={0: 14, 1: 80}),
    ]


def export_month(state_dir: Path, month: str, fmt: str = "csv",
                 output: Path | None = None) -> Path:
    """Re-render a month's export from its stored snapshot; return the file written.

    `output` defaults to `<state>/exports/active-users-YYYY-MM.<fmt>` (a directory
    means that name inside it). The CSV must come out with the checksum recorded when the
    month's export was written; otherwise the snapshot was altered and nothing is written.
    A delivered month's own export file is never overwritten: if it is intact this is a
    no-op, if it differs (changed after delivery) this refuses; write the reproduction
    elsewhere with `--output`.
    """
    parse_month(month)
    if fmt not in ("csv", "xlsx"):
        raise UsageError(f"--format: {fmt!r} is not an export format; use csv or xlsx")
    snapshot = load_snapshot(state_dir, month)
    if snapshot is None:
        raise UsageError(f"no active-users snapshot for {month} in {state_dir}: the month "
                         "was never counted (run `dap-agent run active-users` in that month)")
    data = render_export(snapshot, fmt)
    csv_sha256 = sha256_hex(data if fmt == "csv" else render_export(snapshot, "csv"))
    if csv_sha256 != snapshot["export"]["sha256"]:
        raise DapError(f"{snapshot_path(state_dir, month)}: re-rendered export does not "
                       f"match the recorded sha256 {snapshot['export']['sha256']}: the "
                       "snapshot was altered; nothing written")
    if snapshot["delivered"]:
        check_delivered(state_dir, month, csv_sha256)
    canonical = state_dir / "exports" / export_name(month, fmt)
    target = canonical if output is None else Path(output)
    if target.is_dir():
        target = target / export_name(month, fmt)
    _refuse_state_files(state_dir, target, canonical)
    delivered_file = snapshot["delivered"] and fmt == "csv" and _same_file(target, canonical)
    if delivered_file and target.exists():
        current = target.read_bytes()
        if current == data:
            return target
        raise UsageError(
            f"{target} is the delivered export of {month} and differs from its snapshot "
            f"(sha256 {sha256_hex(current)}, delivered {snapshot['export']['sha256']}): "
            "it was changed after delivery; refusing to overwrite it. Write the "
            "reproduction elsewhere with --output PATH")
    write_atomic(target, data)
    return target


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _refuse_state_files(state_dir: Path, target: Path, canonical: Path) -> None:
    """`--output` may write anywhere but over the agent's own records: inside the state
    directory only the month's own export in that format (snapshots, the delivered CSV
    under another format, the audit log, ... are what make the month reproducible)."""
    state = state_dir.resolve()
    resolved = target.resolve()
    if resolved != canonical.resolve() and (resolved == state or state in resolved.parents):
        raise UsageError(f"--output {target}: inside the state directory {state_dir} only "
                         f"{canonical.name} may be written; choose a path outside it")


def _snapshot(ctx: JobContext, month: str, rows: Sequence[Row], rules: Rules,
              skus: Sequence[SubscribedSku], policy: Policy, delivered: bool,
              counts: Totals, by_sku: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "format": SNAPSHOT_FORMAT,
        "job": "active-users",
        "month": month,
        "tenant_id": ctx.settings.tenant_id,
        "taken_at": iso_z(ctx.now),
        "scheduled_for": iso_z(ctx.scheduled_for) if ctx.scheduled_for else None,
        "run_id": ctx.run.run_id,
        "trigger": ctx.run.report.trigger,
        "delivered": delivered,
        "delivered_at": iso_z(ctx.now) if delivered else None,
        "deadline": deadline_of(month, policy).isoformat(),
        "policy": policy.model_dump(mode="json"),
        "skus": [{"sku_id": s.sku_id, "part_number": s.part_number,
                  "capability_status": s.capability_status,
                  "prepaid_units": s.enabled_units, "consumed_units": s.consumed_units}
                 for s in sorted(skus, key=lambda s: (s.part_number, s.sku_id))],
        "totals": counts.as_dict(),
        "per_sku": by_sku,
        "columns": list(COLUMNS),
        "rows": [row.cells(rules) for row in rows],
        "export": {"file": export_name(month), "sha256": ""},
    }


def _dump(snapshot: dict[str, Any]) -> bytes:
    return (json.dumps(snapshot, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _counted(snapshot: dict[str, Any]) -> dict[str, str]:
    """user id -> UPN of the counted rows of a stored snapshot."""
    cols = snapshot["columns"]
    i_id, i_upn, i_counted = (cols.index("user_id"), cols.index("user_principal_name"),
                              cols.index("counted"))
    return {r[i_id]: r[i_upn] or r[i_id] for r in snapshot["rows"] if r[i_counted] == "true"}


# ---- the job -------------------------------------------------------------------------------

async def run(ctx: JobContext) -> None:
    policy = cast(Policy, ctx.policy)
    if not ctx.dry_run:  # debris of a killed run (the job lock keeps other runs out)
        for directory in (ctx.state_dir / "exports", snapshot_path(ctx.state_dir, "x").parent):
            for name in remove_stale_temporaries(directory):
                log.info("removed a temporary file left by a killed run", file=name)
    skus = await licensing.subscribed_skus(ctx.graph)
    rules = Rules.from_policy(policy, skus)
    rows: list[Row] = []
    users_seen = 0
    matched_exclusions: set[str] = set()
    async for user in licensing.iter_users(ctx.graph):
        users_seen += 1
        for key in (user.id.lower(), user.user_principal_name.lower()):
            if key in rules.exclude:
                matched_exclusions.add(key)
        row = categorise(user, rules)
        if row is not None:
            rows.append(row)
    sort_rows(rows)
    _warn_about_data(ctx, policy, rules, rows, skus, matched_exclusions)

    # The month a run counts for is the month of the time it serves: a scheduled run that
    # is caught up after a month end (daemon down over 30 Nov - 2 Dec) delivers November.
    served = ctx.scheduled_for or ctx.now
    month = month_of(served, ctx.tz)
    year, mon = parse_month(month)
    deadline = policy.calendar.last_working_day(year, mon)
    delivering = ctx.final or (ctx.run.report.trigger == "schedule"
                               and local_date(served, ctx.tz) == deadline)
    counts, by_sku = totals(rows), per_sku(rows, rules, skus)
    summary = ctx.run.report.summary
    summary.update({"month": month, **counts.as_dict(), "users_seen": users_seen,
                    "deadline": deadline.isoformat(), "per_sku": by_sku})
    _change_since_last_month(ctx, month, rows, summary)

    snap_path = snapshot_path(ctx.state_dir, month)
    export_path = ctx.state_dir / "exports" / export_name(month)
    existing = load_snapshot(ctx.state_dir, month)
    if existing is not None and existing["delivered"]:
        _already_delivered(ctx, existing, export_path, summary)
        if not ctx.dry_run and not _marker(ctx.state_dir, month, "audit").exists():
            _recover_delivery_record(ctx, existing, export_path)
        if delivering:
            await _deliver_mail(ctx, policy, existing, export_path)
        return

    snapshot = _snapshot(ctx, month, rows, rules, skus, policy, delivering, counts, by_sku)
    data = render_export(snapshot)
    digest = sha256_hex(data)
    snapshot["export"]["sha256"] = digest
    summary.update({"export_path": str(export_path), "export_sha256": digest,
                    "snapshot_path": str(snap_path), "delivered": False,
                    "written": not ctx.dry_run})
    if ctx.dry_run:
        summary["note"] = ("dry run: nothing written" +
                           (f"; would deliver {month}" if delivering else ""))
        if delivering:
            await _deliver_mail(ctx, policy, snapshot, export_path)
        return
    # The export first, the snapshot last: the snapshot is what makes the month delivered.
    write_atomic(export_path, data)
    snapshot_bytes = _dump(snapshot)
    write_atomic(snap_path, snapshot_bytes)
    summary["delivered"] = delivering
    if delivering:
        summary["note"] = f"{month} delivered: its export is now immutable"
        _record_delivery(ctx, snapshot, sha256_hex(snapshot_bytes), export_path)
        await _deliver_mail(ctx, policy, snapshot, export_path)
    else:
        summary["note"] = (f"draft for {month}: replaced by the next run until the month is "
                           f"delivered (deadline {deadline.isoformat()})")


def _marker(state_dir: Path, month: str, kind: str) -> Path:
    """Small state files next to the month's snapshot: `audit` (its delivery is in the
    audit log), `mail` (the delivery mail's progress)."""
    return snapshot_path(state_dir, month).with_suffix(f".{kind}.json")


def _delivery_entry(ctx: JobContext, snapshot: dict[str, Any], snapshot_sha256: str,
                    export_path: Path) -> dict[str, Any]:
    month = snapshot["month"]
    return {"run_id": ctx.run.run_id, "job": "active-users", "event": "month-delivered",
            "month": month, "active": snapshot["totals"]["active"],
            "delivered_by_run": snapshot["run_id"], "delivered_at": snapshot["delivered_at"],
            "export_path": str(export_path), "export_sha256": snapshot["export"]["sha256"],
            "snapshot_path": str(snapshot_path(ctx.state_dir, month)),
            "snapshot_sha256": snapshot_sha256}


def _record_delivery(ctx: JobContext, snapshot: dict[str, Any], snapshot_sha256: str,
                     export_path: Path) -> None:
    """Audit the delivery once; the marker file says it is done.

    Written after the delivered snapshot (which makes the month delivered): a run killed in
    between leaves no marker, and the next run records it (`_recover_delivery_record`).
    """
    record = ctx.run.audit.append(_delivery_entry(ctx, snapshot, snapshot_sha256, export_path))
    write_atomic(_marker(ctx.state_dir, snapshot["month"], "audit"),
                 _dump({"seq": record.get("seq"), "hash": record.get("hash"),
                        "run_id": ctx.run.run_id}))


def _recover_delivery_record(ctx: JobContext, snapshot: dict[str, Any],
                             export_path: Path) -> None:
    """A delivered month without its audit marker: the delivering run was killed after the
    snapshot. Audit the delivery now, unless the entry made it into the log already."""
    month, digest = snapshot["month"], snapshot["export"]["sha256"]
    for entry in ctx.run.audit.entries():
        if (entry.get("event") == "month-delivered" and entry.get("month") == month
                and entry.get("export_sha256") == digest):
            write_atomic(_marker(ctx.state_dir, month, "audit"),
                         _dump({"seq": entry.get("seq"), "hash": entry.get("hash"),
                                "run_id": entry.get("run_id")}))
            return
    ctx.run.warn(f"the delivery of {month} by run {snapshot['run_id']} was not in the audit "
                 "log (that run was interrupted): recorded now")
    snapshot_sha256 = sha256_hex(snapshot_path(ctx.state_dir, month).read_bytes())
    _record_delivery(ctx, snapshot, snapshot_sha256, export_path)


def _already_delivered(ctx: JobContext, existing: dict[str, Any], export_path: Path,
                       summary: dict[str, Any]) -> None:
    month = existing["month"]
    delivered_totals = existing["totals"]
    summary.update({
        "export_path": str(export_path),
        "export_sha256": existing["export"]["sha256"],
        "snapshot_path": str(snapshot_path(ctx.state_dir, month)),
        "delivered": True,
        "written": False,
        "delivered_at": existing["delivered_at"],
        "delivered_active": delivered_totals["active"],
        "note": (f"{month} was delivered at {existing['delivered_at']}: export and snapshot "
                 "left as they are; the counts above are today's live count"),
    })
    if delivered_totals["active"] != summary["active"]:
        ctx.run.warn(f"live count {summary['active']} differs from the {delivered_totals['active']}"
                     f" delivered for {month}; the delivered export stays as it is")
    try:
        intact = sha256_hex(export_path.read_bytes()) == existing["export"]["sha256"]
    except FileNotFoundError:
        intact = False
    if not intact:
        ctx.run.warn(f"{export_path} is missing or differs from the delivered export of "
                     f"{month}; reproduce it with `dap-agent export active-users --month "
                     f"{month} --output PATH`")


def _change_since_last_month(ctx: JobContext, month: str, rows: Sequence[Row],
                             summary: dict[str, Any]) -> None:
    before_month = previous_month(month)
    previous = load_snapshot(ctx.state_dir, before_month)
    now_counted = {r.user_id: r.user_principal_name or r.user_id for r in rows if r.counted}
    summary["previous_month"] = before_month
    if previous is None:
        summary.update({"previous_basis": None, "previous_active": None,
                        "active_change": None, "joined": [], "left": []})
        return
    if not previous["delivered"]:
        ctx.run.warn(f"{before_month} was never delivered; comparing with its last draft")
    then = _counted(previous)
    summary.update({
        "previous_basis": "delivered" if previous["delivered"] else "draft",
        "previous_active": previous["totals"]["active"],
        "active_change": len(now_counted) - previous["totals"]["active"],
        "joined": sorted((now_counted[u] for u in now_counted.keys() - then.keys()),
                         key=str.casefold),
        "left": sorted((then[u] for u in then.keys() - now_counted.keys()), key=str.casefold),
    })


def _warn_about_data(ctx: JobContext, policy: Policy, rules: Rules, rows: Sequence[Row],
                     skus: Sequence[SubscribedSku], matched: set[str]) -> None:
    tenant_skus = {s.sku_id for s in skus}
    # The long default lists name every E5 variant; only the SKUs someone configured by
    # hand are worth a warning when the tenant has none of them.
    for key in ("e5_sku_ids", "exchange_only_sku_ids"):
        if key in policy.model_fields_set:
            for sku in getattr(policy, key):
                if sku not in tenant_skus:
                    ctx.run.warn(f"active_users.{key}: SKU {sku} is not in this tenant's "
                                 "/subscribedSkus (a typo, or a subscription that ended?)")
    unknown = Counter(s for r in rows for s in r.held if s not in tenant_skus)
    for sku, n in sorted(unknown.items()):
        ctx.run.warn(f"SKU {sku} held by {n} user(s) is not in /subscribedSkus: shown by id")
    for entry in policy.exclude_users:
        if entry.lower() not in matched:
            ctx.run.warn(f"active_users.exclude_users: {entry!r} matches no user")
    failing = [r for r in rows if any(rules.category_of(a.sku_id) != "other"
                                      for a in r.not_held)]
    if failing:
        errors = Counter(f"{rules.name(a.sku_id)} {a.state}" + (f" ({a.error})" if a.error else "")
                         for r in failing for a in r.not_held
                         if rules.category_of(a.sku_id) != "other")
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(errors.items()))
        ctx.run.warn(f"{len(failing)} user(s) have E5/Exchange assignments that are not held "
                     f"({detail}); not counted for those SKUs, see the not_held column")


async def _deliver_mail(ctx: JobContext, policy: Policy, snapshot: dict[str, Any],
                        export_path: Path) -> None:
    """Mail the delivered export and totals once per month (retried by a later final run).

    At least once: a "sending" record is written before the request and "sent" after it.
    A run killed in between leaves "sending": nobody knows whether Graph got the mail, and
    a missed delivery costs more than a second copy, so the next delivering run sends it
    again, marked as a possible repeat. A send Graph refused (an HTTP error) is not sent:
    its record is removed and the next delivering run simply sends it.
    """
    if not policy.deliver_to:
        return
    month = snapshot["month"]
    state_file = _marker(ctx.state_dir, month, "mail")
    previous = _read_state(state_file)
    if previous.get("status") == "sent":
        ctx.run.report.summary["mail"] = "already sent"
        return
    repeat = previous.get("status") == "sending"
    if repeat:
        ctx.run.warn(f"the delivery mail of {month} may have been sent already by run "
                     f"{previous.get('run_id')}, which was interrupted while sending it: "
                     "sending it again, marked as a possible repeat")
    data = render_export(snapshot)
    attach = len(data) <= UPLOAD_MAX  # over 3 MiB it goes through an upload session
    if not attach:
        ctx.run.warn(f"export is {len(data)} bytes, over the {UPLOAD_MAX}-byte limit for a "
                     "mail attachment: mailing the totals and checksum only")
    subject = f"Active users {month}: {snapshot['totals']['active']}"
    text = _mail_text(snapshot, ctx.run.report.summary, export_path, attach)
    if repeat:
        subject += " (possible repeat)"
        text = (f"This message may repeat one sent by run {previous.get('run_id')}, which was "
                "interrupted before it could record the sending.\n\n" + text)
    target = Subject("mailbox", policy.sender, policy.sender)
    reason = f"deliver the active-user overview {month} to {', '.join(policy.deliver_to)}"
    record = {"format": SNAPSHOT_FORMAT, "month": month, "run_id": ctx.run.run_id,
              "to": list(policy.deliver_to), "export_sha256": snapshot["export"]["sha256"]}
    with ctx.run.change("send-mail", target, reason,
                        before={"to": list(policy.deliver_to), "month": month,
                                "possible_repeat": repeat}) as change:
        if change.execute:
            attachments = ([Attachment(export_name(month), "text/csv", data)]
                           if attach else [])
            write_atomic(state_file, _dump({**record, "status": "sending",
                                            "started_at": iso_z(ctx.now)}))
            try:
                result = await send_mail(ctx.graph, sender=policy.sender,
                                         to=policy.deliver_to, subject=subject, text=text,
                                         attachments=attachments)
            except GraphError as exc:
                if exc.status is not None:  # Graph answered: the mail was not sent
                    state_file.unlink(missing_ok=True)
                raise  # no answer (connection lost): outcome unknown, "sending" stays
            write_atomic(state_file, _dump({**record, "status": "sent",
                                            "sent_at": iso_z(ctx.now),
                                            "request_id": result.request_id}))
            change.done(request_id=result.request_id, after={
                "to": list(policy.deliver_to), "attachment": attach, "via": result.via,
                "export_sha256": snapshot["export"]["sha256"]})
    ctx.run.report.summary["mail"] = change.action.status


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {"status": "sending"}  # unreadable: treat as unknown outcome
    return data if isinstance(data, dict) else {"status": "sending"}


def _mail_text(snapshot: dict[str, Any], summary: dict[str, Any], export_path: Path,
               attached: bool) -> str:
    t = snapshot["totals"]
    lines = [
        f"Active-user overview for {snapshot['month']} (tenant {snapshot['tenant_id']}).",
        "",
        f"Active users (invoiced): {t['active']}",
        f"  E5: {t['e5']}",
        f"  Exchange-only: {t['exchange_only']}",
        f"Licensed, disabled (not counted): {t['licensed_disabled']}",
        f"Excluded (not counted): {t['excluded']}",
    ]
    if summary.get("previous_active") is not None:
        lines.append(f"Change since {summary['previous_month']} "
                     f"({summary['previous_basis']}): {summary['active_change']:+d} "
                     f"(joined {len(summary['joined'])}, left {len(summary['left'])})")
    lines += [
        "",
        f"Export: {export_path.name} ({'attached' if attached else 'too large to attach'})",
        f"SHA-256: {snapshot['export']['sha256']}",
        f"Counted at: {snapshot['taken_at']} (run {snapshot['run_id']})",
        "",
        "Reproduce it byte for byte: dap-agent export active-users --month "
        f"{snapshot['month']}",
    ]
    return "\n".join(lines) + "\n"


def deadline_of(month: str, policy: Policy | None = None) -> date:
    """The month's last working day under the policy's calendar."""
    year, mon = parse_month(month)
    return (policy or Policy()).calendar.last_working_day(year, mon)


JOB = JobSpec(
    id="active-users",
    title="Monthly active-user count and export",
    policy_section="active_users",
    policy_model=Policy,
    # Mail.Send only when deliver_to is set: named in the 403 message if it is missing.
    permissions=("User.Read.All", "Organization.Read.All"),
    changes_tenant=False,
    run=run,
)
