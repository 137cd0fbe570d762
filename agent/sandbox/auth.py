"""Sandbox access tokens: unsigned JWTs (alg "none") carrying the granted app roles.

They have the shape of Entra ID application tokens (`roles`, `tid`, `appid`, `exp`) so the
code that reads granted permissions from a token (`config check --online`) works on them,
but they are worthless anywhere else: no signature, audience `https://graph.sandbox.invalid`.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.sandbox.builders import TENANT_ID, oid

AUDIENCE = "https://graph.sandbox.invalid"
APP_ID = oid("application:dap-agent")
ROLES_ENV = "DAP_AGENT_SANDBOX_ROLES"
LIFETIME_SECONDS = 3600


class TokenError(Exception):
    """The bearer token is missing, garbled or expired (a 401)."""


@dataclass(frozen=True)
class Claims:
    roles: frozenset[str]
    tid: str
    appid: str
    exp: float
    nonce: str


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(part: str) -> dict[str, Any]:
    data = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def mint(roles: Sequence[str], *, tenant_id: str = TENANT_ID, lifetime: float = LIFETIME_SECONDS,
         now: float | None = None) -> str:
    """A fresh token; each has its own nonce (`uti`), so a refresh is a different token."""
    issued = time.time() if now is None else now
    claims = {
        "aud": AUDIENCE,
        "iss": f"https://sts.sandbox.invalid/{tenant_id}/",
        "iat": int(issued),
        "nbf": int(issued),
        "exp": int(issued + lifetime),
        "appid": APP_ID,
        "idtyp": "app",
        "roles": list(roles),
        "tid": tenant_id,
        "uti": uuid.uuid4().hex,
    }
    return f"{_b64({'typ': 'JWT', 'alg': 'none'})}.{_b64(claims)}."


def verify(token: str, *, tenant_id: str, now: float | None = None) -> Claims:
    """Claims of a sandbox token; TokenError says what is wrong, as Entra would."""
    if not token:
        raise TokenError("Access token is empty.")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("IDX14100: JWT is not well formed, there are no dots (.).")
    try:
        header, claims = _unb64(parts[0]), _unb64(parts[1])
    except (ValueError, TypeError):
        raise TokenError("IDX14102: Unable to decode the header or payload as Base64Url "
                         "encoded string.") from None
    if header.get("alg") != "none" or claims.get("aud") != AUDIENCE:
        raise TokenError("Invalid audience.")
    if claims.get("tid") != tenant_id:
        raise TokenError("Access token validation failure: the token is for another tenant.")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp <= (time.time() if now is None else now):
        raise TokenError("Lifetime validation failed, the token is expired.")
    roles = claims.get("roles") or []
    if not isinstance(roles, list):
        raise TokenError("Invalid roles claim.")
    return Claims(roles=frozenset(str(r) for r in roles), tid=str(claims["tid"]),
                  appid=str(claims.get("appid", "")), exp=float(exp),
                  nonce=str(claims.get("uti", "")))


def roles_from_env(default: Sequence[str]) -> tuple[str, ...]:
    """`DAP_AGENT_SANDBOX_ROLES` (comma list) overrides the roles a sandbox token carries."""
    raw = os.environ.get(ROLES_ENV)
    if raw is None:
        return tuple(default)
    return tuple(r.strip() for r in raw.split(",") if r.strip())
