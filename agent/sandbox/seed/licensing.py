"""Demo-tenant seed for the active-user count: every licensing case the count must get right.

Each user below is built for one case; `EXPECTED` says what `active-users` must make of
it (category, counted) and why, and the tests assert exactly that. Base staff
(`seed/base.py`) are the ordinary cases; these are the awkward ones: group-based
licences, doubles, failed assignments (the tenant ran out of seats), disabled accounts,
exclusions, add-ons that are not a seat, guests, shared mailboxes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from agent.sandbox import builders as b
from agent.sandbox.seed.base import (
    ENTERPRISEPREMIUM,
    EXCHANGEDESKLESS,
    EXCHANGEENTERPRISE,
    EXCHANGESTANDARD,
    IDENTITY_THREAT_PROTECTION,
    POWER_BI_PRO,
    SPE_E5,
)

if TYPE_CHECKING:
    from agent.sandbox.tenant import SandboxTenant

# SKUs only this seed uses (real ids, graph-reference/licensing-service-plan-reference.csv)
M365_E5_EEA_NO_TEAMS = "3271cf8e-2be5-4a09-a549-70fd05baaa17"  # O365_w/o_Teams_Bundle_M5
INFORMATION_PROTECTION_COMPLIANCE = "184efa21-98c3-4e5d-95ab-d07053a96e67"  # E5 Compliance
EXTRA_SKUS: tuple[tuple[str, str, int], ...] = (
    (M365_E5_EEA_NO_TEAMS, "O365_w/o_Teams_Bundle_M5", 5),
    (INFORMATION_PROTECTION_COMPLIANCE, "INFORMATION_PROTECTION_COMPLIANCE", 5),
)

D = b.DOMAIN
E5_GROUP = "Licentie - Microsoft 365 E5"
E5_GROUP_2 = "Afdeling Juridisch"  # a second group that also hands out E5
KIOSK_GROUP = "Licentie - Exchange Kiosk winkels"
EXO_GROUP = "Licentie - Exchange Plan 1"
SENDER = f"dap-agent@{D}"  # the shared mailbox the overview is mailed from
SERVICE_MANAGER = f"servicemanager@{D}"
EXCLUDED_BY_UPN = f"scan.mailbox@{D}"
EXCLUDED_BY_ID_UPN = f"vergaderzaal.amstel@{D}"
GUEST_UPN = "jan_partner.example#EXT#@contosonl.onmicrosoft.com"
GUEST_LICENSED_UPN = "kim_leverancier.example#EXT#@contosonl.onmicrosoft.com"


class Expected(NamedTuple):
    category: str | None  # None: no licence at all, so not a row of the export
    counted: bool
    why: str


def group_id(name: str) -> str:
    return b.oid(f"group:{name}")


def user_id(upn: str) -> str:
    return b.oid(f"user:{upn.lower()}")


# UPN -> what active-users must conclude (with DEMO_POLICY and the default SKU sets).
EXPECTED: dict[str, Expected] = {
    f"gea.groep@{D}": Expected("e5", True, "E5 inherited from a group only"),
    f"dirk.dubbel@{D}": Expected("e5", True, "E5 direct and via a group: counted once"),
    f"gert.tweegroepen@{D}": Expected("e5", True, "E5 via two groups: counted once"),
    f"esther.beide@{D}": Expected("e5", True, "E5 plus Exchange Plan 1: E5 wins, once"),
    f"olga.office@{D}": Expected("e5", True, "Office 365 E5 is a full E5 seat"),
    f"nina.zonderteams@{D}": Expected("e5", True, "Microsoft 365 E5 EEA (no Teams)"),
    f"fleur.fout@{D}": Expected(
        "other", False, "group E5 in state Error (CountViolation): not a held licence"),
    f"frank.terugval@{D}": Expected(
        "exchange-only", True, "E5 failed (CountViolation), Exchange Plan 2 held"),
    f"mila.metfout@{D}": Expected(
        "other", False, "E5 in state ActiveWithError: not Active, so not held"),
    f"wim.uitdienst@{D}": Expected("e5", False, "E5 but account disabled"),
    f"wendy.winkel@{D}": Expected("exchange-only", True, "Exchange Kiosk via a group"),
    f"bert.exchange@{D}": Expected("exchange-only", True, "Exchange Plan 1 via a group"),
    EXCLUDED_BY_UPN: Expected("e5", False, "in exclude_users by UPN"),
    EXCLUDED_BY_ID_UPN: Expected("exchange-only", False, "in exclude_users by object id"),
    f"otto.security@{D}": Expected("other", False, "E5 Security add-on only: not a seat"),
    f"carla.compliance@{D}": Expected("other", False, "E5 Compliance add-on only"),
    f"paul.powerbi@{D}": Expected("other", False, "Power BI Pro only"),
    f"lisa.geenlicentie@{D}": Expected(None, False, "no licence at all"),
    SENDER: Expected(None, False, "shared mailbox: disabled, no licence"),
    SERVICE_MANAGER: Expected("e5", True, "ordinary E5 user (receives the overview)"),
    GUEST_UPN: Expected(None, False, "guest without a licence"),
    GUEST_LICENSED_UPN: Expected(
        "exchange-only", True, "guest holding Exchange Kiosk: a seat (count_guests)"),
}

DEMO_POLICY: dict[str, Any] = {
    "active_users": {
        "exclude_users": [EXCLUDED_BY_UPN, user_id(EXCLUDED_BY_ID_UPN)],
        "deliver_to": [SERVICE_MANAGER],
        "sender": SENDER,
    },
}


def seed(tenant: SandboxTenant, now: datetime) -> None:
    for sku_id, part, units in EXTRA_SKUS:
        if tenant.get("subscribedSkus", f"{b.TENANT_ID}_{sku_id}") is None:
            tenant.add("subscribedSkus", b.subscribed_sku(sku_id, part, units, 0))
    created = now - timedelta(days=200)
    e5_group, e5_group_2 = group_id(E5_GROUP), group_id(E5_GROUP_2)
    kiosk_group, exo_group = group_id(KIOSK_GROUP), group_id(EXO_GROUP)

    def add(upn: str, name: str, **kwargs: Any) -> str:
        return str(tenant.add("users", b.user(upn, name, created=created, **kwargs))["id"])

    def via(sku: str, group: str | None = None, **state: Any) -> dict[str, Any]:
        return {"skuId": sku, "assignedByGroup": group, **state}

    count_violation = {"state": "Error", "error": "CountViolation"}
    members: dict[str, list[str]] = {e5_group: [], e5_group_2: [], kiosk_group: [],
                                     exo_group: []}

    members[e5_group].append(add(f"gea.groep@{D}", "Gea Groep",
                                 license_states=[via(SPE_E5, e5_group)]))
    members[e5_group].append(add(f"dirk.dubbel@{D}", "Dirk Dubbel",
                                 license_states=[via(SPE_E5), via(SPE_E5, e5_group)]))
    gert = add(f"gert.tweegroepen@{D}", "Gert Tweegroepen",
               license_states=[via(SPE_E5, e5_group), via(SPE_E5, e5_group_2)])
    members[e5_group].append(gert)
    members[e5_group_2].append(gert)
    add(f"esther.beide@{D}", "Esther Beide", licenses=[SPE_E5, EXCHANGESTANDARD])
    add(f"olga.office@{D}", "Olga Office", licenses=[ENTERPRISEPREMIUM])
    add(f"nina.zonderteams@{D}", "Nina Zonderteams", licenses=[M365_E5_EEA_NO_TEAMS])
    # The tenant ran out of E5 seats: group-based assignment failed (assignedLicenses empty).
    members[e5_group].append(add(f"fleur.fout@{D}", "Fleur Fout",
                                 license_states=[via(SPE_E5, e5_group, **count_violation)]))
    members[e5_group].append(add(
        f"frank.terugval@{D}", "Frank Terugval",
        license_states=[via(SPE_E5, e5_group, **count_violation), via(EXCHANGEENTERPRISE)]))
    add(f"mila.metfout@{D}", "Mila Metfout",
        license_states=[via(SPE_E5, state="ActiveWithError",
                            error="ProhibitedInUsageLocationViolation")])
    add(f"wim.uitdienst@{D}", "Wim Uitdienst", licenses=[SPE_E5], enabled=False)
    members[kiosk_group].append(add(f"wendy.winkel@{D}", "Wendy Winkel",
                                    license_states=[via(EXCHANGEDESKLESS, kiosk_group)]))
    members[exo_group].append(add(f"bert.exchange@{D}", "Bert Exchange",
                                  license_states=[via(EXCHANGESTANDARD, exo_group)]))
    add(EXCLUDED_BY_UPN, "Scan Mailbox", licenses=[SPE_E5])
    add(EXCLUDED_BY_ID_UPN, "Vergaderzaal Amstel", licenses=[EXCHANGESTANDARD])
    add(f"otto.security@{D}", "Otto Security", licenses=[IDENTITY_THREAT_PROTECTION])
    add(f"carla.compliance@{D}", "Carla Compliance",
        licenses=[INFORMATION_PROTECTION_COMPLIANCE])
    add(f"paul.powerbi@{D}", "Paul Powerbi", licenses=[POWER_BI_PRO])
    add(f"lisa.geenlicentie@{D}", "Lisa Geenlicentie")
    add(SENDER, "DAP Agent (gedeelde mailbox)", enabled=False)
    add(SERVICE_MANAGER, "Service Manager", licenses=[SPE_E5])
    add(GUEST_UPN, "Jan (Partner)", user_type="Guest")
    add(GUEST_LICENSED_UPN, "Kim (Leverancier)", user_type="Guest",
        licenses=[EXCHANGEDESKLESS])

    licences = {e5_group: SPE_E5, e5_group_2: SPE_E5, kiosk_group: EXCHANGEDESKLESS,
                exo_group: EXCHANGESTANDARD}
    for name in (E5_GROUP, E5_GROUP_2, KIOSK_GROUP, EXO_GROUP):
        gid = group_id(name)
        tenant.add("groups", b.group(name, members=members[gid], assignedLicenses=[
            {"disabledPlans": [], "skuId": licences[gid]}]))
