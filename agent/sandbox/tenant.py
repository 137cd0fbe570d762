"""The sandbox tenant's state: Graph JSON objects per collection, faults, request log.

State is plain JSON (collection name -> id -> object) so it persists as one file that
several CLI processes share. Relationship data lives in underscore keys (`_members`,
`_assignments`, `_settings`, `_deviceStatuses`) that the transport never serves.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.files import write_atomic
from agent.sandbox.builders import TENANT_ID

COLLECTIONS: tuple[str, ...] = (
    "users",
    "groups",
    "subscribedSkus",
    "deletedItems",
    "managedDevices",
    "devices",
    "recoveryKeys",
    "deviceConfigurations",
    "deviceCompliancePolicies",
    "configurationPolicies",
    "roleDefinitions",
    "roleAssignments",
    "roleAssignmentScheduleInstances",
    "roleEligibilityScheduleInstances",
    "userRegistrationDetails",
    "servicePrincipals",
    "secureScores",
    "sentMail",
    "messages",  # drafts (agent/sandbox/mail.py)
    "uploadSessions",
)

FAULTS_ENV = "DAP_AGENT_SANDBOX_FAULTS"
FORMAT_VERSION = 1


@dataclass
class Faults:
    """Injected failures, all off by default. Counting is per transport and deterministic.

    `*_every` N: every Nth request (1-based count over all requests) gets that fault.
    """

    throttle_every: int = 0  # 429 TooManyRequests with Retry-After
    unavailable_every: int = 0  # 503 ServiceUnavailable with Retry-After
    retry_after: float = 0.05  # seconds; sent fractional as Graph does ("2.128")
    reset_every: int = 0  # httpx.RemoteProtocolError: connection reset mid-response
    timeout_every: int = 0  # httpx.ReadTimeout
    malformed_path: str | None = None  # regex on the path: its first page is invalid JSON
    truncate_path: str | None = None  # regex: the list stops after page 1, no nextLink
    expire_token_after: int = 0  # after N requests the then-current token gets 401
    crash_after_writes: int = 0  # os._exit(137) right after the Nth write is saved
    # replication lag: after DELETE /users/{id} the user is gone from /users at once but
    # shows in deletedItems (list, GET, DELETE) only after this many further requests; 404
    # until then, as a directory replica that has not seen the delete yet answers
    deleted_lag_requests: int = 0
    fail_writes: dict[str, int] = field(default_factory=dict)  # regex on path -> status
    # Graph's documented limit of the identity-and-access reports, enforced: at most this
    # many requests to /reports/authenticationMethods per 10 s (the transport's clock),
    # 429 beyond (0: not enforced, so tests on wall-clock time do not depend on it)
    reports_per_10s: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Faults:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown sandbox fault(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Faults:
        """Faults from `DAP_AGENT_SANDBOX_FAULTS` (a JSON object of these fields)."""
        raw = (os.environ if environ is None else environ).get(FAULTS_ENV, "").strip()
        if not raw:
            return cls()
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError(f"{FAULTS_ENV} must be a JSON object")
        return cls.from_dict(data)


@dataclass(frozen=True)
class RequestRecord:
    """One request the transport answered (or failed on purpose)."""

    method: str
    path: str  # below /v1.0, e.g. "/users/abc"
    query: dict[str, str]
    status: int  # 0 when a transport fault (reset, timeout) replaced the response
    request_id: str
    fault: str | None = None


class SandboxTenant:
    """A tenant's directory and Intune objects as Graph JSON."""

    def __init__(self, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        if now.tzinfo is None:
            raise ValueError("SandboxTenant(now=...) must be timezone-aware")
        self.now: datetime = now.astimezone(UTC)
        self.tenant_id: str = TENANT_ID
        self.collections: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in COLLECTIONS}
        self.faults: Faults = Faults()
        self.requests: list[RequestRecord] = []
        # Bumped on every change through add/remove/touch; list cursors use it.
        self.version: int = 0
        # deleted item id -> requests until it becomes visible (Faults.deleted_lag_requests);
        # in memory only: another process comes later, when replication is done
        self.replicating: dict[str, int] = {}

    def tick(self) -> None:
        """One request went by: replication moves on."""
        for object_id in list(self.replicating):
            self.replicating[object_id] -= 1
            if self.replicating[object_id] < 0:
                del self.replicating[object_id]

    def deleted_item(self, object_id: str) -> dict[str, Any] | None:
        """A deleted item as a (possibly lagging) replica sees it."""
        if object_id in self.replicating:
            return None
        return self.get("deletedItems", object_id)

    # ---- objects ----------------------------------------------------------------------

    def _coll(self, collection: str) -> dict[str, dict[str, Any]]:
        try:
            return self.collections[collection]
        except KeyError:
            raise KeyError(f"unknown sandbox collection {collection!r}") from None

    def add(self, collection: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store (or replace) an object by its "id"; returns it."""
        object_id = obj.get("id")
        if not isinstance(object_id, str) or not object_id:
            raise ValueError(f"{collection}: object has no string 'id'")
        self._coll(collection)[object_id] = obj
        self.version += 1
        return obj

    def get(self, collection: str, object_id: str) -> dict[str, Any] | None:
        return self._coll(collection).get(object_id)

    def all(self, collection: str) -> list[dict[str, Any]]:
        return list(self._coll(collection).values())

    def remove(self, collection: str, object_id: str) -> dict[str, Any] | None:
        obj = self._coll(collection).pop(object_id, None)
        self.version += 1
        return obj

    def touch(self) -> None:
        """Note an in-place change (a PATCH) so cached list snapshots are rebuilt."""
        self.version += 1

    def find_user(self, key: str) -> dict[str, Any] | None:
        """A user by id or userPrincipalName (case-insensitive), as Graph resolves /users/{key}."""
        users = self.collections["users"]
        found = users.get(key)
        if found is not None:
            return found
        if "@" in key:
            lowered = key.lower()
            for candidate in users.values():
                if str(candidate.get("userPrincipalName", "")).lower() == lowered:
                    return candidate
        return None

    # ---- persistence ------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "now": self.now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "tenant_id": self.tenant_id,
            "collections": {name: list(objs.values()) for name, objs in self.collections.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, now: datetime | None = None) -> SandboxTenant:
        """Rebuild a tenant; `now` overrides the stored clock (a later process is later)."""
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported sandbox tenant format {data.get('format')!r}")
        stored_now = datetime.fromisoformat(str(data["now"]).replace("Z", "+00:00"))
        tenant = cls(now or stored_now)
        tenant.tenant_id = str(data.get("tenant_id", TENANT_ID))
        for name, objs in dict(data.get("collections", {})).items():
            if name not in tenant.collections:
                raise ValueError(f"unknown sandbox collection {name!r} in stored tenant")
            tenant.collections[name] = {str(o["id"]): o for o in objs}
        return tenant

    def save(self, path: Path) -> None:
        """Write atomically (temp file, fsync, rename; mode 0600)."""
        write_atomic(Path(path), json.dumps(self.to_json(), separators=(",", ":")).encode())

    @classmethod
    def load(cls, path: Path, *, now: datetime | None = None) -> SandboxTenant:
        with Path(path).open("rb") as handle:
            data = json.load(handle)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a sandbox tenant file")
        return cls.from_json(data, now=now)
