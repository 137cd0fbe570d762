"""Counting (pure: no HTTP, no files): each licensed user's row, the totals, per SKU, and
who joined or left the count since the previous month.

`categorise` gives each licensed user a row: category, counted, and why. Held licences
are the `licenseAssignmentStates` entries in `held_states` (direct and group-inherited
alike); the category is `e5` if a held SKU is an E5 SKU, else `exchange-only` if one is an
Exchange SKU, else `other`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agent.graph import licensing
from agent.graph.licensing import LicensedUser, SubscribedSku
from jobs.active_users.policy import Policy

Category = Literal["e5", "exchange-only", "other"]
CATEGORIES: tuple[Category, ...] = ("e5", "exchange-only", "other")

# The export's columns, format 1; format 2 adds CHANGE_COLUMN (snapshot.EXPORT_FORMAT).
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


# ---- joiners and leavers -------------------------------------------------------------------

CHANGE_COLUMN = "change"  # export format 2: "joined" / "left" since the previous month, or ""


@dataclass(frozen=True, slots=True)
class Person:
    user_id: str
    user_principal_name: str
    display_name: str

    @property
    def label(self) -> str:
        return self.user_principal_name or self.user_id


@dataclass(frozen=True)
class Changes:
    """The count compared with the previous month's snapshot (delivered, else its draft)."""

    previous_month: str
    previous_basis: Literal["delivered", "draft"] | None  # None: no snapshot to compare with
    previous_active: int | None
    joined: tuple[Person, ...]  # counted now, not counted then
    left: tuple[Person, ...]  # counted then, not counted now (disabled, unlicensed, gone)

    def change_of(self, row: Row) -> str:
        """The `change` cell of a row (format 2): joined, left, or empty."""
        if self.previous_basis is None:
            return ""
        if row.counted:
            return "joined" if row.user_id in self._joined_ids else ""
        return "left" if row.user_id in self._left_ids else ""

    @property
    def _joined_ids(self) -> frozenset[str]:
        return frozenset(p.user_id for p in self.joined)

    @property
    def _left_ids(self) -> frozenset[str]:
        return frozenset(p.user_id for p in self.left)

    def as_dict(self) -> dict[str, Any]:
        return {"previous_month": self.previous_month, "previous_basis": self.previous_basis,
                "previous_active": self.previous_active,
                "joined": [_person(p) for p in self.joined],
                "left": [_person(p) for p in self.left]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Changes:
        return cls(previous_month=data["previous_month"],
                   previous_basis=data.get("previous_basis"),
                   previous_active=data.get("previous_active"),
                   joined=tuple(Person(**p) for p in data.get("joined") or []),
                   left=tuple(Person(**p) for p in data.get("left") or []))


def _person(p: Person) -> dict[str, str]:
    return {"user_id": p.user_id, "user_principal_name": p.user_principal_name,
            "display_name": p.display_name}


def counted_people(snapshot: Mapping[str, Any]) -> dict[str, Person]:
    """user id -> Person for the counted rows of a stored snapshot (any format)."""
    cols = snapshot["columns"]
    i_id, i_upn, i_name, i_counted = (cols.index("user_id"), cols.index("user_principal_name"),
                                      cols.index("display_name"), cols.index("counted"))
    return {r[i_id]: Person(r[i_id], r[i_upn], r[i_name])
            for r in snapshot["rows"] if r[i_counted] == "true"}


def changes_since(previous_month: str, rows: Iterable[Row],
                  previous: Mapping[str, Any] | None) -> Changes:
    """Who joined and who left the count since `previous` (that month's snapshot)."""
    if previous is None:
        return Changes(previous_month, None, None, (), ())
    now = {r.user_id: Person(r.user_id, r.user_principal_name, r.display_name)
           for r in rows if r.counted}
    then = counted_people(previous)

    def ordered(people: Iterable[Person]) -> tuple[Person, ...]:
        return tuple(sorted(people, key=lambda p: (p.label.casefold(), p.user_id)))

    return Changes(
        previous_month=previous_month,
        previous_basis="delivered" if previous["delivered"] else "draft",
        previous_active=int(previous["totals"]["active"]),
        joined=ordered(now[u] for u in now.keys() - then.keys()),
        left=ordered(then[u] for u in then.keys() - now.keys()))
