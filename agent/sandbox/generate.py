"""Big generated tenants for benchmarks and scale tests.

`generate_tenant(users=100_000)` builds a deterministic (per `seed`) tenant with realistic
mixes: mostly E5 seats, some Exchange-only and unlicensed accounts, disabled accounts,
guests, leavers, group-based and failed licence assignments; Intune devices across
platforms and compliance states; Entra devices (some unmanaged); BitLocker keys for most
Windows devices; eligible and active role assignments.

Memory: objects carry only the properties Graph would return non-null (a missing one is
served as null), and identical nested values (licence lists) are shared between objects;
nothing mutates nested values in place, writes replace top-level properties.
"""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from agent.sandbox import builders as b
from agent.sandbox.seed import base
from agent.sandbox.tenant import SandboxTenant

T = TypeVar("T")

GIVEN = ("Anna", "Bram", "Claire", "Daan", "Eva", "Floor", "Gijs", "Hanna", "Ivo", "Julia",
         "Koen", "Lotte", "Maarten", "Noor", "Pieter", "Roos", "Sem", "Tess", "Ruben", "Sanne",
         "Thijs", "Femke", "Lars", "Iris", "Jeroen", "Marieke", "Wouter", "Esther")
FAMILY = ("de Vries", "Jansen", "Bakker", "Visser", "Smit", "Meijer", "Mulder", "de Boer",
          "Bos", "Vos", "Peters", "Hendriks", "van Dijk", "Dekker", "van Leeuwen", "Brouwer",
          "de Groot", "Willems", "Kok", "Jacobs", "van den Berg", "de Jong", "Koster")



class _Mix(Generic[T]):
    """A weighted choice, prepared once (choices() per item would rebuild the weights)."""

    def __init__(self, *table: tuple[T, int]) -> None:
        self.items = [item for item, _ in table]
        self.cum = list(itertools.accumulate(w for _, w in table))

    def pick(self, rng: random.Random) -> T:
        return rng.choices(self.items, cum_weights=self.cum)[0]


_LICENCE_MIX: _Mix[tuple[str, ...]] = _Mix(
    ((base.SPE_E5,), 66),
    ((base.SPE_E5, base.POWER_BI_PRO), 6),
    ((base.ENTERPRISEPREMIUM,), 3),
    ((base.EXCHANGESTANDARD,), 8),
    ((base.EXCHANGEENTERPRISE,), 3),
    ((base.EXCHANGEDESKLESS,), 6),
    ((base.FLOW_FREE,), 3),
    ((), 5),
)
_OS_MIX: _Mix[tuple[str, str]] = _Mix((("Windows", "10.0.22631.4460"), 60),
                                      (("iOS", "17.6.1"), 20), (("Android", "14"), 15),
                                      (("macOS", "14.6.1"), 5))
_COMPLIANCE_MIX: _Mix[str] = _Mix(("compliant", 85), ("noncompliant", 8), ("inGracePeriod", 3),
                                  ("unknown", 2), ("error", 1), ("conflict", 1))


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def generate_tenant(users: int = 0, managed_devices: int = 0, entra_devices: int = 0,
                    recovery_keys: int = 0, role_assignments: int = 0, seed: int = 1,
                    now: datetime | None = None) -> SandboxTenant:
    """A generated tenant of the given sizes (deterministic for a given `seed` and `now`)."""
    now = now or datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
    rng = random.Random(seed)
    tenant = SandboxTenant(now)
    for sku_id, part, _ in base.SKUS:
        tenant.add("subscribedSkus", b.subscribed_sku(
            sku_id, part, max(25, users), 0, service_plans=base.SERVICE_PLANS.get(sku_id, ())))
    for name in b.ROLE_TEMPLATES:
        tenant.add("roleDefinitions", b.role_definition(name))
    user_ids = _users(tenant, rng, users, now)
    entra = _entra_devices(tenant, rng, entra_devices, now)
    _managed_devices(tenant, rng, managed_devices, user_ids, entra, now)
    _recovery_keys(tenant, rng, recovery_keys, entra, now)
    _roles(tenant, rng, role_assignments, user_ids, now)
    tenant.touch()
    return tenant


