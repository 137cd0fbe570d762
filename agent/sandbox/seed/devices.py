"""Demo-tenant seed for the device-compliance job: devices built to break each rule.

Every device below is built either to stay clean or to break named rules; `EXPECTED` maps
each rule id to the exact set of device names (the subject `name` of the finding) it must
fire on, and the tests assert exactly that. The DAP names Windows, Linux, macOS, iOS and
Android; each appears clean at least once.

Other seeds that need an ordinary, clean device (e.g. a leaver's laptop) should use
`add_clean_device`, so that this job's findings stay exactly `EXPECTED`.

The removable-media policy: the demo has two Windows endpoint-protection profiles, one
that requires BitLocker for writing to removable drives but is not assigned, and one that
is assigned to all devices with the setting off, so POL-REMOVABLE-MEDIA fires and names
both reasons. `COMPLIANT_REMOVABLE_POLICY` builds the assigned, compliant variant for tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from agent.sandbox import builders as b

if TYPE_CHECKING:
    from agent.sandbox.tenant import SandboxTenant

LINUX_ENCRYPTION_POLICY = "Linux - require disk encryption"
LINUX_ENCRYPTION_POLICY_ID = b.oid(f"deviceCompliancePolicy:{LINUX_ENCRYPTION_POLICY}")
REMOVABLE_UNASSIGNED = "Win - BitLocker removable drives (pilot)"
REMOVABLE_OFF = "Win - Endpoint protection baseline"
CLOUD_PC_MODEL = "Cloud PC Enterprise 2vCPU/8GB/128GB"
STALE_AFTER_DAYS = 30  # the demo keeps the default
PILOT_GROUP = b.oid("group:Devices - BitLocker pilot")

DEMO_POLICY: dict[str, Any] = {
    "device_compliance": {
        "stale_after_days": STALE_AFTER_DAYS,
        "linux_encryption_policy_ids": [LINUX_ENCRYPTION_POLICY_ID],
    },
}

# rule id -> names of the devices it must fire on (and on no other).
EXPECTED: dict[str, set[str]] = {
    "DEV-UNMANAGED": {"WS-RECEPTION-01", "LNX-BUILD-02"},
    "DEV-NONCOMPLIANT": {"LT-IVO", "LT-JULIA", "LT-KOEN", "IPH-LOTTE", "LT-MAARTEN",
                         "LNX-NOOR"},
    "DEV-NOT-ENCRYPTED": {"LT-PIETER", "MBP-ROOS", "AND-SEM", "LNX-NOOR"},
    "DEV-NO-RECOVERY-KEY": {"LT-TESS", "LT-RUBEN"},
    "DEV-STALE": {"LT-SANNE", "IPH-DAAN-OLD"},
    "POL-REMOVABLE-MEDIA": {"Windows removable-drive policy"},
}
# Entra registrations the job reports separately (not DEV-UNMANAGED).
DISABLED_REGISTRATIONS = {"LT-OLD-DISABLED"}
STALE_REGISTRATIONS = {"LT-FORGOTTEN"}
OUT_OF_SCOPE = {"PRN-FLOOR2"}
CLOUD_PCS = {"CPC-GIJS"}
# Devices that must come out clean on every rule.
CLEAN = {"LT-ANNA", "LT-BRAM", "MBP-CLAIRE", "IPH-DAAN", "AND-EVA", "LNX-FLOOR",
         "CPC-GIJS", "LT-HANNA"}


def _owner(tenant: SandboxTenant, local: str) -> Mapping[str, Any] | None:
    return tenant.find_user(f"{local}@{b.DOMAIN}")


def add_managed(tenant: SandboxTenant, name: str, *, now: datetime, owner: str | None = None,
                os: str = "Windows", synced_days_ago: float = 1, os_key: bool = True,
                entra: bool = True, **extra: Any) -> dict[str, Any]:
    """An Intune device, its Entra registration and (Windows) its OS-volume key."""
    user = _owner(tenant, owner) if owner else None
    versions = {"Windows": "10.0.22631.4460", "macOS": "14.6.1", "iOS": "17.6.1",
                "Android": "14", "Linux": "22.04"}
    managed = b.managed_device(name, owner=user, os=os, os_version=versions.get(os, "1.0"),
                               last_sync=now - timedelta(days=synced_days_ago),
                               enrolled=now - timedelta(days=400), **extra)
    tenant.add("managedDevices", managed)
    if entra:
        entra_os = {"macOS": "MacMDM"}.get(os, os)
        tenant.add("devices", b.device(name, os=entra_os, os_version=managed["osVersion"],
                                       last_sign_in=now - timedelta(days=synced_days_ago),
                                       trust_type="AzureAd" if os == "Windows" else
                                       "Workplace"))
    if os == "Windows" and os_key and managed.get("isEncrypted", True):
        tenant.add("recoveryKeys", b.recovery_key(name, volume=1,
                                                  created=now - timedelta(days=390)))
    return managed


def add_clean_device(tenant: SandboxTenant, name: str, *, now: datetime,
                     owner: str | None = None, os: str = "Windows",
                     **extra: Any) -> dict[str, Any]:
    """A device that passes every device-compliance rule (for other seeds)."""
    return add_managed(tenant, name, now=now, owner=owner, os=os, **extra)


def linux_status(managed: Mapping[str, Any], status: str, now: datetime) -> dict[str, Any]:
    """A device status row with Graph's composite id `<userId>_<policyId>_<deviceId>`."""
    row = b.compliance_device_status(managed, status, reported=now - timedelta(hours=6))
    row["id"] = f"{managed.get('userId') or b.oid('user:none')}_" \
                f"{LINUX_ENCRYPTION_POLICY_ID}_{managed['id']}"
    return row


