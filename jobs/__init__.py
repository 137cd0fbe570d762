"""The job table: every job the CLI and the daemon know, by id.

Adding a job is one module in `jobs/` and one row here: the CLI's `run` choices, the
daemon's schedule, `jobs`, `config check`, the demo and the settings section
(`agent.settings`) all come from this table.
"""

from __future__ import annotations

from agent.job import JobSpec
from jobs import (
    active_users,
    device_compliance,
    offboarding,
    privileged_roles,
    secure_score,
    service_report,
)

REGISTRY: dict[str, JobSpec] = {
    spec.id: spec
    for spec in (active_users.JOB, offboarding.JOB, device_compliance.JOB, privileged_roles.JOB,
                 secure_score.JOB,
                 service_report.JOB)  # last: it reports on what the others stored
}
