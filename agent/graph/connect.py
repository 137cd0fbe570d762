"""Build the GraphClient from settings: the real Graph, or the built-in sandbox tenant.

msgraph-core, kiota and azure-identity are imported here, inside functions: importing them
costs most of a second, and `dap-agent --help` or `config check` must not pay for it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from agent.errors import GraphAuthError, UsageError
from agent.graph.client import GraphClient, RetryPolicy

if TYPE_CHECKING:
    from agent.settings import Settings

log = structlog.get_logger("agent.graph")

SANDBOX_GRAPH_URL = "https://graph.sandbox.invalid"
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
TIMEOUT = httpx.Timeout(60.0, connect=15.0)


def build_graph_client(settings: Settings, *, low_priority: bool = False,
                       now: datetime | None = None, retry: RetryPolicy | None = None,
                       progress: Callable[[str, int, int, bool], None] | None = None,
                       ) -> GraphClient:
    if settings.uses_sandbox:
        from agent.sandbox import SandboxTokenSource, open_sandbox

        transport = open_sandbox(settings.graph_url, now=now)
        http = _with_sdk_middleware(httpx.AsyncClient(transport=transport, timeout=TIMEOUT))
        roles = os.environ.get("DAP_AGENT_SANDBOX_ROLES")
        tokens = SandboxTokenSource([r for r in roles.split(",") if r] if roles else None)
        return GraphClient(http, tokens, graph_url=SANDBOX_GRAPH_URL, retry=retry,
                           low_priority=low_priority, progress=progress)
    http = _with_sdk_middleware(httpx.AsyncClient(timeout=TIMEOUT, verify=_tls_context(),
                                                  trust_env=True))  # HTTPS_PROXY honoured
    return GraphClient(http, AzureTokenSource(settings), graph_url=settings.graph_url,
                       retry=retry, low_priority=low_priority, progress=progress)


def _with_sdk_middleware(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The SDK's pipeline without its RetryHandler (ours is the one retry layer) and without
    its RedirectHandler: Graph does not redirect our calls, so a 3xx is an error the client
    reports, never followed (it would carry the token elsewhere, or read /groups as /users)."""
    from kiota_http.middleware import UserAgentHandler
    from msgraph_core import GraphClientFactory
    from msgraph_core.middleware import GraphTelemetryHandler

    middleware = [UserAgentHandler(), GraphTelemetryHandler()]
    return GraphClientFactory.create_with_custom_middleware(middleware, client=client)  # type: ignore[no-any-return]


def _tls_context() -> ssl.SSLContext:
    """Always verified; an organisation's CA bundle (TLS-inspecting proxy) replaces certifi's."""
    bundle = os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE")
    if bundle:
        return ssl.create_default_context(cafile=bundle)
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


class AzureTokenSource:
    """App-only tokens from azure-identity: certificate preferred, client secret otherwise.

    Tokens are only ever sent to the configured Graph host (msgraph-core's provider would
    refuse a non-Microsoft host silently). azure-identity's credential is synchronous: it is
    called in a worker thread so a token request never stalls the daemon's other jobs, and
    the token is reused until five minutes before it expires.
    """

    REFRESH_MARGIN = 300  # seconds

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._credential: Any = None
        self._scope = f"{settings.graph_url}/.default"
        self._token: str | None = None
        self._expires_on = 0

    def _build(self) -> Any:
        from azure.identity import CertificateCredential, ClientSecretCredential

        s = self._settings
        options: dict[str, Any] = {"authority": s.authority_host}
        if s.authority_host.rstrip("/") != DEFAULT_AUTHORITY:
            # otherwise MSAL asks login.microsoftonline.com for instance discovery first
            options["disable_instance_discovery"] = True
        if s.client_certificate_path is not None:
            return CertificateCredential(s.tenant_id, s.client_id,
                                         certificate_path=str(s.client_certificate_path),
                                         **options)
        if s.client_secret is not None:
            return ClientSecretCredential(s.tenant_id, s.client_id,
                                          s.client_secret.get_secret_value(), **options)
        raise UsageError("no credential configured")  # settings validation prevents this

    async def token(self, *, refresh: bool = False) -> str:
        from azure.core.exceptions import AzureError

        if not refresh and self._token and time.time() < self._expires_on - self.REFRESH_MARGIN:
            return self._token
        if refresh or self._credential is None:
            await self.close()
            self._credential = self._build()  # a fresh credential: an empty token cache
        try:
            access = await asyncio.to_thread(self._credential.get_token, self._scope)
        except AzureError as exc:
            raise GraphAuthError(f"cannot get a token from {self._settings.authority_host}: "
                                 f"{_first_line(exc)}") from None
        except (OSError, ValueError) as exc:
            raise GraphAuthError(f"cannot get a token: {type(exc).__name__}: "
                                 f"{_first_line(exc)}") from None
        if not access.token:
            raise GraphAuthError(f"no token for {self._scope}")
        self._token, self._expires_on = access.token, int(access.expires_on)
        return self._token

    async def close(self) -> None:
        self._token = None
        if self._credential is not None:
            self._credential.close()
            self._credential = None


def _first_line(exc: BaseException) -> str:
    # azure-identity messages never include the secret; keep only the first line anyway
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def token_roles(token: str) -> set[str]:
    """The application permissions (`roles` claim) a token carries. No signature check:
    it is our own token, read only to tell the admin which permissions are missing."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (IndexError, ValueError):
        return set()
    roles = claims.get("roles") or []
    return {str(r) for r in roles} if isinstance(roles, list) else set()
