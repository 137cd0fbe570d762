"""What every job is: metadata, a policy model, and `run(context)`.

Jobs are registered in one table (`jobs.REGISTRY`); the CLI and the daemon look them up
there. A job is plain logic over the typed models that `agent.graph.*` returns; it records
findings and changes on `context.run` and never talks HTTP itself.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, ConfigDict, field_validator

from agent.files import make_private_dirs
from agent.graph.client import GraphClient
from agent.run import Run

if TYPE_CHECKING:
    from agent.settings import Settings


def _accounts(value: list[str]) -> list[str]:
    cleaned = [item.strip() for item in value]
    if any(not item for item in cleaned):
        raise ValueError("entries must be UPNs or object ids, not empty strings")
    return cleaned


# A policy list of accounts (UPNs or object ids): trimmed, no blank entries.
Accounts = Annotated[list[str], AfterValidator(_accounts)]

_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _addresses(value: list[str]) -> list[str]:
    bad = [v for v in value if not _ADDRESS.match(v)]
    if bad:
        raise ValueError(f"not a mail address: {', '.join(bad)}")
    return value


# Recipients of a mail the agent sends (billing, service report, notifications).
MailAddresses = Annotated[list[str], AfterValidator(_addresses)]


class JobPolicy(BaseModel):
    """Base of every job's policy table in the TOML file: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    schedule: str

    def extra_permissions(self) -> tuple[str, ...]:
        """Graph permissions this policy needs beyond the job's own (optional features)."""
        return ()

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str) -> str:
        from agent.schedule import parse_schedule

        parse_schedule(value)  # raises ValueError with the reason
        return value


class ChangingJobPolicy(JobPolicy):
    """A job that may change the tenant: report-only unless `mode = "enforce"`."""

    mode: Literal["report", "enforce"] = "report"


@dataclass
class JobContext:
    settings: Settings
    policy: Any  # the job's own Policy model; each job casts it to its type
    graph: GraphClient
    run: Run
    state_dir: Path
    now: datetime  # timezone-aware; tests pass a fixed one
    tz: ZoneInfo
    dry_run: bool  # --dry-run or mode = "report": record planned changes, make none
    final: bool = False  # `run active-users --final`, or the scheduled last-working-day run
    # the schedule's fire time this run serves (a catch-up run serves a missed one): the
    # month a final active-users run delivers is this one's month, not now's
    scheduled_for: datetime | None = None

    @property
    def exports_dir(self) -> Path:
        path = self.state_dir / "exports"
        make_private_dirs(path)
        return path


@dataclass(frozen=True)
class JobSpec:
    id: str  # the CLI name, e.g. "active-users"
    title: str
    policy_section: str  # the TOML table, e.g. "active_users"
    policy_model: type[JobPolicy]
    permissions: tuple[str, ...]  # Graph application permissions the job needs
    changes_tenant: bool
    run: Callable[[JobContext], Awaitable[None]]