def _users(tenant: SandboxTenant, rng: random.Random, count: int, now: datetime) -> list[str]:
    store = tenant.collections["users"]
    licence_cache: dict[tuple[str, ...], tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    licensing_group = b.oid("group:Licentie E5 (generated)")
    epoch = now - timedelta(days=1500)
    ids: list[str] = []
    for i in range(count):
        given, family = rng.choice(GIVEN), rng.choice(FAMILY)
        upn = f"{given.lower()}.{family.lower().replace(' ', '')}.{i}@{b.DOMAIN}"
        skus = _LICENCE_MIX.pick(rng)
        roll = rng.random()
        group_based = skus == (base.SPE_E5,) and roll < 0.2
        failed = skus == (base.SPE_E5,) and 0.2 <= roll < 0.21
        key = (*skus, "group" if group_based else "", "error" if failed else "")
        if key not in licence_cache:
            assigned = [] if failed else [{"disabledPlans": [], "skuId": s} for s in skus]
            states = [b.license_state(s, assigned_by_group=licensing_group if group_based or
                                      failed else None,
                                      state="Error" if failed else "Active",
                                      error="CountViolation" if failed else "None")
                      for s in skus]
            licence_cache[key] = (assigned, states)
        assigned, states = licence_cache[key]
        guest = rng.random() < 0.03
        obj: dict[str, Any] = {
            "id": _uid(rng),
            "displayName": f"{given} {family}",
            "givenName": given,
            "surname": family,
            "userPrincipalName": upn if not guest else
            f"{given.lower()}_{i}_partner.example#EXT#@{b.DOMAIN}",
            "mail": upn if not guest else f"{given.lower()}.{i}@partner.example",
            "businessPhones": [],
            "preferredLanguage": "nl-NL",
            "accountEnabled": rng.random() >= 0.05,
            "userType": "Guest" if guest else "Member",
            "createdDateTime": b.iso(epoch + timedelta(minutes=i)),
            "assignedLicenses": [] if guest else assigned,
            "licenseAssignmentStates": [] if guest else states,
        }
        if rng.random() < 0.02:
            obj["employeeLeaveDateTime"] = b.iso(now - timedelta(days=rng.randint(1, 200)))
        store[obj["id"]] = obj
        ids.append(obj["id"])
    return ids


def _entra_devices(tenant: SandboxTenant, rng: random.Random, count: int, now: datetime
                   ) -> list[dict[str, Any]]:
    store = tenant.collections["devices"]
    out = []
    for i in range(count):
        os_name, version = _OS_MIX.pick(rng)
        managed = rng.random() >= 0.08  # some Entra devices Intune does not manage
        obj: dict[str, Any] = {
            "id": _uid(rng),
            "deviceId": _uid(rng),
            "displayName": f"{'LT' if os_name == 'Windows' else os_name.upper()}-{i:06d}",
            "accountEnabled": True,
            "operatingSystem": os_name,
            "operatingSystemVersion": version,
            "isManaged": managed,
            "isCompliant": (rng.random() >= 0.1) if managed else None,
            "trustType": "AzureAd" if os_name == "Windows" else "Workplace",
            "approximateLastSignInDateTime": b.iso(now - timedelta(hours=rng.randint(1, 2000))),
            "registrationDateTime": b.iso(now - timedelta(days=rng.randint(30, 1200))),
            "deviceOwnership": "Company",
            "profileType": "RegisteredDevice",
            "manufacturer": None,
            "model": None,
        }
        store[obj["id"]] = obj
        out.append(obj)
    return out


def _managed_devices(tenant: SandboxTenant, rng: random.Random, count: int, user_ids: list[str],
                     entra: list[dict[str, Any]], now: datetime) -> None:
    store = tenant.collections["managedDevices"]
    users = tenant.collections["users"]
    linkable = [d for d in entra if d["isManaged"]]
    for i in range(count):
        link = linkable[i] if i < len(linkable) else None
        if link is not None:
            os_name, version = link["operatingSystem"], link["operatingSystemVersion"]
        else:
            os_name, version = _OS_MIX.pick(rng)
        owner = users.get(user_ids[i % len(user_ids)]) if user_ids else None
        compliance = _COMPLIANCE_MIX.pick(rng)
        obj: dict[str, Any] = {
            "@odata.type": "#microsoft.graph.managedDevice",
            "id": _uid(rng),
            "userId": owner["id"] if owner else None,
            "deviceName": link["displayName"] if link else f"MD-{i:06d}",
            "managedDeviceOwnerType": "company" if rng.random() < 0.8 else "personal",
            "enrolledDateTime": b.iso(now - timedelta(days=rng.randint(30, 1200))),
            "lastSyncDateTime": b.iso(now - timedelta(hours=rng.randint(1, 24 * 60))),
            "operatingSystem": os_name,
            "osVersion": version,
            "complianceState": compliance,
            "managementAgent": "mdm",
            "managementState": "managed",
            "azureADDeviceId": link["deviceId"] if link else _uid(rng),
            "isEncrypted": rng.random() < 0.92,
            # every property of the type is there, as Graph returns it (a $select of one
            # the objects lack is a 400 in the sandbox, as an unknown property is in Graph)
            "complianceGracePeriodExpirationDateTime": (
                b.iso(now + timedelta(days=rng.randint(-5, 5))) if compliance == "inGracePeriod"
                else "9999-12-31T23:59:59Z"),
            "model": "Latitude 7440" if os_name == "Windows" else None,
            "manufacturer": "Dell Inc." if os_name == "Windows" else None,
            "serialNumber": _uid(rng)[:12].upper(),
            "userPrincipalName": owner["userPrincipalName"] if owner else None,
            "userDisplayName": owner["displayName"] if owner else None,
            "emailAddress": owner.get("mail") if owner else None,
            "deviceActionResults": [],
        }
        store[obj["id"]] = obj


def _recovery_keys(tenant: SandboxTenant, rng: random.Random, count: int,
                   entra: list[dict[str, Any]], now: datetime) -> None:
    store = tenant.collections["recoveryKeys"]
    windows = [d for d in entra if d["operatingSystem"] == "Windows"] or entra
    for i in range(count):
        device = windows[i % len(windows)] if windows else None
        key_id = _uid(rng)
        store[key_id] = {
            "@odata.type": "#microsoft.graph.bitlockerRecoveryKey",
            "id": key_id,
            "createdDateTime": b.iso(now - timedelta(days=rng.randint(1, 900))),
            "volumeType": "1" if i < len(windows) else rng.choice(("1", "2", "3")),
            "deviceId": device["deviceId"] if device else _uid(rng),
            "key": "-".join(f"{rng.randint(0, 999999):06d}" for _ in range(8)),
        }


def _roles(tenant: SandboxTenant, rng: random.Random, count: int, user_ids: list[str],
           now: datetime) -> None:
    roles = list(b.ROLE_TEMPLATES)
    for i in range(count):
        principal = user_ids[i % len(user_ids)] if user_ids else _uid(rng)
        role = roles[i % len(roles)]
        start = now - timedelta(days=rng.randint(1, 400))
        end = None if rng.random() < 0.3 else now + timedelta(days=rng.randint(-10, 365))
        if rng.random() < 0.6:
            tenant.add("roleEligibilityScheduleInstances",
                       b.role_eligibility_instance(principal, role, start=start, end=end))
        else:
            tenant.add("roleAssignmentScheduleInstances",
                       b.role_assignment_instance(principal, role, start=start, end=end))
            tenant.add("roleAssignments", b.role_assignment(principal, role))
