"""Demo-tenant seed for the secure-score job: 90 days of Microsoft Secure Score history.

Graph keeps one secureScore per day for 90 days (learn.microsoft.com/graph/api/resources/
securescore), created once a day; the object's shape follows Microsoft's documented example
(graph-reference/examples/security-list-securescores.json) and the v1.0 CSDL. The controls
are real Secure Score control names; the tenant improves over the quarter as the provider
switches controls on (`IMPROVEMENTS`), so the trend has something to show. `currentScore`
is the sum of the control scores, as in the portal; `maxScore` is what all controls allow.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from agent.sandbox.builders import TENANT_ID
from agent.sandbox.tenant import SandboxTenant

DAYS = 90
CREATED_AT = time(1, 32, 17)  # Microsoft computes the day's score overnight (UTC)

# (controlName, controlCategory, max points, points at the start, description)
CONTROLS: tuple[tuple[str, str, float, float, str], ...] = (
    ("AdminMFAV2", "Identity", 10.0, 10.0,
     "Ensure multifactor authentication is enabled for all users in administrative roles"),
    ("MFARegistrationV2", "Identity", 9.0, 6.3,
     "Ensure all users can complete multifactor authentication for secure access"),
    ("BlockLegacyAuthentication", "Identity", 8.0, 0.0,
     "Enable Conditional Access policies to block legacy authentication"),
    ("SelfServicePasswordReset", "Identity", 1.0, 1.0,
     "Enable self-service password reset"),
    ("PWAgePolicyNew", "Identity", 8.0, 8.0,
     "Set the password expiration policy to never expire"),
    ("OneAdmin", "Identity", 1.0, 1.0,
     "Designate more than one global admin"),
    ("RoleOverlap", "Identity", 1.0, 0.0,
     "Use least privileged administrative roles"),
    ("IntegratedApps", "Identity", 4.0, 0.0,
     "Do not allow users to grant consent to unreliable applications"),
    ("mdo_safelinksforOfficeApps", "Apps", 9.0, 9.0,
     "Ensure Safe Links for Office applications is enabled"),
    ("mdo_safeattachments", "Apps", 8.0, 0.0,
     "Turn on Safe Attachments in block mode"),
    ("exo_mailboxaudit", "Data", 5.0, 5.0,
     "Ensure mailbox auditing for all users is enabled"),
    ("DLPEnabled", "Data", 10.0, 0.0,
     "Data Loss Prevention (DLP) policies can be used to comply with business standards "
     "and industry regulations."),
    ("mip_autosensitivitylabelspolicies", "Data", 6.0, 0.0,
     "Extend sensitivity labels to content automatically"),
    ("scid_2010", "Device", 9.0, 4.5,
     "Turn on Microsoft Defender Antivirus PUA protection in block mode"),
    ("scid_2501", "Device", 7.0, 7.0,
     "Turn on BitLocker for operating system drives"),
)
# controlName -> (days before today it was switched on, points from then on)
IMPROVEMENTS: dict[str, tuple[int, float]] = {
    "BlockLegacyAuthentication": (64, 8.0),
    "mdo_safeattachments": (41, 8.0),
    "MFARegistrationV2": (20, 8.1),
    "IntegratedApps": (9, 4.0),
    "DLPEnabled": (3, 5.0),
}
ENABLED_SERVICES = ("HasExchange", "HasSharePoint", "HasOD4B", "HasInTune", "HasMCAS")
LICENSED_USERS = 41

DEMO_POLICY: dict[str, Any] = {}


def max_score() -> float:
    return sum(maximum for _, _, maximum, _, _ in CONTROLS)


def score_on(days_ago: int) -> dict[str, Any]:
    """The secureScore object Graph holds for the day `days_ago` before the seed's today."""
    controls: list[dict[str, Any]] = []
    total = 0.0
    for name, category, _maximum, start, description in CONTROLS:
        points = start
        improved = IMPROVEMENTS.get(name)
        if improved is not None and days_ago <= improved[0]:
            points = improved[1]
        controls.append({"controlCategory": category, "controlName": name,
                         "description": description, "score": points})
        total += points
    current = round(total, 2)
    return {
        "azureTenantId": TENANT_ID,
        "activeUserCount": 0,  # Microsoft's own example reports 0 here too
        "currentScore": current,
        "maxScore": max_score(),
        "enabledServices": list(ENABLED_SERVICES),
        "licensedUserCount": LICENSED_USERS,
        "averageComparativeScores": [
            {"basis": "AllTenants", "averageScore": 38.4},
            {"basis": "TotalSeats", "averageScore": 44.9},
            {"basis": "IndustryTypes", "averageScore": 51.2},
        ],
        "controlScores": controls,
        "vendorInformation": {"provider": "SecureScore", "providerVersion": None,
                              "subProvider": None, "vendor": "Microsoft"},
    }


def seed(tenant: SandboxTenant, now: datetime) -> None:
    today = now.astimezone(UTC).date()
    first = 0 if now.astimezone(UTC).time() >= CREATED_AT else 1  # today's not made yet
    for days_ago in range(first, first + DAYS):
        day = today - timedelta(days=days_ago)
        created = datetime.combine(day, CREATED_AT, UTC)
        tenant.add("secureScores", {
            "id": f"{TENANT_ID}_{day.isoformat()}",
            "createdDateTime": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            **score_on(days_ago),
        })
