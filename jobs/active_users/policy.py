"""`[active_users]`: what counts as an active user, and how the month is delivered."""

from __future__ import annotations

import uuid

from pydantic import Field, field_validator, model_validator

from agent.job import Accounts, JobPolicy, MailAddresses
from agent.workdays import LiberationDay, WorkdayCalendar

# Full E5 seats, from Microsoft's licensing reference (graph-reference/licensing-service-
# plan-reference.csv, GUID column, each checked there). Not included: the E5 Security /
# Compliance add-ons, EMS E5, Windows E5, "Microsoft 365 E5 Suite features", the E5
# Developer plan, US government clouds, and the A5 education plans.
DEFAULT_E5_SKU_IDS = [
    "06ebc4ee-1bb5-47dd-8120-11324bc54e06",  # SPE_E5: Microsoft 365 E5
    "cd2925a3-5076-4233-8931-638a8c94f773",  # SPE_E5_NOPSTNCONF: M365 E5 without Audio Conf.
    "a91fc4e0-65e5-4266-aa76-4037509c1626",  # SPE_E5_CALLINGMINUTES: M365 E5 with Calling Min.
    "db684ac5-c0e7-4f92-8284-ef9ebde75d33",  # Microsoft_365_E5: M365 E5 (500 seats min)_HUB
    "2113661c-6509-4034-98bb-9c47bd28d63c",  # M365 E5 without Audio Conf. (500 seats min)_HUB
    "3271cf8e-2be5-4a09-a549-70fd05baaa17",  # O365_w/o_Teams_Bundle_M5: M365 E5 EEA (no Teams)
    "1e988bf3-8b7c-4731-bec0-4e2a2946600c",  # M365 E5 EEA (no Teams) (500 seats min)_HUB
    "6ee4114a-9b2d-4577-9e7a-49fa43d222d3",  # M365 E5 EEA (no Teams) with Calling Minutes
    "90277bc7-a6fe-4181-99d8-712b08b8d32b",  # M365 E5 EEA (no Teams) without Audio Conf.
    "a640eead-25f6-4bec-97e3-23cfd382d7c2",  # ... without Audio Conf. (500 seats min)_HUB
    "c7df2760-2c81-4ef7-b578-5b5392b571df",  # ENTERPRISEPREMIUM: Office 365 E5
    "26d45bd9-adf1-46cd-a9e1-51e9a5524128",  # ENTERPRISEPREMIUM_NOPSTNCONF: O365 E5 w/o Audio
    "cf50bae9-29e8-4775-b07c-56ee10e3776d",  # Office_365_w/o_Teams_Bundle_E5: O365 E5 EEA (no T.)
    "71772aeb-4bb8-4f74-9dd4-36c7a9b5ca74",  # O365 E5 EEA (no Teams) without Audio Conf.
]
DEFAULT_EXCHANGE_ONLY_SKU_IDS = [
    "4b9405b0-7788-4568-add1-99614e613b69",  # EXCHANGESTANDARD: Exchange Online (Plan 1)
    "19ec0d23-8335-4cbd-94ac-6050e30712fa",  # EXCHANGEENTERPRISE: Exchange Online (Plan 2)
    "80b2d799-d2ba-4d2a-8842-fb0d0f3a4b82",  # EXCHANGEDESKLESS: Exchange Online Kiosk
]
ASSIGNMENT_STATES = ("Active", "ActiveWithError", "Disabled", "Error")


def _guid(value: str) -> str:
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise ValueError(f"{value!r} is not an SKU id (a GUID such as "
                         "06ebc4ee-1bb5-47dd-8120-11324bc54e06)") from None


class Policy(JobPolicy):
    """`[active_users]`: what counts as an active user, and how the month is delivered."""

    schedule: str = Field(
        "last-working-day 07:00",
        description="when the daemon runs the count; the run on the month's last working "
                    "day delivers the month ('last-working-day HH:MM' or a cron expression)")
    e5_sku_ids: list[str] = Field(
        default_factory=lambda: list(DEFAULT_E5_SKU_IDS),
        description="SKU ids that make a user 'e5' (default: the full E5 seats)")
    exchange_only_sku_ids: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXCHANGE_ONLY_SKU_IDS),
        description="SKU ids that make a user without E5 'exchange-only' "
                    "(default: Exchange Online Plan 1, Plan 2, Kiosk)")
    count_disabled: bool = Field(
        False, description="count disabled accounts too (default: listed as licensed, "
                           "disabled, but not counted)")
    exclude_users: Accounts = Field(
        default_factory=list, description="UPNs or object ids never counted (listed with "
                                          "the reason)")
    count_guests: bool = Field(
        True, description="count guests (userType Guest) that hold an E5 or Exchange seat")
    held_states: list[str] = Field(
        default_factory=lambda: ["Active"],
        description="licenseAssignmentStates states that count as holding the licence; "
                    "others (Error: e.g. CountViolation, the tenant ran out of seats) are "
                    "listed as not held")
    deliver_to: MailAddresses = Field(
        default_factory=list,
        description="mail addresses that receive the delivered export and totals "
                    "(empty: no mail). Needs `sender` and the Mail.Send permission")
    sender: str = Field(
        "", description="UPN or id of the mailbox the overview is sent from")
    good_friday_is_holiday: bool = Field(
        True, description="Good Friday is not a working day (it is in the holidays "
                          "package's NL public holidays and the Algemene termijnenwet)")
    liberation_day: LiberationDay = Field(
        "every-5-years",
        description="when 5 May is not a working day: 'every-5-years' (2025, 2030, ...: the "
                    "holidays package's NL public calendar and most collective agreements), "
                    "'every-year' (the Algemene termijnenwet) or 'never'")

    @field_validator("e5_sku_ids", "exchange_only_sku_ids")
    @classmethod
    def _sku_ids(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(_guid(v) for v in value))

    @field_validator("held_states")
    @classmethod
    def _states(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in ASSIGNMENT_STATES]
        if unknown:
            raise ValueError(f"unknown state(s) {', '.join(unknown)}; states are "
                             f"{', '.join(ASSIGNMENT_STATES)}")
        if "Active" not in value:
            raise ValueError("must include 'Active'")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        both = sorted(set(self.e5_sku_ids) & set(self.exchange_only_sku_ids))
        if both:
            raise ValueError(f"SKU id(s) in both e5_sku_ids and exchange_only_sku_ids: "
                             f"{', '.join(both)}")
        if self.deliver_to and not self.sender.strip():
            raise ValueError("deliver_to is set but sender is empty: set sender to the "
                             "UPN of the mailbox the overview is sent from")
        return self

    @property
    def calendar(self) -> WorkdayCalendar:
        return WorkdayCalendar(good_friday=self.good_friday_is_holiday,
                               liberation_day=self.liberation_day)

    def extra_permissions(self) -> tuple[str, ...]:
        return ("Mail.Send",) if self.deliver_to else ()
