"""Demo-tenant seed for the privileged-roles job: role holders built to break each PIM rule.

Every assignment below is built either to stay clean or to break named rules. `EXPECTED`
maps each rule id to the exact set of (subject name, role) pairs it must fire on (role
None for the per-holder rules), and the tests assert exactly that. `CLEAN` lists the
principals that must come out with no finding at all (PIM-GA-COUNT is about the tenant,
its subject is the role). The admin accounts are unlicensed and have no devices or leave
dates, so the other jobs do not see them.

The register (`DEMO_POLICY`) holds dates, and a TOML file cannot say "today + 90 days":
`demo_policy(now)` builds it for a given clock, `DEMO_POLICY` for the real one. Current
entries span a year either side of `now` and assignments end within ~200 days, so a
clock moved by up to a few months (DAP_AGENT_NOW) keeps every rule where it is.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from agent.sandbox import builders as b
from agent.sandbox.seed import leavers

if TYPE_CHECKING:
    from agent.sandbox.tenant import SandboxTenant

D = b.DOMAIN
GA = "Global Administrator"

# Emergency-access (break-glass) accounts: permanent Global Administrator, allowed.
BREAK_GLASS_1 = f"bg-admin01@{D}"  # declared by UPN; PIM permanent assignment
BREAK_GLASS_2 = f"bg-admin02@{D}"  # declared by object id; assigned outside PIM
PROVIDER_ADMIN = f"adm-pdevries@{D}"  # approved eligible Exchange Admin, activated now
GROUP_GA_MEMBER = f"adm-mbakker@{D}"  # Global Administrator through PIM-GA-Beheer
GUEST = f"k.smits_fabrikam.nl#EXT#@{D}"  # third party: registered, but a guest
NO_MFA = f"adm-tvos@{D}"  # registered, eligible, not registered for MFA
NO_MFA_RECORD = f"adm-nieuw@{D}"  # no stored report row: the report's default, no MFA
REGISTER_ENDED = f"adm-lhendriks@{D}"  # register entry ended, assignment still there
OUTLIVES_ENTRY = f"adm-rbrouwer@{D}"  # assignment ends after its entry
UNAPPROVED = f"adm-kpeters@{D}"  # not in the register
PERMANENT = f"adm-svisser@{D}"  # registered, but permanently active
NO_END = f"adm-edekker@{D}"  # registered eligible without an end date
LEGACY = f"adm-oud@{D}"  # outside PIM, permanent, not registered
READER_DIRECT = f"fb-wsmit@{D}"  # functional admin, Global Reader eligible
READER_GROUP = f"fb-jvos@{D}"  # functional admin, Global Reader through a group
READER_MISSING = f"fb-gmulder@{D}"  # functional admin without Global Reader
# The offboarding seed's disabled leaver still holds a permanent, unregistered User
# Administrator role (through PIM) and has no MFA registration: four findings here.
LEAVER = leavers.PIM
GA_GROUP = "PIM-GA-Beheer"
READER_GROUP_NAME = "Functioneel Beheer - Lezen"
PROVISIONING_APP = "Contoso HR Provisioning"

GA_GROUP_ID = b.oid(f"group:{GA_GROUP}")
READER_GROUP_ID = b.oid(f"group:{READER_GROUP_NAME}")
PROVISIONING_APP_ID = b.oid(f"servicePrincipal:{PROVISIONING_APP}")

ADMINS: dict[str, str] = {
    BREAK_GLASS_1: "Break Glass 01",
    BREAK_GLASS_2: "Break Glass 02",
    PROVIDER_ADMIN: "ADM Pieter de Vries",
    GROUP_GA_MEMBER: "ADM Mark Bakker",
    NO_MFA: "ADM Tom Vos",
    NO_MFA_RECORD: "ADM Nieuwe Beheerder",
    REGISTER_ENDED: "ADM Lotte Hendriks",
    OUTLIVES_ENTRY: "ADM Roos Brouwer",
    UNAPPROVED: "ADM Koen Peters",
    PERMANENT: "ADM Sanne Visser",
    NO_END: "ADM Eva Dekker",
    LEGACY: "ADM Oud Account",
    READER_DIRECT: "FB Willem Smit",
    READER_GROUP: "FB Julia Vos",
    READER_MISSING: "FB Gijs Mulder",
}

# rule id -> (subject name, role name or None) pairs it must fire on, and on no other.
EXPECTED: dict[str, set[tuple[str, str | None]]] = {
    "PIM-GA-COUNT": {(GA, GA)},  # 3 holders: both break-glass accounts + the group member
    "PIM-PERMANENT-ACTIVE": {(PERMANENT, "Privileged Role Administrator"),
                             (LEGACY, "Exchange Administrator"),
                             (LEAVER, leavers.PRIVILEGED_ROLE)},
    "PIM-NO-END-DATE": {(PERMANENT, "Privileged Role Administrator"),
                        (LEGACY, "Exchange Administrator"),
                        (NO_END, "User Administrator"),
                        (LEAVER, leavers.PRIVILEGED_ROLE)},
    "PIM-UNAPPROVED": {(UNAPPROVED, "Security Administrator"),
                       (LEGACY, "Exchange Administrator"),
                       (LEAVER, leavers.PRIVILEGED_ROLE)},
    "PIM-REGISTER-EXPIRED": {(REGISTER_ENDED, "Intune Administrator"),
                             (OUTLIVES_ENTRY, "SharePoint Administrator")},
    "PIM-GUEST-ADMIN": {(GUEST, None)},
    "PIM-ADMIN-NO-MFA": {(NO_MFA, None), (NO_MFA_RECORD, None), (LEAVER, None)},
    "PIM-READER-MISSING": {(READER_MISSING, "Global Reader")},
}
# Principals that must have no finding at all.
CLEAN: set[str] = {BREAK_GLASS_1, BREAK_GLASS_2, PROVIDER_ADMIN, GROUP_GA_MEMBER, GA_GROUP,
                   PROVISIONING_APP, READER_DIRECT, READER_GROUP, READER_GROUP_NAME}
# Global Administrator holders (distinct), through the group too.
GLOBAL_ADMINS: set[str] = {BREAK_GLASS_1, BREAK_GLASS_2, GROUP_GA_MEMBER}
# Every (holder, role, kind, path) the export must list.
HOLDINGS: set[tuple[str, str, str, str]] = {
    (BREAK_GLASS_1, GA, "active", "direct"),
    (BREAK_GLASS_2, GA, "active", "direct"),
    (PROVIDER_ADMIN, "Exchange Administrator", "eligible", "direct"),
    (PROVIDER_ADMIN, "Exchange Administrator", "active", "direct"),  # the activation
    (GA_GROUP, GA, "eligible", "direct"),
    (GROUP_GA_MEMBER, GA, "eligible", "group"),
    (PROVISIONING_APP, "User Administrator", "active", "direct"),
    (GUEST, "Security Reader", "eligible", "direct"),
    (NO_MFA, "Helpdesk Administrator", "eligible", "direct"),
    (NO_MFA_RECORD, "Billing Administrator", "eligible", "direct"),
    (REGISTER_ENDED, "Intune Administrator", "eligible", "direct"),
    (OUTLIVES_ENTRY, "SharePoint Administrator", "eligible", "direct"),
    (UNAPPROVED, "Security Administrator", "eligible", "direct"),
    (PERMANENT, "Privileged Role Administrator", "active", "direct"),
    (NO_END, "User Administrator", "eligible", "direct"),
    (LEGACY, "Exchange Administrator", "active", "direct"),
    (READER_DIRECT, "Global Reader", "eligible", "direct"),
    (READER_GROUP_NAME, "Global Reader", "active", "direct"),
    (READER_GROUP, "Global Reader", "active", "group"),
    (LEAVER, leavers.PRIVILEGED_ROLE, "active", "direct"),
}
# With roles_in_scope = "microsoft-privileged", Billing Administrator (not labelled
# privileged) drops out: NO_MFA_RECORD is then clean.
NOT_PRIVILEGED_ROLES = {"Billing Administrator", "Exchange Administrator",
                        "SharePoint Administrator"}


def _approvals(reference: str) -> dict[str, Any]:
    return {"approved_by": ["customer: J. Jansen (IT-manager)", "provider: P. de Vries"],
            "reference": reference}


def demo_policy(now: datetime) -> dict[str, Any]:
    """The privileged_roles table for a clock: the register matching `seed(tenant, now)`."""
    today = now.astimezone(UTC).date()
    current = {"start": today - timedelta(days=365), "end": today + timedelta(days=365)}
    ended = {"start": today - timedelta(days=730), "end": today - timedelta(days=200)}

    def entry(principal: str, role: str, kind: str, period: dict[str, date],
              reference: str) -> dict[str, Any]:
        return {"principal": principal, "role": role, "kind": kind, **period,
                **_approvals(reference)}

    register = [
        entry(BREAK_GLASS_1, GA, "active", current, "RFC-1001"),
        entry(BREAK_GLASS_2, GA, "active", current, "RFC-1002"),
        entry(PROVIDER_ADMIN, "Exchange Administrator", "eligible", current, "RFC-1010"),
        entry(GA_GROUP_ID, "62e90394-69f5-4237-9190-012177145e10", "eligible", current,
              "RFC-1011"),  # a group by object id, the role by template id
        entry(PROVISIONING_APP_ID, "User Administrator", "active", current, "RFC-1012"),
        entry(GUEST, "Security Reader", "eligible", current, "RFC-1013"),
        entry(NO_MFA, "Helpdesk Administrator", "eligible", current, "RFC-1014"),
        entry(NO_MFA_RECORD, "Billing Administrator", "eligible", current, "RFC-1015"),
        entry(REGISTER_ENDED, "Intune Administrator", "eligible", ended, "RFC-0907"),
        entry(OUTLIVES_ENTRY, "SharePoint Administrator", "eligible", current, "RFC-1016"),
        entry(PERMANENT, "Privileged Role Administrator", "active", current, "RFC-1017"),
        entry(NO_END, "User Administrator", "eligible", current, "RFC-1018"),
        entry(READER_DIRECT, "Global Reader", "eligible", current, "RFC-1020"),
        entry(READER_GROUP_ID, "Global Reader", "active", current, "RFC-1021"),
    ]
    return {
        "privileged_roles": {
            "global_admin_count": 2,
            "emergency_access_accounts": [BREAK_GLASS_1, b.oid(f"user:{BREAK_GLASS_2}")],
            "functional_administrators": [READER_DIRECT, READER_GROUP, READER_MISSING],
            "register": register,
        },
    }


DEMO_POLICY: dict[str, Any] = demo_policy(datetime.now(UTC))


def user_id(upn: str) -> str:
    return b.oid(f"user:{upn.lower()}")


def seed(tenant: SandboxTenant, now: datetime) -> None:
    day = timedelta(days=1)
    for upn, name in ADMINS.items():
        person = tenant.add("users", b.user(upn, name, created=now - 400 * day,
                                            jobTitle="Beheerder"))
        if upn != NO_MFA_RECORD:
            tenant.add("userRegistrationDetails",
                       b.registration_details(person, mfa=upn != NO_MFA, is_admin=True))
    guest = tenant.add("users", b.user(GUEST, "Karin Smits (Fabrikam)", user_type="Guest",
                                       created=now - 200 * day))
    tenant.add("userRegistrationDetails", b.registration_details(guest, is_admin=True))
    tenant.add("groups", b.group(GA_GROUP, members=[user_id(GROUP_GA_MEMBER)],
                                 role_assignable=True))
    tenant.add("groups", b.group(READER_GROUP_NAME, members=[user_id(READER_GROUP)],
                                 role_assignable=True))
    tenant.add("servicePrincipals", b.service_principal(PROVISIONING_APP))
    for role in sorted({r for _, r, _, _ in HOLDINGS}):
        tenant.add("roleDefinitions", b.role_definition(role))

    def eligible(principal: str, role: str, *, end: datetime | None) -> None:
        tenant.add("roleEligibilityScheduleInstances",
                   b.role_eligibility_instance(principal, role, start=now - 30 * day, end=end))

    def active(principal: str, role: str, *, end: datetime | None,
               activated: bool = False) -> None:
        # Graph lists an active PIM assignment twice: as a schedule instance, and as the
        # role assignment behind it (roleAssignmentOriginId); the job must count it once.
        instance = b.role_assignment_instance(
            principal, role, start=now - (2 if activated else 60) * day, end=end,
            assignment_type="Activated" if activated else "Assigned")
        assignment = b.role_assignment(principal, role)
        if activated:
            instance["roleAssignmentOriginId"] = assignment["id"]
        tenant.add("roleAssignmentScheduleInstances", instance)
        tenant.add("roleAssignments", assignment)

    # Clean: emergency accounts' permanent Global Administrator (one through PIM, one
    # assigned directly, outside PIM: a role assignment with no schedule instance).
    active(user_id(BREAK_GLASS_1), GA, end=None)
    tenant.add("roleAssignments", b.role_assignment(user_id(BREAK_GLASS_2), GA))
    # Clean: an approved eligible assignment, activated right now for a few hours.
    eligible(user_id(PROVIDER_ADMIN), "Exchange Administrator", end=now + 150 * day)
    active(user_id(PROVIDER_ADMIN), "Exchange Administrator", end=now + timedelta(hours=4),
           activated=True)
    # Clean: Global Administrator through a role-assignable group (GA count: 3 of 2).
    eligible(GA_GROUP_ID, GA, end=now + 90 * day)
    # Clean: a service principal with a registered, time-bound active role.
    active(PROVISIONING_APP_ID, "User Administrator", end=now + 200 * day)
    # PIM-GUEST-ADMIN only: a registered third party.
    eligible(user_id(GUEST), "Security Reader", end=now + 60 * day)
    # PIM-ADMIN-NO-MFA only (Billing Administrator is not labelled privileged).
    eligible(user_id(NO_MFA), "Helpdesk Administrator", end=now + 120 * day)
    eligible(user_id(NO_MFA_RECORD), "Billing Administrator", end=now + 120 * day)
    # PIM-REGISTER-EXPIRED: the entry ended 200 days ago / the assignment outlives it.
    eligible(user_id(REGISTER_ENDED), "Intune Administrator", end=now + 60 * day)
    eligible(user_id(OUTLIVES_ENTRY), "SharePoint Administrator", end=now + 500 * day)
    # PIM-UNAPPROVED only.
    eligible(user_id(UNAPPROVED), "Security Administrator", end=now + 90 * day)
    # PIM-PERMANENT-ACTIVE + PIM-NO-END-DATE: registered, but permanent.
    active(user_id(PERMANENT), "Privileged Role Administrator", end=None)
    # PIM-NO-END-DATE only: registered eligible without an end.
    eligible(user_id(NO_END), "User Administrator", end=None)
    # Outside PIM, unregistered: PERMANENT-ACTIVE + NO-END-DATE + UNAPPROVED.
    tenant.add("roleAssignments", b.role_assignment(user_id(LEGACY), "Exchange Administrator"))
    # Functional administrators: Global Reader directly (eligible) and through a group
    # (active, time-bound); READER_MISSING holds nothing (PIM-READER-MISSING).
    eligible(user_id(READER_DIRECT), "Global Reader", end=now + 180 * day)
    active(READER_GROUP_ID, "Global Reader", end=now + 180 * day)
