"""The sandbox as an httpx transport: Graph's wire behaviour over a SandboxTenant.

Per request, in this order: count it (fault schedule), the transport-level faults
(429/503), the bearer token (401), the route (400/404/405), its permissions (403), write
faults, the endpoint itself, persistence of a successful write (then the crash fault),
the page faults (malformed JSON, truncated list), and finally connection faults (reset,
timeout) which are raised after the request was processed, like a connection that dies
while the answer is on its way.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from agent.sandbox import auth, mail, routes
from agent.sandbox.auth import Claims, TokenError
from agent.sandbox.listing import Cursors
from agent.sandbox.tenant import RequestRecord, SandboxTenant
from agent.sandbox.wire import Call, GraphFault, Reply, forbidden

VERSIONS = ("v1.0", "beta")
REPORTS_PREFIX = "/reports/authenticationMethods"
REPORTS_WINDOW = 10.0
REQUEST_LOG_LIMIT = 200_000
_STATUS_CODES = {400: "BadRequest", 403: "Forbidden", 404: "ResourceNotFound", 409: "Conflict",
                 412: "PreconditionFailed", 429: "TooManyRequests",
                 500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable",
                 504: "GatewayTimeout"}


@dataclass
class _Prepared:
    """What the request turned into before connection faults are applied."""

    status: int
    headers: dict[str, str]
    content: bytes
    fault: str | None = None


class SandboxTransport(httpx.AsyncBaseTransport):
    """Serves Graph's v1.0 (and the few beta) endpoints from `tenant`.

    `path`: a file-backed tenant; saved atomically after every successful write, and
    re-read when another process changed it. `latency`: seconds added to every request
    (benchmarks), awaited with asyncio.sleep.
    """

    def __init__(self, tenant: SandboxTenant, *, path: Path | None = None,
                 latency: float = 0.0) -> None:
        self.tenant = tenant
        self.path = Path(path) if path is not None else None
        self.latency = latency
        self.cursors = Cursors()
        self._count = 0  # requests seen: the fault schedule counts these
        self._writes = 0  # successful writes applied
        self._revoked_nonce: str | None = None
        self._file_stamp = self._stamp()
        self._key = hashlib.sha256(f"skiptoken:{tenant.tenant_id}".encode()).digest()
        self.clock: Callable[[], float] = time.monotonic  # what rate limits count in
        self._report_starts: deque[float] = deque()

    # ---- httpx entry point --------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        await request.aread()
        self._count += 1
        n = self._count
        self.tenant.tick()
        request_id = str(uuid.uuid4())
        client_request_id = request.headers.get("client-request-id")
        version, path = _split_version(request.url.path)
        query = {k: v for k, v in request.url.params.multi_items()}
        faults = self.tenant.faults

        prepared = self._prepare(request, n, version, path, query, request_id)
        connection_fault = None
        if faults.reset_every and n % faults.reset_every == 0:
            connection_fault = "reset"
        elif faults.timeout_every and n % faults.timeout_every == 0:
            connection_fault = "timeout"
        log = self.tenant.requests
        log.append(RequestRecord(
            method=request.method, path=path, query=query,
            status=0 if connection_fault else prepared.status, request_id=request_id,
            fault=connection_fault or prepared.fault))
        if len(log) > REQUEST_LOG_LIMIT:  # a daemon on the sandbox runs for weeks
            del log[: REQUEST_LOG_LIMIT // 2]
        if connection_fault == "reset":
            raise httpx.RemoteProtocolError("peer closed connection without sending complete "
                                            "message body (sandbox fault)", request=request)
        if connection_fault == "timeout":
            raise httpx.ReadTimeout("timed out (sandbox fault)", request=request)

        headers = {"request-id": request_id, **prepared.headers}
        if client_request_id:
            headers["client-request-id"] = client_request_id
        return httpx.Response(prepared.status, headers=headers, content=prepared.content,
                              request=request)

    # ---- one request --------------------------------------------------------------------

    def _prepare(self, request: httpx.Request, n: int, version: str | None, path: str,
                 query: dict[str, str], request_id: str) -> _Prepared:
        client_request_id = request.headers.get("client-request-id")

        def error(fault: GraphFault, tag: str | None = None) -> _Prepared:
            body = {"error": {"code": fault.code, "message": fault.message, "innerError": {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id, "client-request-id": client_request_id}}}
            return _Prepared(fault.status, {"content-type": "application/json", **fault.headers},
                             _dumps(body), tag)

        faults = self.tenant.faults
        retry = {"Retry-After": _retry_after(faults.retry_after)}
        if len(request.content) > mail.MAX_REQUEST_BYTES:
            return error(mail.too_large(len(request.content)), "too-large")
        if request.url.host == mail.OUTLOOK_HOST:  # an upload URL: no Graph token, no route
            return self._upload(request)
        if faults.throttle_every and n % faults.throttle_every == 0:
            return error(GraphFault(429, "Please retry again later.", code="TooManyRequests",
                                    headers=retry), "throttle")
        if faults.unavailable_every and n % faults.unavailable_every == 0:
            return error(GraphFault(503, "The service is temporarily unavailable. Please retry "
                                         "later.", code="ServiceUnavailable", headers=retry),
                         "unavailable")
        try:
            claims = self._authenticate(request, n)
            if version is None:
                raise GraphFault(400, "Invalid version.", code="BadRequest")
            self._reload_if_changed()
            found = routes.match(version, request.method, path)
            route = found.route
            if route is None:
                raise _miss(found, path)
            if not claims.roles.intersection(route.permissions):
                family = route.spec.family if route.spec else "directory"
                raise forbidden(family, route.permissions)
            if faults.reports_per_10s and path.startswith(REPORTS_PREFIX):
                self._report_budget(faults.reports_per_10s)
            if route.write:
                status = _write_fault(faults.fail_writes, path)
                if status:
                    raise GraphFault(status, "Injected write failure (sandbox fault).",
                                     code=_STATUS_CODES.get(status, "UnknownError"),
                                     headers=retry if status in (429, 503) else None)
            call = Call(tenant=self.tenant, method=request.method, path=path, params=query,
                        headers={k.lower(): v for k, v in request.headers.items()},
                        body=_json_body(request), base=_base(request, version),
                        claims=claims, cursors=self.cursors, key=self._key,
                        args=found.args)
            with self._locked(route.write):
                reply = route.handler(call, route.spec)
                if route.write and reply.status < 400:
                    self._persist()
        except GraphFault as fault:
            return error(fault, fault.tag)
        return self._render(reply, path)

    def _upload(self, request: httpx.Request) -> _Prepared:
        with self._locked(True):
            status, headers, body = mail.upload_range(self.tenant, request)
            if status < 400:
                self._persist()
        content = b"" if body is None else _dumps(body)
        if body is not None:
            headers = {"content-type": "application/json", **headers}
        return _Prepared(status, headers, content)

    def _report_budget(self, limit: int) -> None:
        """"Five requests per 10 seconds" per app and tenant for the identity-and-access
        reports (includes/throttling-entra-logs-reports.md): a sliding window."""
        now = self.clock()
        starts = self._report_starts
        while starts and starts[0] <= now - REPORTS_WINDOW:
            starts.popleft()
        if len(starts) >= limit:
            wait = math.ceil((starts[0] + REPORTS_WINDOW - now) * 1000) / 1000  # never early
            raise GraphFault(429, "Too many requests.", code="TooManyRequests",
                             headers={"Retry-After": _retry_after(wait)}, tag="throttle")
        starts.append(now)

    def _render(self, reply: Reply, path: str) -> _Prepared:
        faults = self.tenant.faults
        if reply.body is None:
            return _Prepared(reply.status, dict(reply.headers), b"")
        headers = {"content-type": "application/json;odata.metadata=minimal;"
                                   "odata.streaming=true;IEEE754Compatible=false;charset=utf-8",
                   **reply.headers}
        if reply.first_page and faults.malformed_path and re.search(faults.malformed_path, path):
            whole = _dumps(reply.body)
            return _Prepared(reply.status, headers, whole[: max(1, len(whole) // 2)], "malformed")
        tag = None
        if reply.first_page and reply.list_truncatable and faults.truncate_path and \
                re.search(faults.truncate_path, path):
            reply.body.pop("@odata.nextLink", None)
            tag = "truncated"
        return _Prepared(reply.status, headers, _dumps(reply.body), tag)

    # ---- auth ---------------------------------------------------------------------------

    def _authenticate(self, request: httpx.Request, n: int) -> Claims:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise TokenError("Access token is empty.")
            claims = auth.verify(token.strip(), tenant_id=self.tenant.tenant_id)
            after = self.tenant.faults.expire_token_after
            if after and n > after and self._revoked_nonce is None:
                self._revoked_nonce = claims.nonce  # the token in use now stops working
        except TokenError as exc:
            raise GraphFault(401, str(exc), code="InvalidAuthenticationToken",
                             headers={"WWW-Authenticate": 'Bearer realm="", '
                                      'error="invalid_token"'}) from None
        if self._revoked_nonce is not None and claims.nonce == self._revoked_nonce:
            raise GraphFault(401, "Lifetime validation failed, the token is expired.",
                             code="InvalidAuthenticationToken", tag="expired-token",
                             headers={"WWW-Authenticate": 'Bearer realm="", '
                                      'error="invalid_token"'})
        return claims

    # ---- persistence --------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _reload_if_changed(self) -> None:
        """Another process (a CLI run next to the daemon) may have changed the tenant."""
        if self.path is None:
            return
        stamp = self._stamp()
        if stamp is None or stamp == self._file_stamp:
            return
        fresh = SandboxTenant.load(self.path, now=self.tenant.now)
        self.tenant.collections = fresh.collections
        self.tenant.touch()
        self._file_stamp = stamp

    @contextlib.contextmanager
    def _locked(self, write: bool) -> Iterator[None]:
        """Serialise writers of one tenant file across processes (read, change, save)."""
        if not write or self.path is None:
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._reload_if_changed()
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _persist(self) -> None:
        if self.path is not None:
            self.tenant.save(self.path)
            self._file_stamp = self._stamp()
        self._writes += 1
        crash = self.tenant.faults.crash_after_writes
        if crash and self._writes >= crash:
            os._exit(137)  # a kill right after the write was applied and saved


def _split_version(url_path: str) -> tuple[str | None, str]:
    parts = url_path.split("/", 2)
    if len(parts) < 2 or parts[1] not in VERSIONS:
        return None, url_path
    rest = "/" + parts[2] if len(parts) == 3 else "/"
    return parts[1], rest.rstrip("/") or "/"


def _base(request: httpx.Request, version: str) -> str:
    url = request.url
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}/{version}"


def _json_body(request: httpx.Request) -> Any:
    if not request.content:
        return None
    try:
        return json.loads(request.content)
    except ValueError:
        raise GraphFault(400, "Unable to read JSON request payload. Please ensure Content-Type "
                              "header is set and payload is of valid JSON format.",
                         code="BadRequest") from None


def _write_fault(table: dict[str, int], path: str) -> int:
    for pattern, status in table.items():
        if re.search(pattern, path):
            return int(status)
    return 0


def _retry_after(seconds: float) -> str:
    return f"{seconds:.3f}".rstrip("0").rstrip(".") or "0"


def _miss(found: routes.Match, path: str) -> GraphFault:
    if found.allowed_methods:
        return GraphFault(405, "Specified HTTP method is not allowed for the request target.",
                          code="Request_BadRequest")
    segment = routes.unknown_segment(found.version, path)
    return GraphFault(400, f"Resource not found for the segment '{segment}'.", code="BadRequest")


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
