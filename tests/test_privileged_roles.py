"""privileged-roles without HTTP: register validation, the rules over hand-built inventories,
the export rows. The demo-tenant tests are in test_privileged_roles_sandbox.py."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from agent.errors import EXIT_USAGE, ConfigError
from agent.graph import role_templates
from agent.graph.role_templates import GLOBAL_ADMINISTRATOR, GLOBAL_READER
from agent.graph.roles import (
    Principal,
    RoleAssignment,
    RoleDefinition,
    RoleInventory,
    definition_from,
    principal_from,
)
from agent.settings import load_settings
from jobs.privileged_roles import (
    EXPORT_COLUMNS,
    Policy,
    RegisterEntry,
    evaluate,
    expand_holdings,
    export_rows,
    render_csv,
)
from tests.conftest import CLIENT_ID, TENANT_ID, write_config

NOW = datetime(2026, 3, 18, 9, 0, tzinfo=UTC)
TZ = ZoneInfo("Europe/Amsterdam")
TODAY = NOW.date()
DAY = timedelta(days=1)

EXCHANGE_ADMIN = "29232cdf-9323-42fd-ade2-1d097af3e4de"
BILLING_ADMIN = "b0f54661-2d74-4c50-afa3-1ec803f12efe"
PRIV_ROLE_ADMIN = "e8611ab8-c189-46e8-94e1-60213ab1f814"
CUSTOM_ROLE = "3f1c0b9e-0000-4000-8000-00000000c0de"
APPROVED = ["customer: J. Jansen", "provider: P. de Vries"]


# ---- builders -------------------------------------------------------------------------------

def user(name: str, *, guest: bool = False, enabled: bool = True) -> Principal:
    return Principal(id=f"id-{name}", type="user", display_name=name.title(),
                     upn=f"{name}@contoso.nl", user_type="Guest" if guest else "Member",
                     account_enabled=enabled)


def group(name: str) -> Principal:
    return Principal(id=f"id-{name}", type="group", display_name=name)


def app(name: str) -> Principal:
    return Principal(id=f"id-{name}", type="servicePrincipal", display_name=name)


_counter = iter(range(1, 10_000))


def assign(principal: Principal, role: str = EXCHANGE_ADMIN, *, kind: str = "eligible",
           end: datetime | None = NOW + 90 * DAY, activated: bool = False,
           outside: bool = False, member_type: str = "Direct", scope: str = "/",
           ident: str | None = None) -> RoleAssignment:
    return RoleAssignment(
        id=ident or f"a{next(_counter)}", principal=principal, role_id=role, scope=scope,
        kind=kind, activated=activated,  # type: ignore[arg-type]
        origin="outside-pim" if outside else "pim", member_type=member_type,
        start=NOW - 30 * DAY, end=end)


def definitions() -> tuple[RoleDefinition, ...]:
    found = [definition_from({"id": t.template_id, "templateId": t.template_id,
                              "displayName": t.name, "isBuiltIn": True})
             for t in role_templates.BUILT_IN_ROLES]
    found.append(definition_from({"id": CUSTOM_ROLE, "templateId": CUSTOM_ROLE,
                                  "displayName": "Contoso Helpdesk Light", "isBuiltIn": False}))
    return tuple(found)


def inventory(*assignments: RoleAssignment,
              members: dict[str, tuple[Principal, ...]] | None = None) -> RoleInventory:
    return RoleInventory(definitions=definitions(), assignments=assignments,
                         members=members or {})


def entry(principal: str, role: str = "Exchange Administrator", kind: str = "eligible",
          start: date = TODAY - 100 * DAY, end: date = TODAY + 200 * DAY,
          reference: str = "RFC-1", **extra: Any) -> dict[str, Any]:
    return {"principal": principal, "role": role, "kind": kind, "start": start, "end": end,
            "approved_by": APPROVED, "reference": reference, **extra}


def policy(*register: dict[str, Any], **keys: Any) -> Policy:
    keys.setdefault("global_admin_count", 0)
    return Policy(register=list(register), **keys)


def fired(holders: RoleInventory, pol: Policy, mfa: dict[str, bool | None] | None = None,
          users: dict[str, Principal | None] | None = None) -> dict[str, set[str]]:
    """rule -> subject names. MFA defaults to registered for every user holder."""
    if mfa is None:
        mfa = {h.holder.id: True for h in expand_holdings(holders)}
    result: dict[str, set[str]] = {}
    for f in evaluate(holders, pol, mfa=mfa, now=NOW, tz=TZ, users=users).findings:
        result.setdefault(f.rule, set()).add(str(f.subject.name))
    return result


# ---- the register: validated at load ---------------------------------------------------------

def test_register_entry_accepts_names_template_ids_and_old_names() -> None:
    for role in ("Global Administrator", "global administrator", GLOBAL_ADMINISTRATOR,
                 GLOBAL_ADMINISTRATOR.upper(), "Company Administrator"):
        parsed = RegisterEntry(**entry("a@contoso.nl", role=role))
        assert parsed.template.template_id == GLOBAL_ADMINISTRATOR


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"role": "Global Admin"}, "role", "unknown role 'Global Admin'"),
    ({"role": "00000000-0000-0000-0000-000000000000"}, "role", "unknown role"),
    ({"start": TODAY, "end": TODAY - DAY}, "end", "is before start"),
    ({"approved_by": ["customer: J. Jansen"]}, "approved_by", "missing: provider"),
    ({"approved_by": ["provider: P. de Vries"]}, "approved_by", "missing: customer"),
    ({"approved_by": []}, "approved_by", "missing: customer, provider"),
    ({"approved_by": ["customer:", "provider: P."]}, "approved_by", "missing: customer"),
    ({"approved_by": ["J. Jansen", "P. de Vries"]}, "approved_by", "both parties"),
    ({"kind": "permanent"}, "kind", "'eligible' or 'active'"),
    ({"principal": "  "}, "principal", "empty"),
])
def test_register_entry_errors(change: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Policy(register=[{**entry("a@contoso.nl"), **change}])
    errors = caught.value.errors()
    assert [e["loc"] for e in errors] == [("register", 0, field)]
    assert message in errors[0]["msg"]


def test_one_day_entry_is_valid() -> None:
    assert RegisterEntry(**entry("a@contoso.nl", start=TODAY, end=TODAY)).end == TODAY


def test_register_errors_are_config_errors_with_exit_2_all_at_once(tmp_path: Path) -> None:
    register = [entry("a@contoso.nl", role="Global Admin"),
                entry("b@contoso.nl", start=TODAY, end=TODAY - DAY),
                entry("c@contoso.nl", approved_by=["customer: J. Jansen"]),
                entry("d@contoso.nl")]
    config = write_config(tmp_path / "agent.toml", tenant_id=TENANT_ID, client_id=CLIENT_ID,
                          graph_url="sandbox:", state_dir=str(tmp_path / "state"),
                          privileged_roles={"register": register})
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert caught.value.exit_code == EXIT_USAGE
    problems = caught.value.problems
    assert len(problems) == 3
    assert problems[0].startswith(f"{config}: privileged_roles.register.0.role: unknown role")
    assert problems[1].startswith(f"{config}: privileged_roles.register.1.end: end ")
    assert "missing: provider" in problems[2]
    assert "privileged_roles.register.2.approved_by" in problems[2]


def test_policy_keys_and_defaults(tmp_path: Path) -> None:
    config = write_config(tmp_path / "agent.toml", tenant_id=TENANT_ID, client_id=CLIENT_ID,
                          graph_url="sandbox:", state_dir=str(tmp_path / "state"),
                          privileged_roles={"register": [entry("d@contoso.nl")],
                                            "functional_administrators": ["f@contoso.nl"]})
    loaded: Policy = load_settings(config).privileged_roles
    assert loaded.global_admin_count == 2 and loaded.schedule == "0 7 * * 1"
    assert loaded.roles_in_scope == "all" and loaded.emergency_access_accounts == []
    assert loaded.register_entries[0].principal == "d@contoso.nl"
    with pytest.raises(ValidationError):
        Policy(**{"roles_in_scope": "some"})
    with pytest.raises(ValidationError):
        Policy(functional_administrators=[""])
    with pytest.raises(ValidationError):
        Policy(register_entries=[])  # type: ignore[call-arg]  # only the TOML name


# ---- who holds what ---------------------------------------------------------------------------

def test_group_members_hold_the_groups_role_with_the_group_as_path() -> None:
    admins, alice, bot = group("admins"), user("alice"), app("bot")
    inv = inventory(assign(admins, GLOBAL_ADMINISTRATOR),
                    members={admins.id: (alice, bot)})
    holdings = expand_holdings(inv)
    assert [(h.holder.name, h.path, h.via.name if h.via else None) for h in holdings] == [
        ("admins", "direct", None), ("alice@contoso.nl", "group", "admins"),
        ("bot", "group", "admins")]


def test_inherited_instance_of_a_group_member_is_not_counted_twice() -> None:
    admins, alice = group("admins"), user("alice")
    inv = inventory(assign(admins, GLOBAL_ADMINISTRATOR),
                    assign(alice, GLOBAL_ADMINISTRATOR, member_type="Group"),
                    members={admins.id: (alice,)})
    assert [h.holder.name for h in expand_holdings(inv)] == ["admins", "alice@contoso.nl"]


# ---- PIM-GA-COUNT -----------------------------------------------------------------------------

def test_ga_count_distinct_holders_active_eligible_through_groups() -> None:
    alice, bob, carol, bot = user("alice"), user("bob"), user("carol"), app("bot")
    admins = group("admins")
    inv = inventory(
        assign(alice, GLOBAL_ADMINISTRATOR, kind="active", end=None),  # permanent
        assign(bob, GLOBAL_ADMINISTRATOR),  # eligible
        assign(bob, GLOBAL_ADMINISTRATOR, kind="active", activated=True, end=NOW + DAY),
        assign(admins, GLOBAL_ADMINISTRATOR),  # carol through the group, alice again
        assign(bot, GLOBAL_ADMINISTRATOR, kind="active"),
        members={admins.id: (carol, alice)})
    evaluation = evaluate(inv, policy(global_admin_count=4), mfa={}, now=NOW, tz=TZ)
    assert [p.name for p in evaluation.global_admins] == [
        "alice@contoso.nl", "bob@contoso.nl", "bot", "carol@contoso.nl"]
    assert not [f for f in evaluation.findings if f.rule == "PIM-GA-COUNT"]
    off = evaluate(inv, policy(global_admin_count=2), mfa={}, now=NOW, tz=TZ)
    ga = [f for f in off.findings if f.rule == "PIM-GA-COUNT"]
    assert len(ga) == 1 and ga[0].severity == "high"
    assert ga[0].subject.id == GLOBAL_ADMINISTRATOR
    assert ga[0].detail.startswith("4 Global Administrator holders")
    assert "expected 2" in ga[0].detail


def test_ga_count_ignores_roles_in_scope_and_fires_on_zero() -> None:
    inv = inventory(assign(user("alice"), EXCHANGE_ADMIN))
    result = fired(inv, policy(global_admin_count=2, roles_in_scope="microsoft-privileged"))
    assert result["PIM-GA-COUNT"] == {"Global Administrator"}


# ---- PIM-PERMANENT-ACTIVE / PIM-NO-END-DATE ---------------------------------------------------

def test_permanent_active_and_no_end_date() -> None:
    perm, elig, timed, act = user("perm"), user("elig"), user("timed"), user("act")
    inv = inventory(
        assign(perm, PRIV_ROLE_ADMIN, kind="active", end=None),
        assign(elig, end=None),
        assign(timed, kind="active", end=NOW + 10 * DAY),
        assign(act, kind="active", activated=True, end=NOW + DAY),
    )
    register = [entry(p.upn or "", role=r, kind=k) for p, r, k in (
        (perm, "Privileged Role Administrator", "active"), (elig, "Exchange Administrator",
        "eligible"), (timed, "Exchange Administrator", "active"),
        (act, "Exchange Administrator", "eligible"))]
    result = fired(inv, policy(*register))
    assert result == {"PIM-PERMANENT-ACTIVE": {"perm@contoso.nl"},
                      "PIM-NO-END-DATE": {"perm@contoso.nl", "elig@contoso.nl"}}


def test_emergency_accounts_by_upn_or_id_may_hold_global_admin_permanently() -> None:
    by_upn, by_id, other = user("bg1"), user("bg2"), user("bg3")
    inv = inventory(
        assign(by_upn, GLOBAL_ADMINISTRATOR, kind="active", end=None),
        assign(by_id, GLOBAL_ADMINISTRATOR, kind="active", end=None, outside=True),
        assign(other, GLOBAL_ADMINISTRATOR, kind="active", end=None),
    )
    register = [entry(u.upn or "", role="Global Administrator", kind="active")
                for u in (by_upn, by_id, other)]
    result = fired(inv, policy(*register, global_admin_count=3,
                               emergency_access_accounts=["BG1@Contoso.nl", by_id.id]))
    assert result == {"PIM-PERMANENT-ACTIVE": {"bg3@contoso.nl"},
                      "PIM-NO-END-DATE": {"bg3@contoso.nl"}}


def test_emergency_account_is_exempt_for_global_admin_only() -> None:
    bg = user("bg1")
    inv = inventory(assign(bg, PRIV_ROLE_ADMIN, kind="active", end=None))
    result = fired(inv, policy(entry("bg1@contoso.nl", role="Privileged Role Administrator",
                                     kind="active"), emergency_access_accounts=[bg.id]))
    assert result == {"PIM-PERMANENT-ACTIVE": {"bg1@contoso.nl"},
                      "PIM-NO-END-DATE": {"bg1@contoso.nl"}}


def test_outside_pim_assignment_says_so() -> None:
    legacy = user("legacy")
    findings = evaluate(inventory(assign(legacy, kind="active", end=None, outside=True)),
                        policy(), mfa={legacy.id: True}, now=NOW, tz=TZ).findings
    assert {f.rule for f in findings} == {"PIM-PERMANENT-ACTIVE", "PIM-NO-END-DATE",
                                          "PIM-UNAPPROVED"}
    assert all("made outside PIM" in f.detail for f in findings)


# ---- the register: PIM-UNAPPROVED / PIM-REGISTER-EXPIRED ----------------------------------------

def test_register_matching() -> None:
    ok, kind, role, late, ended, outlives, grp, app_ = (
        user("ok"), user("kind"), user("role"), user("late"), user("ended"),
        user("outlives"), group("grp"), app("app"))
    inv = inventory(
        assign(ok),
        assign(kind, kind="active"),  # registered as eligible only
        assign(role),  # registered for another role
        assign(late),  # the entry starts tomorrow
        assign(ended),  # the entry ended yesterday
        assign(outlives, end=NOW + 300 * DAY),  # ends after the entry
        assign(grp), assign(app_, kind="active"),  # by object id
    )
    result = fired(inv, policy(
        entry("OK@contoso.nl"), entry("kind@contoso.nl"),
        entry("role@contoso.nl", role="Billing Administrator"),
        entry("late@contoso.nl", start=TODAY + DAY),
        entry("ended@contoso.nl", start=TODAY - 400 * DAY, end=TODAY - DAY),
        entry("outlives@contoso.nl"),
        entry(grp.id, role=EXCHANGE_ADMIN), entry(app_.id, kind="active"),
    ))
    assert result == {
        "PIM-UNAPPROVED": {"kind@contoso.nl", "role@contoso.nl", "late@contoso.nl"},
        "PIM-REGISTER-EXPIRED": {"ended@contoso.nl", "outlives@contoso.nl"},
    }


def test_register_end_date_covers_the_whole_day_local_or_utc() -> None:
    end = TODAY + 30 * DAY
    next_utc_midnight = datetime(end.year, end.month, end.day, tzinfo=UTC) + DAY
    ok_utc, ok_local, late = user("ok-utc"), user("ok-local"), user("late")
    inv = inventory(
        assign(ok_utc, end=next_utc_midnight),  # 01:00 local: the UTC reading holds
        assign(ok_local, end=datetime(end.year, end.month, end.day, 23, 59, tzinfo=TZ)),
        assign(late, end=next_utc_midnight + timedelta(minutes=1)),
    )
    result = fired(inv, policy(*(entry(u.upn or "", end=end)
                                 for u in (ok_utc, ok_local, late))))
    assert result == {"PIM-REGISTER-EXPIRED": {"late@contoso.nl"}}


def test_no_end_date_under_a_current_entry_is_only_no_end_date() -> None:
    forever = user("forever")
    result = fired(inventory(assign(forever, end=None)), policy(entry("forever@contoso.nl")))
    assert result == {"PIM-NO-END-DATE": {"forever@contoso.nl"}}


def test_activation_is_covered_by_the_eligible_assignment() -> None:
    alice, bob = user("alice"), user("bob")
    inv = inventory(
        assign(alice), assign(alice, kind="active", activated=True, end=NOW + DAY),
        assign(bob, kind="active", activated=True, end=NOW + DAY),  # eligibility gone
    )
    result = fired(inv, policy(entry("alice@contoso.nl")))
    assert result == {"PIM-UNAPPROVED": {"bob@contoso.nl"}}
    # without an eligible instance, an entry of either kind covers the activation
    assert fired(inv, policy(entry("alice@contoso.nl"),
                             entry("bob@contoso.nl", kind="active"))) == {}


def test_scope_key_narrows_an_entry() -> None:
    au = "/administrativeUnits/4f1c"
    alice = user("alice")
    inv = inventory(assign(alice, scope=au))
    assert fired(inv, policy(entry("alice@contoso.nl", scope=au))) == {}
    assert fired(inv, policy(entry("alice@contoso.nl", scope="/"))) == {
        "PIM-UNAPPROVED": {"alice@contoso.nl"}}


def test_unmatched_register_entries_are_reported() -> None:
    alice = user("alice")
    evaluation = evaluate(inventory(assign(alice)),
                          policy(entry("alice@contoso.nl"), entry("gone@contoso.nl",
                                                                  reference="RFC-9")),
                          mfa={alice.id: True}, now=NOW, tz=TZ)
    assert [e.reference for e in evaluation.unmatched_entries] == ["RFC-9"]


# ---- PIM-GUEST-ADMIN / PIM-ADMIN-NO-MFA ---------------------------------------------------------

def test_guests_and_mfa_per_holder_through_groups_too() -> None:
    guest, direct_guest, nomfa, norow, ok, bot = (
        user("guest", guest=True), user("dguest", guest=True), user("nomfa"), user("norow"),
        user("ok"), app("bot"))
    admins = group("admins")
    inv = inventory(
        assign(admins),
        assign(direct_guest), assign(direct_guest, role=BILLING_ADMIN),  # one finding
        assign(nomfa), assign(norow), assign(ok), assign(bot),
        members={admins.id: (guest, ok)},
    )
    register = [entry(admins.id), entry(bot.id)] + [
        entry(u.upn or "") for u in (direct_guest, nomfa, norow, ok)] + [
        entry("dguest@contoso.nl", role="Billing Administrator")]
    mfa: dict[str, bool | None] = {guest.id: True, direct_guest.id: True, nomfa.id: False,
                                   norow.id: None, ok.id: True}
    evaluation = evaluate(inv, policy(*register), mfa=mfa, now=NOW, tz=TZ)
    by_rule: dict[str, dict[str, str]] = {}
    for f in evaluation.findings:
        by_rule.setdefault(f.rule, {})[str(f.subject.name)] = f.detail
    assert set(by_rule) == {"PIM-GUEST-ADMIN", "PIM-ADMIN-NO-MFA"}
    assert set(by_rule["PIM-GUEST-ADMIN"]) == {"guest@contoso.nl", "dguest@contoso.nl"}
    assert "via group admins" in by_rule["PIM-GUEST-ADMIN"]["guest@contoso.nl"]
    assert "Billing Administrator" in by_rule["PIM-GUEST-ADMIN"]["dguest@contoso.nl"]
    assert "Exchange Administrator" in by_rule["PIM-GUEST-ADMIN"]["dguest@contoso.nl"]
    assert set(by_rule["PIM-ADMIN-NO-MFA"]) == {"nomfa@contoso.nl", "norow@contoso.nl"}
    assert by_rule["PIM-ADMIN-NO-MFA"]["nomfa@contoso.nl"].startswith("not registered")
    assert by_rule["PIM-ADMIN-NO-MFA"]["norow@contoso.nl"].startswith("no MFA registration")
    severities = {f.rule: f.severity for f in evaluation.findings}
    assert severities == {"PIM-GUEST-ADMIN": "medium", "PIM-ADMIN-NO-MFA": "high"}


def test_disabled_holder_is_named_disabled() -> None:
    gone = user("gone", enabled=False)
    findings = evaluate(inventory(assign(gone)), policy(), mfa={}, now=NOW,
                        tz=TZ).findings
    assert {f.rule for f in findings} == {"PIM-UNAPPROVED", "PIM-ADMIN-NO-MFA"}
    assert all("[account disabled]" in f.detail for f in findings)


# ---- which roles count --------------------------------------------------------------------------

def test_roles_in_scope_narrowed_to_microsoft_privileged() -> None:
    billing, exchange, pra, custom = user("billing"), user("exchange"), user("pra"), user("c")
    inv = inventory(assign(billing, BILLING_ADMIN), assign(exchange, EXCHANGE_ADMIN),
                    assign(pra, PRIV_ROLE_ADMIN), assign(custom, CUSTOM_ROLE))
    everything = fired(inv, policy(), mfa={})
    assert everything["PIM-UNAPPROVED"] == everything["PIM-ADMIN-NO-MFA"] == {
        "billing@contoso.nl", "exchange@contoso.nl", "pra@contoso.nl", "c@contoso.nl"}
    narrowed = fired(inv, policy(roles_in_scope="microsoft-privileged"), mfa={})
    # a custom role Graph gives no privileged label stays in scope
    assert narrowed["PIM-UNAPPROVED"] == narrowed["PIM-ADMIN-NO-MFA"] == {
        "pra@contoso.nl", "c@contoso.nl"}


def test_graph_is_privileged_flag_wins_over_the_table() -> None:
    flagged = definition_from({"id": CUSTOM_ROLE, "displayName": "X", "isPrivileged": False})
    assert flagged.privileged is False
    assert definition_from({"id": BILLING_ADMIN, "templateId": BILLING_ADMIN,
                            "displayName": "Billing Administrator"}).privileged is False
    assert definition_from({"id": GLOBAL_READER, "displayName": "GR"}).privileged is True


# ---- PIM-READER-MISSING -------------------------------------------------------------------------

def test_functional_administrators_need_global_reader() -> None:
    direct, via_group, elig, other_role, missing = (
        user("direct"), user("viagroup"), user("elig"), user("other"), user("missing"))
    readers = group("readers")
    inv = inventory(
        assign(direct, GLOBAL_READER, kind="active"),
        assign(readers, GLOBAL_READER, kind="active"),
        assign(elig, GLOBAL_READER),
        assign(other_role, EXCHANGE_ADMIN),
        members={readers.id: (via_group,)},
    )
    pol = policy(functional_administrators=[
        "direct@contoso.nl", via_group.id, "ELIG@contoso.nl", "other@contoso.nl",
        "missing@contoso.nl", "nobody@contoso.nl"])
    evaluation = evaluate(inv, pol, mfa={}, now=NOW, tz=TZ,
                          users={"missing@contoso.nl": missing, "nobody@contoso.nl": None})
    reader = {str(f.subject.name): f for f in evaluation.findings
              if f.rule == "PIM-READER-MISSING"}
    assert set(reader) == {"other@contoso.nl", "missing@contoso.nl", "nobody@contoso.nl"}
    assert reader["missing@contoso.nl"].subject.id == missing.id
    assert reader["nobody@contoso.nl"].detail.endswith("not found in the tenant")
    assert reader["other@contoso.nl"].severity == "low"


# ---- mapping Graph JSON ---------------------------------------------------------------------

def test_principal_from_graph_json() -> None:
    guest = principal_from({"@odata.type": "#microsoft.graph.user", "id": "ABC",
                            "userPrincipalName": "x#EXT#@contoso.nl", "userType": "Guest",
                            "accountEnabled": True, "displayName": "X"})
    assert guest is not None and guest.is_guest and guest.id == "abc"
    sp = principal_from({"@odata.type": "#microsoft.graph.servicePrincipal", "id": "s",
                         "displayName": "App", "userPrincipalName": "ignored"})
    assert sp is not None and sp.type == "servicePrincipal" and sp.upn is None
    assert principal_from(None) is None and principal_from({"displayName": "no id"}) is None


# ---- the export -------------------------------------------------------------------------------

def test_export_rows_list_every_holding_with_its_findings() -> None:
    admins, alice, guest, bot = group("admins"), user("alice"), user("g", guest=True), app("b")
    inv = inventory(
        assign(admins, GLOBAL_ADMINISTRATOR, ident="grp"),
        assign(guest, ident="guest"),
        assign(bot, kind="active", end=None, ident="bot"),
        members={admins.id: (alice,)},
    )
    pol = policy(entry(admins.id, role="Global Administrator", reference="RFC-7"),
                 global_admin_count=2)
    mfa: dict[str, bool | None] = {alice.id: True, guest.id: False}
    evaluation = evaluate(inv, pol, mfa=mfa, now=NOW, tz=TZ)
    rows = export_rows(evaluation, mfa)
    assert len(rows) == 4
    table = {(r["holder_name"], r["role"]): r for r in rows}
    member = table[("alice@contoso.nl", "Global Administrator")]
    assert member["path"] == "group" and member["group_name"] == "admins"
    assert member["register_reference"] == "RFC-7" and member["mfa_registered"] == "true"
    assert member["findings"] == "PIM-GA-COUNT"  # one holder of two
    assert member["start"] == "2026-02-16T09:00:00Z" and member["kind"] == "eligible"
    the_group = table[("admins", "Global Administrator")]
    assert the_group["path"] == "direct" and the_group["mfa_registered"] == ""
    g = table[("g@contoso.nl", "Exchange Administrator")]
    assert g["findings"] == "PIM-ADMIN-NO-MFA;PIM-GUEST-ADMIN;PIM-UNAPPROVED"
    assert g["user_type"] == "Guest" and g["mfa_registered"] == "false"
    b = table[("b", "Exchange Administrator")]
    assert b["assignment_type"] == "permanent" and b["end"] == ""
    assert b["findings"] == "PIM-NO-END-DATE;PIM-PERMANENT-ACTIVE;PIM-UNAPPROVED"
    parsed = list(csv.DictReader(io.StringIO(render_csv(rows).decode())))
    assert tuple(parsed[0]) == EXPORT_COLUMNS and parsed == rows
