"""Job `privileged-roles`: PIM role assignments against the approved register (DAP 3.6, 3.12.2).

Reads who holds which Entra role (PIM eligible, PIM active or activated, and assignments
made outside PIM), expands role-holding groups to their members, and checks everything
against the policy's approved register. Changes nothing in the tenant.

Rules (severity fixed per rule):
- PIM-GA-COUNT (high): distinct Global Administrator holders (users and service
  principals; active, activated or eligible; directly or through a group) differ from
  `global_admin_count`. Checked whatever `roles_in_scope` says.
- PIM-PERMANENT-ACTIVE (high): an active assignment without an end date that is not a PIM
  activation (outside-PIM assignments included), unless its principal is a declared
  emergency-access account (matched by object id or UPN).
- PIM-NO-END-DATE (medium): an assignment (active or eligible) without an end date;
  emergency-access accounts are exempt (they are permanent by declaration). A permanent
  active assignment is also an assignment without an end date: it gets both findings.
- PIM-UNAPPROVED (high): no register entry for the principal, role and kind (a PIM
  activation is covered by an entry of either kind), or the entry's period has not begun.
- PIM-REGISTER-EXPIRED (high): the assignment outlives its register entry: the entry's
  end date has passed, or the assignment's end lies after it. An assignment without an end
  date under a current entry is PIM-NO-END-DATE's business, not this rule's.
- PIM-GUEST-ADMIN (medium): a guest user holds a role (directly or through a group); one
  finding per guest, listing the roles and whether the register covers them.
- PIM-ADMIN-NO-MFA (high): a user holding a role is not registered for MFA (or the MFA
  report has no row for them); one finding per user.
- PIM-READER-MISSING (low): a functional administrator (`functional_administrators`) holds
  no Global Reader assignment (active or eligible, directly or through a group).
- PIM-UNRESOLVED-PRINCIPAL (medium): an assignment's principal is nowhere in the directory
  (deleted): a finding, not a failed run; its other rules still apply under its id.

Register and rules work per assignment (the principal it was made to, a group for a group
assignment: one register entry for the group covers its members); the guest and MFA rules
work per holder (members of role-holding groups included, reported with the group as path).
The export `<state>/exports/privileged-access-YYYY-MM-DD.csv` lists every holding.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from agent.files import write_atomic
from agent.graph import role_templates
from agent.graph import roles as graph_roles
from agent.graph.role_templates import GLOBAL_ADMINISTRATOR, GLOBAL_READER
from agent.graph.roles import Principal, RoleAssignment, RoleInventory
from agent.job import Accounts, JobContext, JobPolicy, JobSpec
from agent.rules import severity_of
from agent.run import Severity, Subject

RULE_GA_COUNT = "PIM-GA-COUNT"
RULE_PERMANENT = "PIM-PERMANENT-ACTIVE"
RULE_NO_END = "PIM-NO-END-DATE"
RULE_UNAPPROVED = "PIM-UNAPPROVED"
RULE_EXPIRED = "PIM-REGISTER-EXPIRED"
RULE_GUEST = "PIM-GUEST-ADMIN"
RULE_NO_MFA = "PIM-ADMIN-NO-MFA"
RULE_READER = "PIM-READER-MISSING"
RULE_UNRESOLVED = "PIM-UNRESOLVED-PRINCIPAL"

EXPORT_COLUMNS = (
    "holder_id", "holder_name", "holder_type", "user_type", "role", "role_template_id",
    "in_scope", "kind", "assignment_type", "path", "group_id", "group_name", "scope",
    "start", "end", "register_reference", "mfa_registered", "findings",
)


# ---- policy -------------------------------------------------------------------------------


class RegisterEntry(BaseModel):
    """One approved assignment, as both parties recorded it (`[[privileged_roles.register]]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    principal: str = Field(min_length=1, description="UPN, or object id (groups, service "
                           "principals)")
    role: str = Field(description="built-in role display name or template id")
    kind: Literal["eligible", "active"]
    start: date
    end: date
    approved_by: list[str] = Field(description='e.g. ["customer: J. Jansen", '
                                   '"provider: P. de Vries"]')
    reference: str = ""
    scope: str | None = Field(default=None, description='directoryScopeId, e.g. "/"; '
                              "unset: any scope")

    @field_validator("principal")
    @classmethod
    def _principal(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("principal is empty")
        return value

    @field_validator("role")
    @classmethod
    def _known_role(cls, value: str) -> str:
        if role_templates.lookup(value) is None:
            raise ValueError(f"unknown role {value!r}: use a built-in Entra role's display "
                             "name or template id (e.g. 'Global Administrator' or "
                             f"{GLOBAL_ADMINISTRATOR})")
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _a_date_not_a_number(cls, value: object) -> object:
        # pydantic would read 1767225600 as a Unix timestamp: a register date is a date
        if isinstance(value, (int, float)):
            raise ValueError("must be a date such as 2026-12-31, not a number")
        if isinstance(value, datetime):
            raise ValueError("must be a date such as 2026-12-31, without a time")
        return value

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, value: date, info: ValidationInfo) -> date:
        start = info.data.get("start")
        if isinstance(start, date) and value < start:
            raise ValueError(f"end {value} is before start {start}")
        return value

    @field_validator("approved_by")
    @classmethod
    def _both_sides(cls, value: list[str]) -> list[str]:
        sides = {_approval_side(item) for item in value}
        missing = [side for side in ("customer", "provider") if side not in sides]
        if missing:
            raise ValueError("needs an approval from both parties, as \"customer: NAME\" and "
                             f"\"provider: NAME\"; missing: {', '.join(missing)}")
        return value

    @property
    def template(self) -> role_templates.RoleTemplate:
        found = role_templates.lookup(self.role)
        assert found is not None  # validated above
        return found

    def label(self) -> str:
        return self.reference or f"{self.principal} / {self.template.name}"


def _approval_side(item: str) -> str | None:
    side, sep, name = item.partition(":")
    if not sep or not name.strip():
        return None
    return side.strip().lower()


class Policy(JobPolicy):
    schedule: str = "0 7 * * 1"
    global_admin_count: int = Field(default=2, ge=0)
    emergency_access_accounts: Accounts = Field(
        default_factory=list, description="UPNs or ids allowed a permanent Global "
        "Administrator role (break-glass accounts)")
    functional_administrators: Accounts = Field(
        default_factory=list, description="UPNs or ids of the customer's functional "
        "administrators: each must hold Global Reader")
    roles_in_scope: Literal["all", "microsoft-privileged"] = Field(
        default="all", description='"all" directory roles, or only the roles Microsoft '
        "labels privileged (custom roles Graph does not label count as privileged)")
    # The TOML key is `register`; as a Python name it would shadow ABCMeta.register.
    register_entries: list[RegisterEntry] = Field(default_factory=list, alias="register")


# ---- evaluation (pure: no HTTP) -----------------------------------------------------------


@dataclass(frozen=True)
class RoleInfo:
    id: str
    template_id: str
    name: str
    in_scope: bool


@dataclass(frozen=True)
class Holding:
    """A holder's hold on a role through one assignment (directly, or via a group)."""

    holder: Principal
    assignment: RoleAssignment
    role: RoleInfo
    via: Principal | None = None  # the group the role was assigned to

    @property
    def path(self) -> str:
        return "group" if self.via is not None or self.assignment.member_type == "Group" \
            else "direct"

    @property
    def assignment_type(self) -> str:
        a = self.assignment
        if a.origin == "outside-pim":
            return "outside-pim"
        if a.activated:
            return "activated"
        if a.kind == "eligible":
            return "eligible"
        return "permanent" if a.end is None else "time-bound"


@dataclass(frozen=True)
class PimFinding:
    rule: str
    subject: Subject
    detail: str
    assignment_id: str | None = None  # assignment-level rules
    holder_id: str | None = None  # holder-level rules
    role: str | None = None  # role name, where the finding is about one role

    @property
    def severity(self) -> Severity:
        return severity_of(self.rule)


@dataclass
class Evaluation:
    holdings: list[Holding]
    findings: list[PimFinding]
    register_match: dict[str, RegisterEntry | None]  # assignment id -> its entry
    global_admins: list[Principal]
    unmatched_entries: list[RegisterEntry] = field(default_factory=list)


def _keys(principal: Principal) -> set[str]:
    keys = {principal.id.lower()}
    if principal.upn:
        keys.add(principal.upn.casefold())
    return keys


def _listed(principal: Principal, accounts: Iterable[str]) -> bool:
    return bool(_keys(principal) & {a.casefold() for a in accounts})


def role_info(inventory: RoleInventory, role_id: str, roles_in_scope: str) -> RoleInfo:
    definition = inventory.definition(role_id)
    if definition is not None:
        template_id, name, privileged = (definition.template_id, definition.name,
                                         definition.privileged)
    else:  # an assignment of a role the definitions list did not return
        template = role_templates.BY_TEMPLATE_ID.get(role_id)
        template_id = role_id
        name = template.name if template else role_id
        privileged = template.privileged if template else None
    # narrowed to Microsoft's label: a role Graph gives no label (custom) stays in scope
    in_scope = roles_in_scope == "all" or privileged is not False
    return RoleInfo(id=role_id, template_id=template_id, name=name, in_scope=in_scope)


def expand_holdings(inventory: RoleInventory, roles_in_scope: str = "all") -> list[Holding]:
    """Every (holder, assignment): a group's assignment yields the group and each member."""
    holdings: list[Holding] = []
    through_groups: set[tuple[str, str, str, str]] = set()
    for a in inventory.assignments:
        info = role_info(inventory, a.role_id, roles_in_scope)
        holdings.append(Holding(holder=a.principal, assignment=a, role=info))
        if a.principal.type == "group":
            for member in inventory.members.get(a.principal.id, ()):
                holdings.append(Holding(holder=member, assignment=a, role=info,
                                        via=a.principal))
                through_groups.add((member.id, a.role_id, a.scope, a.kind))
    # Graph may also list a member's inherited instance (memberType Group): already covered
    return [h for h in holdings
            if not (h.via is None and h.assignment.member_type == "Group"
                    and (h.holder.id, h.assignment.role_id, h.assignment.scope,
                         h.assignment.kind) in through_groups)]


def _entry_limit(day: date, tz: ZoneInfo) -> datetime:
    """The end of an entry's last day: local or UTC midnight, whichever is later.

    PIM end times are often typed in UTC (…T23:59:59Z or next day 00:00Z): either reading
    of the register's date is honoured.
    """
    after = day + timedelta(days=1)
    return max(datetime.combine(after, time(0), tz), datetime.combine(after, time(0), UTC))


def match_register(a: RoleAssignment, info: RoleInfo,
                   register: Sequence[RegisterEntry], today: date) -> RegisterEntry | None:
    """The register entry for an assignment: current entries first, then the latest end."""
    keys = _keys(a.principal)
    candidates = [
        e for e in register
        if e.principal.casefold() in keys
        and e.template.template_id in (info.template_id, info.id)
        and (e.kind == a.kind or a.activated)
        and (e.scope is None or e.scope == a.scope)
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda e: (e.start <= today <= e.end, e.end))


def _describe(a: RoleAssignment, info: RoleInfo) -> str:
    kind: str = "activated" if a.activated else a.kind
    if a.origin == "outside-pim":
        kind += ", made outside PIM"
    scope = "" if a.scope == "/" else f", scope {a.scope}"
    return f"{info.name} ({kind}{scope}){_disabled(a.principal)}"


def _disabled(p: Principal) -> str:
    return " [account disabled]" if p.account_enabled is False else ""


def _day(moment: datetime | None, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).date().isoformat() if moment else "none"


def _subject(p: Principal) -> Subject:
    return Subject(p.type, p.id, p.name)


def evaluate(
    inventory: RoleInventory,
    policy: Policy,
    *,
    mfa: Mapping[str, bool | None],
    now: datetime,
    tz: ZoneInfo,
    users: Mapping[str, Principal | None] | None = None,
) -> Evaluation:
    """All findings for an inventory. `mfa`: user id -> isMfaRegistered (None: no row);
    `users`: functional administrators looked up by key (None: not in the tenant)."""
    today = now.astimezone(tz).date()
    holdings = expand_holdings(inventory, policy.roles_in_scope)
    findings: list[PimFinding] = []
    matches: dict[str, RegisterEntry | None] = {}
    used: set[int] = set()
    eligible_keys = {(a.principal.id, a.role_id, a.scope)
                     for a in inventory.assignments if a.kind == "eligible"}

    for a in inventory.assignments:
        info = role_info(inventory, a.role_id, policy.roles_in_scope)
        entry = match_register(a, info, policy.register_entries, today)
        matches[a.id] = entry
        if entry is not None:
            used.add(id(entry))
        if not info.in_scope:
            continue
        if a.principal.type == "unknown":
            findings.append(PimFinding(
                RULE_UNRESOLVED, _subject(a.principal),
                f"{_describe(a, info)}: principal {a.principal.id} not found in the directory "
                "(deleted?); checked against the register under its object id",
                assignment_id=a.id, role=info.name))
        # Activations are checked against the register through their eligible assignment.
        via_eligible = a.activated and (a.principal.id, a.role_id, a.scope) in eligible_keys
        for rule, detail in _assignment_rules(a, info, entry, policy, today=today, tz=tz,
                                              register_check=not via_eligible):
            findings.append(PimFinding(rule, _subject(a.principal), detail,
                                       assignment_id=a.id, role=info.name))

    # Per holder: guests and MFA (users only; through groups too).
    by_user: dict[str, list[Holding]] = defaultdict(list)
    for h in holdings:
        if h.holder.type == "user" and h.role.in_scope:
            by_user[h.holder.id].append(h)
    for user_id, held in by_user.items():
        user = held[0].holder
        roles = "; ".join(sorted({_held(h, matches) for h in held}))
        if user.is_guest:
            findings.append(PimFinding(
                RULE_GUEST, _subject(user),
                f"guest (third party){_disabled(user)} holds: {roles}", holder_id=user_id))
        registered = mfa.get(user_id)
        if registered is not True:
            why = ("not registered for MFA" if registered is False
                   else "no MFA registration record")
            findings.append(PimFinding(
                RULE_NO_MFA, _subject(user), f"{why}{_disabled(user)}; holds: {roles}",
                holder_id=user_id))

    # Global Administrator: distinct holders, whatever the scope setting.
    ga: dict[str, Principal] = {}
    for h in holdings:
        if h.role.template_id == GLOBAL_ADMINISTRATOR and h.holder.type != "group":
            ga.setdefault(h.holder.id, h.holder)
    if len(ga) != policy.global_admin_count:
        names = ", ".join(sorted(p.name for p in ga.values())) or "none"
        findings.append(PimFinding(
            RULE_GA_COUNT, Subject("role", GLOBAL_ADMINISTRATOR, "Global Administrator"),
            f"{len(ga)} Global Administrator holders (active or eligible, through groups "
            f"too), expected {policy.global_admin_count}: {names}",
            role="Global Administrator"))

    # Functional administrators must be able to read everything.
    readers: set[str] = set()
    for h in holdings:
        if h.role.template_id == GLOBAL_READER:
            readers |= _keys(h.holder)
    for key in policy.functional_administrators:
        found = (users or {}).get(key)
        if key.casefold() in readers or (found is not None and _keys(found) & readers):
            continue
        missing = users is not None and key in users and found is None
        detail = ("functional administrator not found in the tenant" if missing else
                  "functional administrator holds no Global Reader role (active or eligible)")
        findings.append(PimFinding(RULE_READER,
                                   _subject(found) if found else Subject("user", key, key),
                                   detail, holder_id=found.id if found else None,
                                   role="Global Reader"))

    return Evaluation(
        holdings=holdings, findings=findings, register_match=matches,
        global_admins=sorted(ga.values(), key=lambda p: p.name),
        unmatched_entries=[e for e in policy.register_entries if id(e) not in used],
    )


def _assignment_rules(a: RoleAssignment, info: RoleInfo, entry: RegisterEntry | None,
                      policy: Policy, *, today: date, tz: ZoneInfo,
                      register_check: bool) -> list[tuple[str, str]]:
    what = _describe(a, info)
    # Emergency-access accounts may hold Global Administrator permanently, nothing else.
    emergency = (info.template_id == GLOBAL_ADMINISTRATOR
                 and _listed(a.principal, policy.emergency_access_accounts))
    found: list[tuple[str, str]] = []
    if a.permanent and not emergency:
        found.append((RULE_PERMANENT, f"{what}: permanently active, and not a declared "
                      "emergency-access account"))
    if a.end is None and not emergency:
        found.append((RULE_NO_END, f"{what}: no end date"))
    if not register_check:
        return found
    if entry is None:
        found.append((RULE_UNAPPROVED, f"{what}: not in the approved register"))
    elif today < entry.start:
        found.append((RULE_UNAPPROVED, f"{what}: register entry {entry.label()} only starts "
                      f"on {entry.start}"))
    elif today > entry.end:
        found.append((RULE_EXPIRED, f"{what}: register entry {entry.label()} ended on "
                      f"{entry.end}; the assignment is still there (ends {_day(a.end, tz)})"))
    elif a.end is not None and a.end > _entry_limit(entry.end, tz):
        found.append((RULE_EXPIRED, f"{what}: ends {_day(a.end, tz)}, after its register "
                      f"entry {entry.label()} ends on {entry.end}"))
    return found


def _held(h: Holding, matches: Mapping[str, RegisterEntry | None]) -> str:
    via = f" via group {h.via.name}" if h.via else ""
    entry = matches.get(h.assignment.id)
    registered = f", register {entry.label()}" if entry else ", not in the register"
    return f"{h.role.name} ({h.assignment_type}{via}{registered})"


# ---- export -------------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def export_rows(evaluation: Evaluation, mfa: Mapping[str, bool | None]) -> list[dict[str, str]]:
    by_assignment: dict[str, set[str]] = defaultdict(set)
    by_holder: dict[str, set[str]] = defaultdict(set)
    tenant_rules: dict[str, set[str]] = defaultdict(set)  # role template id -> rules
    for f in evaluation.findings:
        if f.assignment_id:
            by_assignment[f.assignment_id].add(f.rule)
        elif f.holder_id:
            by_holder[f.holder_id].add(f.rule)
        elif f.rule == RULE_GA_COUNT:
            tenant_rules[GLOBAL_ADMINISTRATOR].add(f.rule)
    rows: list[dict[str, str]] = []
    for h in evaluation.holdings:
        a, holder = h.assignment, h.holder
        entry = evaluation.register_match.get(a.id)
        registered = mfa.get(holder.id) if holder.type == "user" else None
        rules = (by_assignment[a.id] | by_holder[holder.id]
                 | tenant_rules[h.role.template_id])
        rows.append({
            "holder_id": holder.id,
            "holder_name": holder.name,
            "holder_type": holder.type,
            "user_type": holder.user_type or "",
            "role": h.role.name,
            "role_template_id": h.role.template_id,
            "in_scope": "true" if h.role.in_scope else "false",
            "kind": a.kind,
            "assignment_type": h.assignment_type,
            "path": h.path,
            "group_id": h.via.id if h.via else "",
            "group_name": h.via.name if h.via else "",
            "scope": a.scope,
            "start": _iso(a.start),
            "end": _iso(a.end),
            "register_reference": entry.label() if entry else "",
            "mfa_registered": "" if holder.type != "user" else
            ("true" if registered else "false" if registered is False else "unknown"),
            "findings": ";".join(sorted(rules)),
        })
    rows.sort(key=lambda r: (r["role"], r["holder_name"].casefold(), r["kind"], r["path"],
                             r["group_name"]))
    return rows


def render_csv(rows: Sequence[Mapping[str, str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


# ---- the job ------------------------------------------------------------------------------


async def run(ctx: JobContext) -> None:
    policy: Policy = ctx.policy
    inventory = await graph_roles.fetch_inventory(ctx.graph)
    holdings = expand_holdings(inventory, policy.roles_in_scope)
    holders = {h.holder.id: h.holder for h in holdings if h.holder.type == "user"}
    mfa = await graph_roles.mfa_registration(ctx.graph, holders.values())

    # Functional administrators who hold no role are looked up, to name them properly.
    holder_keys: set[str] = set()
    for h in holdings:
        holder_keys |= _keys(h.holder)
    users: dict[str, Principal | None] = {}
    for key in policy.functional_administrators:
        if key.casefold() not in holder_keys:
            users[key] = await graph_roles.find_user(ctx.graph, key)

    evaluation = evaluate(inventory, policy, mfa=mfa, now=ctx.now, tz=ctx.tz, users=users)
    for f in evaluation.findings:
        ctx.run.finding(f.rule, f.severity, f.subject, f.detail)

    rows = export_rows(evaluation, mfa)
    data = render_csv(rows)
    path = ctx.exports_dir / f"privileged-access-{ctx.now.astimezone(ctx.tz):%Y-%m-%d}.csv"
    write_atomic(path, data)

    assignments = inventory.assignments
    summary: dict[str, Any] = {
        "assignments": len(assignments),
        "eligible": sum(1 for a in assignments if a.kind == "eligible"),
        "active": sum(1 for a in assignments if a.kind == "active" and not a.activated),
        "activated": sum(1 for a in assignments if a.activated),
        "permanent": sum(1 for a in assignments if a.permanent),
        "outside_pim": sum(1 for a in assignments if a.origin == "outside-pim"),
        "holders": len({h.holder.id for h in evaluation.holdings if h.holder.type != "group"}),
        "groups_expanded": len(inventory.members),
        "global_admin_holders": len(evaluation.global_admins),
        "global_admin_expected": policy.global_admin_count,
        "roles_in_scope": policy.roles_in_scope,
        "register_entries": len(policy.register_entries),
        "register_unmatched": [e.label() for e in evaluation.unmatched_entries],
        # the service report lists these (it reads stored run reports, not the config)
        "register_expiring": _expiring(policy.register_entries,
                                       ctx.now.astimezone(ctx.tz).date()),
        "export_path": str(path),
        "export_rows": len(rows),
        "export_sha256": hashlib.sha256(data).hexdigest(),
    }
    ctx.run.report.summary.update(summary)


EXPIRING_DAYS = 30


def _expiring(entries: Sequence[RegisterEntry], today: date) -> list[dict[str, str]]:
    """Register entries that end within EXPIRING_DAYS (renew them, or the role must go)."""
    horizon = today + timedelta(days=EXPIRING_DAYS)
    return [{"principal": e.principal, "role": e.template.name, "kind": e.kind,
             "end": e.end.isoformat(), "reference": e.reference}
            for e in sorted(entries, key=lambda e: (e.end, e.principal))
            if today <= e.end <= horizon]


JOB = JobSpec(
    id="privileged-roles",
    title="PIM role assignments against the approved register",
    policy_section="privileged_roles",
    policy_model=Policy,
    permissions=(graph_roles.ROLES_PERMISSION, graph_roles.MEMBERS_PERMISSION,
                 graph_roles.USERS_PERMISSION, graph_roles.MFA_PERMISSION),
    changes_tenant=False,
    run=run,
)
