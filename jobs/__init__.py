"""The job table: every job the CLI and the daemon know, by id."""

from __future__ import annotations

from agent.job import JobSpec
from jobs import active_users, device_compliance, offboarding, privileged_roles

REGISTRY: dict[str, JobSpec] = {
    spec.id: spec
    for spec in (active_users.JOB, offboarding.JOB, device_compliance.JOB, privileged_roles.JOB)
}
