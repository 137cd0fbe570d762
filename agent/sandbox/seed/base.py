"""Base of the demo tenant: the subscriptions (SKUs) and ordinary staff.

SKU ids and part numbers are Microsoft's own (graph-reference/licensing-service-plan-
reference.csv). Staff are unremarkable on purpose: licensed, enabled, no leave date, so
that every finding in the demo comes from the domain seeds, not from here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from agent.sandbox import builders as b
from agent.sandbox.tenant import SandboxTenant

# skuId constants (real ids)
SPE_E5 = "06ebc4ee-1bb5-47dd-8120-11324bc54e06"  # Microsoft 365 E5
ENTERPRISEPREMIUM = "c7df2760-2c81-4ef7-b578-5b5392b571df"  # Office 365 E5
EXCHANGESTANDARD = "4b9405b0-7788-4568-add1-99614e613b69"  # Exchange Online (Plan 1)
EXCHANGEENTERPRISE = "19ec0d23-8335-4cbd-94ac-6050e30712fa"  # Exchange Online (Plan 2)
EXCHANGEDESKLESS = "80b2d799-d2ba-4d2a-8842-fb0d0f3a4b82"  # Exchange Online Kiosk
IDENTITY_THREAT_PROTECTION = "26124093-3d78-432b-b5dc-48bf992543d5"  # M365 E5 Security add-on
POWER_BI_PRO = "f8a1db68-be16-40ed-86d5-cb42ce701560"
FLOW_FREE = "f30db892-07e9-47e9-837c-80727f46fd3d"  # Power Automate Free

# (skuId, skuPartNumber, prepaid enabled units)
SKUS: tuple[tuple[str, str, int], ...] = (
    (SPE_E5, "SPE_E5", 40),
    (ENTERPRISEPREMIUM, "ENTERPRISEPREMIUM", 5),
    (EXCHANGESTANDARD, "EXCHANGESTANDARD", 10),
    (EXCHANGEENTERPRISE, "EXCHANGEENTERPRISE", 5),
    (EXCHANGEDESKLESS, "EXCHANGEDESKLESS", 10),
    (IDENTITY_THREAT_PROTECTION, "IDENTITY_THREAT_PROTECTION", 5),
    (POWER_BI_PRO, "POWER_BI_PRO", 5),
    (FLOW_FREE, "FLOW_FREE", 10000),
)
SKU_PART_NUMBERS: dict[str, str] = {sku: part for sku, part, _ in SKUS}

# A few real service plans per SKU so `servicePlans` is not empty.
SERVICE_PLANS: dict[str, tuple[tuple[str, str], ...]] = {
    SPE_E5: (("efb87545-963c-4e0d-99df-69c6916d9eb0", "EXCHANGE_S_ENTERPRISE"),
             ("43de0ff5-c92c-492b-9116-175376d08c38", "OFFICESUBSCRIPTION"),
             ("c1ec4a95-1f05-45b3-a911-aa3fa01094f5", "INTUNE_A"),
             # Entra ID P1/P2: PIM and the MFA registration report need them
             ("41781fb2-bc02-4b7c-bd55-b576c07bb09d", "AAD_PREMIUM"),
             ("eec0eb4f-6444-4f95-aba0-50c24d67f998", "AAD_PREMIUM_P2")),
    EXCHANGESTANDARD: (("9aaf7827-d63c-4b61-89c3-182f06f82e5c", "EXCHANGE_S_STANDARD"),),
    EXCHANGEENTERPRISE: (("efb87545-963c-4e0d-99df-69c6916d9eb0", "EXCHANGE_S_ENTERPRISE"),),
    EXCHANGEDESKLESS: (("4a82b400-a79f-41a4-b4e2-e94f5787b113", "EXCHANGE_S_DESKLESS"),),
}

# (upn local part, display name, SKUs): ordinary staff of Contoso Nederland.
_E5 = (SPE_E5,)
STAFF: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("anna.devries", "Anna de Vries", (*_E5, POWER_BI_PRO)),
    ("bram.jansen", "Bram Jansen", _E5),
    ("claire.bakker", "Claire Bakker", _E5),
    ("daan.visser", "Daan Visser", (*_E5, IDENTITY_THREAT_PROTECTION)),
    ("eva.smit", "Eva Smit", _E5),
    ("floor.meijer", "Floor Meijer", _E5),
    ("gijs.mulder", "Gijs Mulder", (*_E5, FLOW_FREE)),
    ("hanna.deboer", "Hanna de Boer", _E5),
    ("ivo.bos", "Ivo Bos", _E5),
    ("julia.vos", "Julia Vos", _E5),
    ("koen.peters", "Koen Peters", _E5),
    ("lotte.hendriks", "Lotte Hendriks", (*_E5, POWER_BI_PRO)),
    ("maarten.vandijk", "Maarten van Dijk", _E5),
    ("noor.dekker", "Noor Dekker", _E5),
    ("pieter.vanleeuwen", "Pieter van Leeuwen", (ENTERPRISEPREMIUM,)),
    ("roos.brouwer", "Roos Brouwer", (EXCHANGESTANDARD,)),
    ("sem.degroot", "Sem de Groot", (EXCHANGEENTERPRISE,)),
    ("tess.willems", "Tess Willems", (EXCHANGEDESKLESS,)),
    ("ruben.kok", "Ruben Kok", (EXCHANGEDESKLESS,)),
    ("sanne.jacobs", "Sanne Jacobs", (EXCHANGESTANDARD, FLOW_FREE)),
)
STAFF_UPNS: tuple[str, ...] = tuple(f"{local}@{b.DOMAIN}" for local, _, _ in STAFF)
# Staff UPN -> the category active-users should give them.
STAFF_CATEGORY: dict[str, str] = {
    f"{local}@{b.DOMAIN}": ("e5" if SPE_E5 in skus or ENTERPRISEPREMIUM in skus
                            else "exchange-only")
    for local, _, skus in STAFF
}

DEMO_POLICY: dict[str, Any] = {}


def staff_id(local: str) -> str:
    """Object id of a staff member by UPN local part (`staff_id("anna.devries")`)."""
    return b.oid(f"user:{local}@{b.DOMAIN}")


def seed(tenant: SandboxTenant, now: datetime) -> None:
    for sku_id, part, units in SKUS:
        tenant.add("subscribedSkus",
                   b.subscribed_sku(sku_id, part, units, 0,
                                    service_plans=SERVICE_PLANS.get(sku_id, ())))
    for n, (local, name, skus) in enumerate(STAFF):
        tenant.add("users", b.user(f"{local}@{b.DOMAIN}", name, licenses=skus,
                                   created=now - timedelta(days=900 - 20 * n),
                                   department="Operations" if n % 2 else "Advies",
                                   jobTitle="Adviseur"))
        tenant.add("userRegistrationDetails",
                   b.registration_details(tenant.collections["users"][staff_id(local)],
                                          updated=now - timedelta(days=30)))
    # Every tenant has the built-in directory roles.
    for name in b.ROLE_TEMPLATES:
        tenant.add("roleDefinitions", b.role_definition(name))
    tenant.add("servicePrincipals", b.service_principal("dap-agent"))
