"""`[notify]`: who hears about failed runs, new findings, coming purges, the delivered month,
a broken audit log and an expiring certificate, and through which channel."""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from agent.job import MailAddresses

Event = Literal["run-failed", "new-finding", "purge-announced", "month-delivered",
                "audit-broken", "certificate-expiring"]
EVENTS: tuple[Event, ...] = ("run-failed", "new-finding", "purge-announced", "month-delivered",
                             "audit-broken", "certificate-expiring")
Severity = Literal["high", "medium", "low", "info"]
SEVERITY_RANK: dict[str, int] = {"high": 3, "medium": 2, "low": 1, "info": 0}


class NotifySettings(BaseModel):
    """Channels are optional: with neither `mail_to` nor `webhook_url` nothing is sent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mail_to: MailAddresses = Field(
        default_factory=list,
        description="mail addresses that receive notifications through Graph sendMail "
                    "(needs `sender` and Mail.Send)")
    sender: str = Field("", description="UPN or id of the mailbox notifications are sent from")
    webhook_url: SecretStr | None = Field(
        None, description="a secret: better in DAP_AGENT_NOTIFY__WEBHOOK_URL or "
                          "$CREDENTIALS_DIRECTORY/notify_webhook_url than in the file; "
                          "https (http only to a loopback address)")
    webhook_format: Literal["json", "teams"] = Field(
        "json", description="'json' (a plain JSON document) or 'teams' (an Adaptive Card "
                            "message, as a Teams Workflows webhook expects)")
    min_severity: Severity = Field(
        "high", description="new findings at or above this severity are notified")
    events: list[Event] = Field(default_factory=lambda: list(EVENTS),
                                description="the events to notify")

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        # never echo the URL: its path or query is the webhook's credential
        parts = urlsplit(value.get_secret_value().strip())
        if parts.scheme == "https" and parts.hostname:
            return SecretStr(value.get_secret_value().strip())
        if parts.scheme == "http" and parts.hostname and _loopback(parts.hostname):
            return SecretStr(value.get_secret_value().strip())
        raise ValueError("must be an https:// URL (http only to a loopback address such as "
                         "127.0.0.1); the value is not shown because it is a secret")

    @model_validator(mode="after")
    def _sender_for_mail(self) -> NotifySettings:
        if self.mail_to and not self.sender.strip():
            raise ValueError("mail_to is set but sender is empty: set sender to the UPN of "
                             "the mailbox notifications are sent from")
        return self

    @property
    def channels(self) -> tuple[str, ...]:
        return (("mail",) if self.mail_to else ()) + (("webhook",) if self.webhook_url else ())

    def wants(self, event: str) -> bool:
        return event in self.events and bool(self.channels)

    def extra_permissions(self) -> tuple[str, ...]:
        return ("Mail.Send",) if self.mail_to else ()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
