"""The rule catalogue: every finding rule, its job, severity, meaning and what to do about it.

One table, read by the jobs (severity), by `dap-agent rules` and by `docs/rules.md` (generated
from it, checked in a test). A job that adds a rule adds its row here. Rule ids are stable:
they are the contract of the run report (product spec, "Finding rules").
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass
from typing import Literal

Severity = Literal["high", "medium", "low", "info"]


@dataclass(frozen=True)
class Rule:
    id: str
    job: str
    severity: Severity
    title: str  # what the finding means
    remedy: str  # what a person does about it


_RULES: tuple[Rule, ...] = (
    # ---- device-compliance (DAP device management) -------------------------------------
    Rule("DEV-UNMANAGED", "device-compliance", "high",
         "A device registered or joined in Entra ID (Windows, Linux, macOS, iOS, Android) "
         "that Intune does not manage.",
         "Enrol the device in Intune, or remove its Entra ID registration if it is no longer "
         "in use."),
    Rule("DEV-NONCOMPLIANT", "device-compliance", "medium",
         "Intune's compliance state is not compliant: noncompliant, error, conflict, unknown, "
         "or in grace period past its grace date.",
         "Open the device in Intune, see which compliance policy setting fails and fix the "
         "device (or the conflicting policies)."),
    Rule("DEV-NOT-ENCRYPTED", "device-compliance", "high",
         "Intune reports the device's storage as not encrypted (BitLocker, FileVault, "
         "device encryption).",
         "Turn on disk encryption through an Intune disk-encryption policy and check that the "
         "device reports encrypted at its next check-in."),
    Rule("DEV-NO-RECOVERY-KEY", "device-compliance", "medium",
         "A Windows device with no BitLocker recovery key escrowed in Entra ID.",
         "Have the device back up its recovery key to Entra ID (BitLocker policy 'store "
         "recovery information in Entra ID', or `BackupToAAD-BitLockerKeyProtector`)."),
    Rule("DEV-STALE", "device-compliance", "low",
         "No contact with Intune for longer than `stale_after_days` (default 30).",
         "Find out whether the device is still in use; retire or delete it in Intune if not."),
    Rule("POL-REMOVABLE-MEDIA", "device-compliance", "high",
         "No assigned Windows policy denies writing to removable drives that BitLocker does "
         "not protect.",
         "Assign a BitLocker (endpoint security) or settings-catalog policy with 'Deny write "
         "access to removable drives not protected by BitLocker' to the Windows devices."),
    # ---- privileged-roles (PIM, approved register) --------------------------------------
    Rule("PIM-GA-COUNT", "privileged-roles", "high",
         "The number of Global Administrator holders (active or eligible, users and service "
         "principals, directly or through a group) differs from `global_admin_count` "
         "(default 2).",
         "Remove the extra Global Administrator assignments, or correct "
         "`global_admin_count` and the register after approval."),
    Rule("PIM-PERMANENT-ACTIVE", "privileged-roles", "high",
         "A permanent active assignment of a privileged role whose holder is not a declared "
         "emergency-access account.",
         "Convert the assignment to PIM eligible (or give it an end date); declare "
         "emergency-access accounts in `emergency_access_accounts`."),
    Rule("PIM-NO-END-DATE", "privileged-roles", "medium",
         "An assignment (active or eligible) without an end date.",
         "Give the assignment an end date in PIM that matches its register entry."),
    Rule("PIM-UNAPPROVED", "privileged-roles", "high",
         "An assignment that is not in the approved register (no entry for principal, role "
         "and kind, or the entry's period has not begun).",
         "Remove the assignment, or record it in `[[privileged_roles.register]]` once both "
         "parties have approved it."),
    Rule("PIM-REGISTER-EXPIRED", "privileged-roles", "high",
         "An assignment that outlives its register entry: the entry has ended, or the "
         "assignment ends after it.",
         "End the assignment, or renew the register entry with a new approval."),
    Rule("PIM-GUEST-ADMIN", "privileged-roles", "medium",
         "A guest (third-party) account holds a privileged role, directly or through a group.",
         "Check that the guest's role is approved in the register and still needed; remove it "
         "otherwise."),
    Rule("PIM-ADMIN-NO-MFA", "privileged-roles", "high",
         "A holder of a privileged role is not registered for multi-factor authentication "
         "(or the MFA registration report has no row for them).",
         "Have the holder register MFA before using the role; block the role until then."),
    Rule("PIM-READER-MISSING", "privileged-roles", "low",
         "A functional administrator (`functional_administrators`) holds no Global Reader "
         "assignment.",
         "Assign Global Reader (eligible or active) to the functional administrator."),
    Rule("PIM-UNRESOLVED-PRINCIPAL", "privileged-roles", "medium",
         "A role assignment's principal cannot be found in the directory (deleted, or not "
         "readable): who holds the role is unknown. The assignment is still checked against "
         "the register under the principal's object id.",
         "Look the object id up in the Entra admin center (deleted items); remove the "
         "assignment if its principal is gone."),
    # ---- offboarding (leavers, purge) ---------------------------------------------------
    Rule("OFF-REENABLED", "offboarding", "high",
         "An account past its leave date that was enabled again: it is not purged and not "
         "disabled again, only flagged.",
         "Find out who enabled it and why; disable it to resume offboarding, or clear the "
         "leave date if the person stays."),
    Rule("OFF-LIMIT-REACHED", "offboarding", "high",
         "A safety limit (`max_disable_per_run`, `max_purge_per_run`, "
         "`max_device_actions_per_run`) stopped the run: no change of that kind was made.",
         "Check the list of leavers / purges / devices in the run report; if it is right, "
         "raise the limit for one run."),
    Rule("OFF-MANUAL-TASK", "offboarding", "medium",
         "A leaver's device or account needs a person: no remote action fits (Linux, a "
         "record not managed by MDM, an unknown kind).",
         "Do what the finding's detail says by hand (collect and wipe the device, remove the "
         "record) and note it in the ticket."),
    Rule("OFF-VETOED", "offboarding", "info",
         "A due purge (or delete) that a standing veto stops.",
         "Nothing while the veto stands; lift it with `dap-agent veto --lift USER` when the "
         "account may go."),
    Rule("OFF-PRIVILEGED-LEAVER", "offboarding", "high",
         "Graph refused to disable or delete a leaver because the account holds a privileged "
         "role (app-only callers cannot change administrators).",
         "Remove the leaver's admin roles (and PIM eligibilities); the next run then "
         "offboards the account."),
)

RULES: dict[str, Rule] = {rule.id: rule for rule in _RULES}
SEVERITY_ORDER: tuple[Severity, ...] = ("high", "medium", "low", "info")


def severity_of(rule_id: str) -> Severity:
    """The fixed severity of a rule; a KeyError for a rule not in the catalogue (a bug)."""
    return RULES[rule_id].severity


def rules_of(job: str) -> tuple[Rule, ...]:
    return tuple(rule for rule in _RULES if rule.job == job)


def catalogue_json() -> str:
    return json.dumps([asdict(rule) for rule in _RULES], indent=2, ensure_ascii=False) + "\n"


def catalogue_text(width: int = 100) -> str:
    """The human table of `dap-agent rules`: one block per rule, grouped by job."""
    indent = " " * 34
    lines: list[str] = []
    for job in dict.fromkeys(rule.job for rule in _RULES):
        lines += [f"{job}:" if not lines else f"\n{job}:"]
        for rule in rules_of(job):
            lines += textwrap.wrap(rule.title, width, initial_indent=(
                f"  {rule.id:<22} {rule.severity:<8}  "), subsequent_indent=indent)
            lines += textwrap.wrap(f"what to do: {rule.remedy}", width,
                                   initial_indent=indent, subsequent_indent=indent)
    return "\n".join(lines) + "\n"


def catalogue_markdown() -> str:
    """docs/rules.md, generated: `python -m agent.rules > docs/rules.md`."""
    out = ["# Finding rules", "",
           "Generated from `agent/rules.py` (`python -m agent.rules > docs/rules.md`); also "
           "printed by `dap-agent rules` (`--json` for scripts). Rule ids are stable; each "
           "rule's severity is fixed.", ""]
    for job in dict.fromkeys(rule.job for rule in _RULES):
        out += [f"## {job}", "", "| rule | severity | meaning | what to do |",
                "|---|---|---|---|"]
        out += [f"| `{r.id}` | {r.severity} | {r.title} | {r.remedy} |" for r in rules_of(job)]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    sys.stdout.write(catalogue_markdown())
