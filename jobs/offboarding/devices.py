"""Which remote action fits a leaver's device: one pure table, then the once-only check.

The table (first matching row wins), from Microsoft's device-action pages:
- a Windows 365 Cloud PC is enrolled in Intune like a PC, but it is not wiped: it is
  deprovisioned when its licence goes, after a grace period of up to seven days
  (learn.microsoft.com/graph/api/cloudpc-endgraceperiod; resources/cloudpc). Intune lists it
  with model "Cloud PC ..." (managedDevice has no Cloud PC flag in v1.0);
- a record not managed through MDM (managementAgent eas, configurationManagerClient,
  msSense, jamf, googleCloudDevicePolicyController, intuneClient, ...) cannot carry out an
  Intune wipe or retire: the command is never delivered, and the leaver would stay stuck;
- Linux: Intune's remote wipe supports Android Enterprise, AOSP, ChromeOS, iOS/iPadOS,
  macOS and Windows, not Linux (learn.microsoft.com/intune/intune-service/remote-actions/
  device-wipe; device-management/actions): a person collects and wipes the laptop;
- Windows, macOS, iOS/iPadOS, Android under MDM: company-owned -> wipe; personal ->
  retire (company data and management removed, own data kept); unknown ownership ->
  retire (never wipe what may be someone's own phone);
- anything else (an OS this table does not know) -> no remote action, a person decides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from agent.graph import lifecycle
from agent.graph.lifecycle import ManagedDevice
from agent.ledger import LeaverRecord

DeviceAction = Literal["wipe", "retire"]
Kind = Literal["wipe", "retire", "none", "manual"]

# managementAgent values under which Intune's MDM channel delivers wipe/retire
MDM_AGENTS = frozenset({"mdm", "easMdm", "configurationManagerClientMdm",
                        "configurationManagerClientMdmEas"})
MDM_PLATFORMS = ("windows", "macos", "ios", "ipados", "android")
# managementState values in which a wipe/retire may be sent
ACTIONABLE_STATES = frozenset({"managed", "unhealthy"})
FAILED_STATES = frozenset({"wipeFailed", "wipeCanceled", "retireFailed", "retireCanceled"})
IDLE_STATES = frozenset({"deletePending", "discovered"})


@dataclass(frozen=True)
class Fit:
    kind: Kind
    why: str  # for a reason line, or (manual) what a person must do


def _os(device: ManagedDevice) -> str:
    return (device.operating_system or "").strip().lower()


def is_cloud_pc(device: ManagedDevice) -> bool:
    return (device.model or "").strip().lower().startswith("cloud pc")


def _mdm_platform(device: ManagedDevice) -> bool:
    return any(_os(device).startswith(p) for p in MDM_PLATFORMS)


Row = tuple[str, Callable[[ManagedDevice], bool], Callable[[ManagedDevice], Fit]]

TABLE: tuple[Row, ...] = (
    ("cloud-pc", is_cloud_pc, lambda d: Fit(
        "none", "a Windows 365 Cloud PC goes with the account: it is deprovisioned when its "
        "licence is removed (after the grace period), not wiped")),
    ("not-mdm", lambda d: d.management_agent not in MDM_AGENTS, lambda d: Fit(
        "manual", f"managementAgent {d.management_agent!r} is not Intune MDM, so no remote "
        "wipe or retire can reach it: collect the device, wipe it by hand (or in the tool "
        "that manages it) and delete its record")),
    ("linux", lambda d: _os(d).startswith("linux"), lambda d: Fit(
        "manual", "Intune has no remote wipe or retire for Linux: collect the laptop, wipe "
        "it by hand and delete its Intune record")),
    ("company", lambda d: _mdm_platform(d) and d.owner_type == "company", lambda d: Fit(
        "wipe", "company-owned: wipe")),
    ("personal", lambda d: _mdm_platform(d) and d.owner_type == "personal", lambda d: Fit(
        "retire", "personal (BYOD): retire, never wipe")),
    ("unknown-owner", _mdm_platform, lambda d: Fit(
        "retire", f"ownership {d.owner_type!r}: retire (only company-owned devices are "
        "wiped)")),
    ("unknown-os", lambda d: True, lambda d: Fit(
        "manual", f"operating system {d.operating_system!r} is not one this agent sends "
        "remote actions to: check the device and remove company data by hand")),
)


def fit(device: ManagedDevice) -> Fit:
    """The remote action that fits `device` by kind alone (pure, table-driven)."""
    for _name, matches, outcome in TABLE:
        if matches(device):
            return outcome(device)
    raise AssertionError("the table's last row matches everything")


@dataclass(frozen=True)
class DeviceStep:
    device: ManagedDevice
    action: DeviceAction | None  # None: nothing to send
    observed: str | None = None  # already wiping/retiring: record it in the ledger only
    warning: str | None = None
    manual: str | None = None  # OFF-MANUAL-TASK: what a person must do
    note: str | None = None  # why nothing is sent (Cloud PC), for a skipped entry
    reason: str = ""


def plan_device(device: ManagedDevice, record: LeaverRecord | None) -> DeviceStep:
    """What to do with one managed device of a leaver. Each device is actioned once: the
    ledger says we sent it; managementState / deviceActionResults say a wipe/retire is under
    way (also after a crash that lost our answer: an unsettled intent is re-checked here)."""
    done = record.devices.get(device.id) if record is not None else None
    state = device.management_state
    if done is not None:
        warning = None
        if state in FAILED_STATES:
            warning = (f"device {device.name}: the {done.action} sent on "
                       f"{done.at.date().isoformat()} is now {state}; not sent again "
                       "automatically: check it in Intune")
        return DeviceStep(device, None, warning=warning)
    if state in lifecycle.WIPING or "wipe" in device.actions_in_progress:
        return DeviceStep(device, None, observed="wipe")
    if state in lifecycle.RETIRING or "retire" in device.actions_in_progress:
        return DeviceStep(device, None, observed="retire")
    kind = fit(device)
    if kind.kind == "none":
        return DeviceStep(device, None, note=kind.why)
    if kind.kind == "manual":
        return DeviceStep(device, None, manual=kind.why)
    if state in FAILED_STATES:
        return DeviceStep(device, None, warning=(
            f"device {device.name}: managementState {state} (a wipe/retire by someone else "
            "failed or was cancelled); not sent automatically: check it in Intune"))
    if state in IDLE_STATES:
        return DeviceStep(device, None)  # deletePending, discovered: nothing to send
    if state not in ACTIONABLE_STATES:
        return DeviceStep(device, None, warning=(
            f"device {device.name}: managementState {state!r} is unknown to this agent; "
            "not wiped or retired: check it in Intune"))
    action: DeviceAction = "wipe" if kind.kind == "wipe" else "retire"
    return DeviceStep(device, action, reason=kind.why)
