"""What a sandbox endpoint receives (`Call`) and answers (`Reply`), and Graph's errors.

Graph's services differ in their error codes: the directory says `Request_ResourceNotFound`
and `Authorization_RequestDenied`, Intune says `ResourceNotFound` / `Forbidden` and wraps
its message in a JSON string. `GraphFault(family=...)` picks the right dialect.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from agent.sandbox.auth import Claims
    from agent.sandbox.listing import Cursors
    from agent.sandbox.tenant import SandboxTenant

Family = Literal["directory", "intune", "other"]

_DIALECT: dict[Family, dict[str, str]] = {
    "directory": {"bad": "Request_BadRequest", "query": "Request_UnsupportedQuery",
                  "notfound": "Request_ResourceNotFound",
                  "forbidden": "Authorization_RequestDenied"},
    "intune": {"bad": "BadRequest", "query": "BadRequest", "notfound": "ResourceNotFound",
               "forbidden": "Forbidden"},
    "other": {"bad": "BadRequest", "query": "BadRequest", "notfound": "ResourceNotFound",
              "forbidden": "Authorization_RequestDenied"},
}


class GraphFault(Exception):
    """An error answer. `kind` (bad, query, notfound, forbidden) maps to the family's code
    unless `code` is given."""

    def __init__(self, status: int, message: str, *, kind: str = "bad",
                 family: Family = "directory", code: str | None = None,
                 headers: Mapping[str, str] | None = None, tag: str | None = None) -> None:
        super().__init__(message)
        self.tag = tag  # a sandbox fault's name, for the request log
        self.status = status
        self.code = code or _DIALECT[family].get(kind, "BadRequest")
        self.message = _intune_message(message) if family == "intune" else message
        self.headers = dict(headers or {})


def _intune_message(text: str) -> str:
    """Intune's error message is itself a JSON document (as the real service sends it)."""
    activity = str(uuid.uuid4())
    return json.dumps({
        "_version": 3,
        "Message": f"{text} - Operation ID (for customer support): "
                   f"00000000-0000-0000-0000-000000000000 - Activity ID: {activity} - "
                   "Url: https://fef.sandbox.invalid/DeviceFE/StatelessDeviceFEService/",
        "CustomApiErrorPhrase": "",
        "RetryAfter": None,
        "ErrorSourceService": "",
        "HttpHeaders": "{}",
    }, indent=2)


def not_found(object_id: str, family: Family = "directory") -> GraphFault:
    if family == "directory":
        return GraphFault(404, f"Resource '{object_id}' does not exist or one of its queried "
                               "reference-property objects are not present.",
                          kind="notfound", family=family)
    return GraphFault(404, f"Resource with id '{object_id}' was not found.", kind="notfound",
                      family=family)


def forbidden(family: Family, allowed: tuple[str, ...]) -> GraphFault:
    if family == "intune":
        return GraphFault(403, "Application is not authorized to perform this operation. "
                               "Application must have one of the following scopes: "
                               + ", ".join(allowed), kind="forbidden", family=family)
    return GraphFault(403, "Insufficient privileges to complete the operation.",
                      kind="forbidden", family=family)


@dataclass
class Call:
    """One request as an endpoint sees it."""

    tenant: SandboxTenant
    method: str
    path: str  # below /v1.0
    params: dict[str, str]  # query parameters, names as sent
    headers: Mapping[str, str]
    body: Any
    base: str  # "https://host/v1.0": next links and @odata.context are built on it
    claims: Claims
    cursors: Cursors
    key: bytes  # skiptoken MAC key
    args: dict[str, str] = field(default_factory=dict)  # path template values

    def param(self, name: str) -> str | None:
        """A query option, case-insensitively ($Top = $top), as Graph treats them."""
        lowered = name.lower()
        for key, value in self.params.items():
            if key.lower() == lowered:
                return value
        return None

    def has_role(self, *roles: str) -> bool:
        return any(r in self.claims.roles for r in roles)

    def eventual(self) -> bool:
        return str(self.headers.get("consistencylevel", "")).lower() == "eventual"


@dataclass
class Reply:
    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # a body sent verbatim (used for the malformed-JSON fault)
    first_page: bool = False  # a list's first page (faults apply to these)
    list_truncatable: bool = False  # has a nextLink the truncate fault may drop
