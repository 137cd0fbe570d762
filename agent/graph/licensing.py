"""Licences: users with their licence fields and the tenant's SKUs (mail: agent.graph.mail).

One paged pass over `/users` (only the licence properties, `$top=999`) and one
`/subscribedSkus` call give everything the active-user count needs: no per-user requests.
Raw Graph JSON is mapped here into small frozen dataclasses; nothing else sees it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from agent.errors import GraphDataError
from agent.graph.client import GraphClient

USERS_PERMISSION = "User.Read.All"
SKUS_PERMISSION = "Organization.Read.All"
USERS_PAGE_SIZE = 999  # the documented maximum for /users (500 only with signInActivity)
USER_SELECT = (
    "id",
    "userPrincipalName",
    "displayName",
    "accountEnabled",
    "userType",
    "assignedLicenses",
    "licenseAssignmentStates",
)


@dataclass(frozen=True, slots=True)
class LicenseAssignment:
    """One `licenseAssignmentState`: how one SKU reached the user and whether it holds."""

    sku_id: str  # lower-case GUID
    assigned_by_group: str | None  # None: assigned directly
    state: str  # Active, ActiveWithError, Disabled, Error
    error: str | None  # CountViolation, MutuallyExclusiveViolation, ... ; None when fine


@dataclass(frozen=True, slots=True)
class LicensedUser:
    id: str
    user_principal_name: str
    display_name: str
    account_enabled: bool | None  # None: Graph returned no value
    user_type: str  # Member, Guest
    assigned_sku_ids: tuple[str, ...]  # `assignedLicenses`, lower-case GUIDs
    assignments: tuple[LicenseAssignment, ...]  # `licenseAssignmentStates`

    @property
    def has_licence_data(self) -> bool:
        return bool(self.assigned_sku_ids or self.assignments)


@dataclass(frozen=True, slots=True)
class SubscribedSku:
    sku_id: str  # lower-case GUID
    part_number: str  # e.g. SPE_E5
    capability_status: str  # Enabled, Warning, Suspended, Deleted, LockedOut
    enabled_units: int  # prepaidUnits.enabled
    consumed_units: int


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _assignment(raw: Any, user_id: str) -> LicenseAssignment:
    if not isinstance(raw, dict) or not isinstance(raw.get("skuId"), str):
        raise GraphDataError(f"user {user_id}: a licenseAssignmentStates entry has no skuId")
    group = raw.get("assignedByGroup")
    error = raw.get("error")
    return LicenseAssignment(
        sku_id=raw["skuId"].lower(),
        assigned_by_group=group if isinstance(group, str) and group else None,
        state=_text(raw.get("state")) or "Unknown",
        error=error if isinstance(error, str) and error not in ("", "None") else None,
    )


def parse_user(raw: dict[str, Any]) -> LicensedUser:
    """Map one `/users` item (with USER_SELECT) to a LicensedUser."""
    user_id = raw.get("id")
    if not isinstance(user_id, str) or not user_id:
        raise GraphDataError("GET /users: an item has no id")
    licences = raw.get("assignedLicenses") or []
    states = raw.get("licenseAssignmentStates") or []
    if not isinstance(licences, list) or not isinstance(states, list):
        raise GraphDataError(f"user {user_id}: licence properties are not lists")
    sku_ids: list[str] = []
    for lic in licences:
        sku = lic.get("skuId") if isinstance(lic, dict) else None
        if not isinstance(sku, str):
            raise GraphDataError(f"user {user_id}: an assignedLicenses entry has no skuId")
        sku_ids.append(sku.lower())
    enabled = raw.get("accountEnabled")
    return LicensedUser(
        id=user_id,
        user_principal_name=_text(raw.get("userPrincipalName")),
        display_name=_text(raw.get("displayName")),
        account_enabled=enabled if isinstance(enabled, bool) else None,
        user_type=_text(raw.get("userType")) or "Member",
        assigned_sku_ids=tuple(sku_ids),
        assignments=tuple(_assignment(s, user_id) for s in states),
    )


async def iter_users(graph: GraphClient) -> AsyncIterator[LicensedUser]:
    """Every user with the licence properties, page by page (one pass, $top=999)."""
    async for page, _ in graph.iter_pages("/users", permission=USERS_PERMISSION,
                                          select=USER_SELECT, top=USERS_PAGE_SIZE):
        for raw in page:
            if not isinstance(raw, dict):
                raise GraphDataError("GET /users: an item is not an object")
            yield parse_user(raw)


async def list_users(graph: GraphClient) -> list[LicensedUser]:
    return [user async for user in iter_users(graph)]


def parse_sku(raw: dict[str, Any]) -> SubscribedSku:
    sku_id = raw.get("skuId")
    if not isinstance(sku_id, str) or not sku_id:
        raise GraphDataError("GET /subscribedSkus: an item has no skuId")
    units = raw.get("prepaidUnits") if isinstance(raw.get("prepaidUnits"), dict) else {}
    enabled = units.get("enabled") if units else None
    consumed = raw.get("consumedUnits")
    return SubscribedSku(
        sku_id=sku_id.lower(),
        part_number=_text(raw.get("skuPartNumber")) or sku_id.lower(),
        capability_status=_text(raw.get("capabilityStatus")),
        enabled_units=enabled if isinstance(enabled, int) else 0,
        consumed_units=consumed if isinstance(consumed, int) else 0,
    )


async def subscribed_skus(graph: GraphClient) -> list[SubscribedSku]:
    """The tenant's SKUs (one request: /subscribedSkus is not paged in practice)."""
    skus: list[SubscribedSku] = []
    async for page, _ in graph.iter_pages("/subscribedSkus", permission=SKUS_PERMISSION):
        skus.extend(parse_sku(raw) for raw in page if isinstance(raw, dict))
    return skus