def seed(tenant: SandboxTenant, now: datetime) -> None:
    day = timedelta(days=1)

    # ---- clean: must never be flagged ----
    add_managed(tenant, "LT-ANNA", now=now, owner="anna.devries")
    add_managed(tenant, "LT-BRAM", now=now, owner="bram.jansen")
    # BRAM encrypted a USB stick: a removable-drive key (evidence, not an OS key)
    tenant.add("recoveryKeys", b.recovery_key("LT-BRAM", volume=3, created=now - 20 * day))
    add_managed(tenant, "MBP-CLAIRE", now=now, owner="claire.bakker", os="macOS",
                model="MacBook Pro (14-inch, 2023)", manufacturer="Apple")
    add_managed(tenant, "IPH-DAAN", now=now, owner="daan.visser", os="iOS",
                model="iPhone 15", manufacturer="Apple", owner_type="personal")
    add_managed(tenant, "AND-EVA", now=now, owner="eva.smit", os="Android",
                model="Pixel 8", manufacturer="Google")
    # Linux: Intune does not report isEncrypted; the encryption policy says compliant
    floor = add_managed(tenant, "LNX-FLOOR", now=now, owner="floor.meijer", os="Linux",
                        encrypted=False, model="ThinkPad T14", manufacturer="LENOVO")
    # Windows 365 Cloud PC: isEncrypted false, no BitLocker key, and still clean
    add_managed(tenant, "CPC-GIJS", now=now, owner="gijs.mulder", encrypted=False,
                model=CLOUD_PC_MODEL, manufacturer="Microsoft Corporation",
                deviceEnrollmentType="windowsAzureADJoin")
    # in grace, grace not yet over: not flagged
    add_managed(tenant, "LT-HANNA", now=now, owner="hanna.deboer", compliance="inGracePeriod",
                complianceGracePeriodExpirationDateTime=b.iso(now + 3 * day))

    # ---- DEV-NONCOMPLIANT, one per state ----
    add_managed(tenant, "LT-IVO", now=now, owner="ivo.bos", compliance="noncompliant")
    add_managed(tenant, "LT-JULIA", now=now, owner="julia.vos", compliance="error")
    add_managed(tenant, "LT-KOEN", now=now, owner="koen.peters", compliance="conflict")
    add_managed(tenant, "IPH-LOTTE", now=now, owner="lotte.hendriks", os="iOS",
                compliance="unknown", model="iPhone 14", manufacturer="Apple")
    add_managed(tenant, "LT-MAARTEN", now=now, owner="maarten.vandijk",
                compliance="inGracePeriod",
                complianceGracePeriodExpirationDateTime=b.iso(now - 2 * day))

    # ---- DEV-NOT-ENCRYPTED, per platform ----
    add_managed(tenant, "LT-PIETER", now=now, owner="pieter.vanleeuwen", encrypted=False)
    add_managed(tenant, "MBP-ROOS", now=now, owner="roos.brouwer", os="macOS", encrypted=False,
                model="MacBook Air (M2, 2022)", manufacturer="Apple")
    add_managed(tenant, "AND-SEM", now=now, owner="sem.degroot", os="Android", encrypted=False,
                model="Galaxy A54", manufacturer="samsung", owner_type="personal")
    # Linux without encryption: the policy says nonCompliant, so Intune does too
    noor = add_managed(tenant, "LNX-NOOR", now=now, owner="noor.dekker", os="Linux",
                       encrypted=False, compliance="noncompliant", model="XPS 13",
                       manufacturer="Dell Inc.")

    # ---- DEV-NO-RECOVERY-KEY ----
    add_managed(tenant, "LT-TESS", now=now, owner="tess.willems", os_key=False)
    # only a fixed-data and a removable-drive key: neither is the OS volume's
    add_managed(tenant, "LT-RUBEN", now=now, owner="ruben.kok", os_key=False)
    tenant.add("recoveryKeys", b.recovery_key("LT-RUBEN", volume=2, created=now - 100 * day))
    tenant.add("recoveryKeys", b.recovery_key("LT-RUBEN", volume=3, created=now - 50 * day))

    # ---- DEV-STALE ----
    add_managed(tenant, "LT-SANNE", now=now, owner="sanne.jacobs", synced_days_ago=45)
    add_managed(tenant, "IPH-DAAN-OLD", now=now, owner="daan.visser", os="iOS",
                synced_days_ago=STALE_AFTER_DAYS + 1, model="iPhone 12", manufacturer="Apple")

    # ---- Entra registrations without Intune ----
    tenant.add("devices", b.device("WS-RECEPTION-01", managed=False, trust_type="AzureAd",
                                   last_sign_in=now - 2 * day))
    tenant.add("devices", b.device("LNX-BUILD-02", os="Linux", os_version="24.04",
                                   managed=False, trust_type="Workplace",
                                   last_sign_in=now - 5 * day))
    # reported separately, never DEV-UNMANAGED:
    tenant.add("devices", b.device("LT-OLD-DISABLED", managed=False, enabled=False,
                                   last_sign_in=now - 10 * day))
    tenant.add("devices", b.device("LT-FORGOTTEN", managed=False, last_sign_in=now - 200 * day))
    tenant.add("devices", b.device("PRN-FLOOR2", os="Unknown", os_version="", managed=False,
                                   profileType="Printer", last_sign_in=now - day))

    # ---- policies ----
    tenant.add("deviceCompliancePolicies", b.compliance_policy(
        LINUX_ENCRYPTION_POLICY, "deviceCompliancePolicy",
        assignments=[b.assignment(LINUX_ENCRYPTION_POLICY_ID, all_devices=True)],
        device_statuses=[linux_status(floor, "compliant", now),
                         linux_status(noor, "nonCompliant", now)]))
    unassigned = b.device_configuration(
        REMOVABLE_UNASSIGNED,
        bitLockerEncryptDevice=True,
        bitLockerRemovableDrivePolicy={"encryptionMethod": "aesCbc256",
                                       "requireEncryptionForWriteAccess": True,
                                       "blockCrossOrganizationWriteAccess": False})
    tenant.add("deviceConfigurations", unassigned)
    baseline_id = b.oid(f"deviceConfiguration:{REMOVABLE_OFF}")
    tenant.add("deviceConfigurations", b.device_configuration(
        REMOVABLE_OFF,
        assignments=[b.assignment(baseline_id, all_devices=True),
                     b.assignment(baseline_id, PILOT_GROUP, exclude=True)],
        bitLockerEncryptDevice=True,
        bitLockerRemovableDrivePolicy={"encryptionMethod": "xtsAes128",
                                       "requireEncryptionForWriteAccess": False,
                                       "blockCrossOrganizationWriteAccess": False}))
    # a non-Windows profile: not a candidate
    tenant.add("deviceConfigurations", b.device_configuration(
        "iOS - restrictions", "iosGeneralDeviceConfiguration",
        assignments=[b.assignment(b.oid("deviceConfiguration:iOS - restrictions"),
                                  all_devices=True)]))


def make_removable_policy_compliant(tenant: SandboxTenant) -> str:
    """Assign the pilot removable-drive profile to all devices (for tests); its name."""
    config = tenant.get("deviceConfigurations",
                        b.oid(f"deviceConfiguration:{REMOVABLE_UNASSIGNED}"))
    if config is None:
        raise KeyError(REMOVABLE_UNASSIGNED)
    config["_assignments"] = [b.assignment(config["id"], all_devices=True)]
    tenant.touch()
    return REMOVABLE_UNASSIGNED
