"""The one way to Microsoft Graph: tokens, HTTP, paging, retries, error translation.

Only this module (and `agent.graph.auth`, which it imports lazily) touches msgraph-core,
kiota and azure-identity; service modules next to it call `GraphClient` and map the raw
JSON pages into small typed models. Pages are read as raw JSON: deserialising a 999-user
page into SDK model objects costs seconds of CPU, `json.loads` milliseconds.

Retries: exactly one layer (tenacity, below). The SDK's RetryHandler is left out of the
middleware pipeline so attempts never multiply.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
)

from agent.errors import (
    GraphAuthError,
    GraphDataError,
    GraphError,
    GraphNotFoundError,
    GraphPermissionError,
    GraphUnavailableError,
)

log = structlog.get_logger("agent.graph")

# kiota's middleware pipeline only runs for requests that carry this extension.
KIOTA_OPTIONS = "kiota_request_options"
RETRYABLE_STATUS = {429, 503, 504}
MAX_PAGE_ITEMS = 10_000  # a page asked without $top


class TokenSource(Protocol):
    """Gives the bearer token for Graph; `refresh=True` bypasses any cache."""

    async def token(self, *, refresh: bool = False) -> str: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    max_total_seconds: float = 120.0
    # backoff when Graph sends no Retry-After (seconds: base * 2**n, capped, with jitter)
    backoff_base: float = 1.0
    backoff_cap: float = 30.0


@dataclass
class WriteResult:
    status: int
    request_id: str | None
    body: dict[str, Any] | None = None
    already_gone: bool = False


@dataclass
class Collection:
    """A whole collection read page by page, with what Graph said about its size."""

    items: list[dict[str, Any]]
    reported_count: int | None
    pages: int


@dataclass
class GraphStats:
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    duplicates: int = 0  # objects Graph listed twice across pages (dropped)
    by_path: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "retries": self.retries,
                "throttled": self.throttled, "duplicates": self.duplicates,
                "by_path": dict(self.by_path)}


class _Retryable(Exception):
    """An attempt that may be repeated; `retry_after` is Graph's hint in seconds."""

    def __init__(self, error: GraphError, retry_after: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After in seconds; Graph sends fractional values ("2.128"), kiota's int() drops
    them. RFC 9110 also allows an HTTP date (a proxy or gateway may send one): the wait is
    until then."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None  # neither form: fall back to backoff
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds)


def page_limit(top: int | None) -> int:
    """The most items a page may carry: Graph never sends more than the `$top` asked (an
    endpoint that ignores `$top` pages by its own size, at most 999/1000): far more is a
    broken or hostile answer, refused before it is processed."""
    return max(2 * top, 1000) if top else MAX_PAGE_ITEMS


def same_origin(url: str, base: str) -> bool:
    """`url` is https on `base`'s host and port (the default port spelled or not)."""
    a, b = urlsplit(url), urlsplit(base)
    try:
        ports = (a.port or 443, b.port or 443)
    except ValueError:
        return False
    return (a.scheme == "https" and (a.hostname or "").lower() == (b.hostname or "").lower()
            and ports[0] == ports[1])


def require_text(raw: Mapping[str, Any], name: str, endpoint: str) -> str:
    """A field a job relies on (an object's id above all): a non-empty string, or the whole
    answer is refused as a data error naming the endpoint and the field (never `None`
    turned into the id "None")."""
    value = raw.get(name)
    if not isinstance(value, str) or not value.strip():
        raise GraphDataError(f"{endpoint}: an item has no {name!r} "
                             f"(got {type(value).__name__ if value is not None else 'null'}): "
                             "the answer is not trusted, nothing was changed")
    return value


def _require_ids(items: list[Any], endpoint: str) -> None:
    """The boundary rule for every service module at once: an object asked for with
    `$select=id` is a JSON object with a non-empty string id (jobs key everything on it;
    an `"id": null` user was planned as `PATCH /users/None`, and would be counted, or
    skipped, by active-users and the role audit alike)."""
    for item in items:
        if not isinstance(item, Mapping):
            raise GraphDataError(f"{endpoint}: an item is not a JSON object "
                                 f"({type(item).__name__}): the answer is not trusted, "
                                 "nothing was changed")
        require_text(item, "id", endpoint)


def _error_envelope(response: httpx.Response) -> tuple[str | None, str]:
    try:
        body = response.json()
        err = body.get("error") or {}
        return err.get("code"), str(err.get("message") or "")
    except (ValueError, AttributeError):
        return None, response.reason_phrase


API_VERSIONS = ("v1.0", "beta")


def path_key(url: str) -> str:
    """'/v1.0/users?$top=999' -> '/users' ('/beta/x' -> 'beta /x'): a request's collection."""
    path = urlsplit(url).path
    if "/beta/" in path:
        return "beta " + path.split("/beta", 1)[-1]
    return path.split("/v1.0", 1)[-1] or "/"


class GraphClient:
    """Async Graph client over an httpx client that carries the SDK's middleware."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        tokens: TokenSource,
        *,
        graph_url: str,
        retry: RetryPolicy | None = None,
        low_priority: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        progress: Callable[[str, int, int, bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._tokens = tokens
        self.graph_url = graph_url.rstrip("/")  # no trailing slash: never '//users'
        self.base_url = self.graph_url + "/v1.0"
        self._retry = retry or RetryPolicy()
        self._low_priority = low_priority
        self._sleep = sleep
        self.clock = clock  # seconds, for pacing (tests pass a clock their sleep moves)
        self._progress = progress  # (path, pages, items, done): long scans on a terminal
        self.stats = GraphStats()

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._tokens.close()

    async def sleep(self, seconds: float) -> None:
        """The client's own sleep (what retries wait with): pacing uses it too, so tests
        and benchmarks that record waits instead of spending them see every wait."""
        await self._sleep(seconds)

    async def access_token(self) -> str:
        """The current bearer token (for `config check --online` to read its roles)."""
        return await self._tokens.token()

    async def __aenter__(self) -> GraphClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- reads -------------------------------------------------------------------------

    async def iter_pages(
        self,
        path: str,
        *,
        permission: str,
        select: Sequence[str] = (),
        top: int | None = None,
        filter: str | None = None,
        count: bool = False,
        params: Mapping[str, str] | None = None,
        eventual: bool = False,
        version: str = "v1.0",
        pace: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[tuple[list[dict[str, Any]], int | None]]:
        """Yield (items, @odata.count) per page, following @odata.nextLink verbatim.

        `pace` is awaited before each page's request (an API's own request budget, see
        agent.graph.pacing).

        `version="beta"` only where v1.0 has no equivalent (settings catalog policies)."""
        query: dict[str, str] = dict(params or {})
        if select:
            query["$select"] = ",".join(select)
        if top:
            query["$top"] = str(top)
        if filter:
            query["$filter"] = filter
        if count:
            query["$count"] = "true"
        # ConsistencyLevel is not carried to next pages by Graph: send it on every page.
        headers = {"ConsistencyLevel": "eventual"} if (count or eventual) else {}
        url: str | None = self._url(path, version)
        first = True
        seen: set[str] = set()
        seen_ids: set[str] = set()  # paging is not a snapshot: an object can show up twice
        pages = items_read = 0
        while url is not None:
            if url in seen:  # a next link pointing back would page forever
                raise GraphDataError(f"GET {path_key(url)}: @odata.nextLink repeats a page")
            seen.add(url)
            if pace is not None:
                await pace()
            response = await self._request("GET", url, permission=permission,
                                           params=query if first else None, headers=headers)
            body = _json_object(response)
            items = body.get("value")
            if not isinstance(items, list):
                raise GraphDataError(f"GET {path_key(url)}: response has no 'value' list",
                                     request_id=response.headers.get("request-id"))
            if len(items) > page_limit(top):
                raise GraphDataError(
                    f"GET {path_key(url)}: a page of {len(items)} items"
                    + (f" where $top={top} was asked" if top else "")
                    + ": not a Graph answer (a proxy?); refused",
                    request_id=response.headers.get("request-id"))
            if "id" in select:
                _require_ids(items, f"GET {path_key(url)}")
            reported = body.get("@odata.count") if first else None
            items = self._drop_repeats(items, seen_ids, path)
            pages += 1
            items_read += len(items)
            next_link = body.get("@odata.nextLink")
            url = next_link if isinstance(next_link, str) and next_link else None
            if url is not None and not same_origin(url, self.graph_url):
                # our bearer token goes with every request: never in plaintext, never to a
                # host or port we weren't given
                where = urlsplit(url)
                raise GraphDataError(f"GET {path}: @odata.nextLink points to another host, "
                                     f"port or scheme ({where.scheme}://{where.netloc}, not "
                                     f"https://{urlsplit(self.graph_url).netloc}); not followed")
            if self._progress is not None:
                self._progress(path, pages, items_read, url is None)
            yield items, reported if isinstance(reported, int) else None
            first = False

    def _drop_repeats(self, items: list[Any], seen_ids: set[str],
                      path: str) -> list[Any]:
        fresh = []
        for item in items:
            item_id = item.get("id") if isinstance(item, dict) else None
            if isinstance(item_id, str):
                if item_id in seen_ids:
                    self.stats.duplicates += 1
                    log.warning("graph listed an object twice; counted once", path=path,
                                id=item_id)
                    continue
                seen_ids.add(item_id)
            fresh.append(item)
        return fresh

    async def list(self, path: str, *, permission: str,
                   **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        async for items, _ in self.iter_pages(path, permission=permission, **kwargs):
            for item in items:
                yield item

    async def collect(self, path: str, *, permission: str, **kwargs: Any) -> Collection:
        items: list[dict[str, Any]] = []
        reported: int | None = None
        pages = 0
        async for page, count in self.iter_pages(path, permission=permission, **kwargs):
            if pages == 0:
                reported = count
            pages += 1
            items.extend(page)
        return Collection(items=items, reported_count=reported, pages=pages)

    async def get(self, path: str, *, permission: str, select: Sequence[str] = (),
                  params: Mapping[str, str] | None = None,
                  version: str = "v1.0") -> dict[str, Any]:
        query = dict(params or {})
        if select:
            query["$select"] = ",".join(select)
        response = await self._request("GET", self._url(path, version), permission=permission,
                                       params=query)
        body = _json_object(response)
        if "id" in select:
            _require_ids([body], f"GET {path_key(str(response.request.url))}")
        return body

    def _url(self, path: str, version: str) -> str:
        if version not in API_VERSIONS:
            raise ValueError(f"unknown Graph API version {version!r}")
        return f"{self.graph_url}/{version}{path}"

    # ---- writes ------------------------------------------------------------------------

    async def write(self, method: str, path: str, body: Mapping[str, Any] | None = None, *,
                    permission: str, idempotent: bool,
                    headers: Mapping[str, str] | None = None) -> WriteResult:
        """PATCH/POST/DELETE. `idempotent` says whether repeating it is safe (503/504/resets).

        A 404 on DELETE means the object is already gone: not an error.
        """
        try:
            response = await self._request(method, self.base_url + path, permission=permission,
                                           json_body=body, idempotent=idempotent,
                                           headers=headers or {})
        except GraphNotFoundError as exc:
            if method == "DELETE":
                return WriteResult(status=404, request_id=exc.request_id, already_gone=True)
            raise
        payload: dict[str, Any] | None = None
        if response.content:
            payload = _json_object(response)
        return WriteResult(status=response.status_code,
                           request_id=response.headers.get("request-id"), body=payload)

    async def patch(self, path: str, body: Mapping[str, Any], *, permission: str) -> WriteResult:
        return await self.write("PATCH", path, body, permission=permission, idempotent=True)

    async def post(self, path: str, body: Mapping[str, Any] | None = None, *, permission: str,
                   idempotent: bool = False) -> WriteResult:
        return await self.write("POST", path, body, permission=permission, idempotent=idempotent)

    async def delete(self, path: str, *, permission: str) -> WriteResult:
        return await self.write("DELETE", path, permission=permission, idempotent=True)

    async def put_range(self, upload_url: str, chunk: bytes, *, start: int, total: int,
                        permission: str) -> httpx.Response:
        """PUT one byte range to a pre-authenticated upload URL (an Outlook attachment
        session on outlook.office.com). Without our bearer token: the URL carries its own,
        and ours is for Graph only (https://learn.microsoft.com/graph/outlook-large-attachments).
        Not repeated on a lost connection: the session may have taken the range."""
        if urlsplit(upload_url).scheme != "https":
            raise GraphDataError("upload URL is not https: not used")
        headers = {"Content-Type": "application/octet-stream",
                   "Content-Range": f"bytes {start}-{start + len(chunk) - 1}/{total}"}
        return await self._request("PUT", upload_url, permission=permission, content=chunk,
                                   headers=headers, idempotent=False, authorize=False)

    # ---- one request, with the one retry layer ----------------------------------------

    async def _request(
        self,
        method: str,
        url: str,
        *,
        permission: str,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
        content: bytes | None = None,
        authorize: bool = True,
    ) -> httpx.Response:
        policy = self._retry
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retryable),
            wait=self._wait,
            stop=stop_after_attempt(policy.max_attempts)
            | stop_before_delay(policy.max_total_seconds),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(method, url, permission=permission, params=params,
                                               json_body=json_body, headers=headers or {},
                                               idempotent=idempotent, content=content,
                                               authorize=authorize)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            error = last.error if isinstance(last, _Retryable) else None
            raise GraphUnavailableError(
                f"{method} {path_key(url)}: Graph still unavailable after "
                f"{exc.last_attempt.attempt_number} attempts ({error or last})",
                status=error.status if error else None,
                code=error.code if error else None,
                request_id=error.request_id if error else None,
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return exc.retry_after
        policy = self._retry
        backoff: float = min(policy.backoff_cap,
                             policy.backoff_base * 2.0 ** (state.attempt_number - 1))
        return backoff * (0.5 + random.random() / 2)

    def _before_sleep(self, state: RetryCallState) -> None:
        self.stats.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        log.warning("graph request retried", attempt=state.attempt_number,
                    wait_seconds=round(state.upcoming_sleep, 3),
                    reason=str(exc.error) if isinstance(exc, _Retryable) else str(exc))

    async def _attempt(
        self,
        method: str,
        url: str,
        *,
        permission: str,
        params: Mapping[str, str] | None,
        json_body: Mapping[str, Any] | None,
        headers: Mapping[str, str],
        idempotent: bool,
        content: bytes | None = None,
        authorize: bool = True,
    ) -> httpx.Response:
        refreshed = False
        while True:
            request_headers = {
                **headers,
                # msgraph-core only adds it for Microsoft hosts: set it ourselves, always
                "client-request-id": str(uuid.uuid4()),
            }
            if authorize:
                token = await self._tokens.token(refresh=refreshed)
                request_headers["Authorization"] = f"Bearer {token}"
            if self._low_priority:
                request_headers["x-ms-throttle-priority"] = "low"
            self.stats.requests += 1
            self.stats.by_path[f"{method} {path_key(url)}"] += 1
            try:
                response = await self._http.request(
                    method, url, params=params, json=json_body, content=content,
                    headers=request_headers, extensions={KIOTA_OPTIONS: {}},
                    follow_redirects=False,
                )
            except httpx.TimeoutException as exc:
                raise self._transport_failure(method, url, "timed out", idempotent) from exc
            except httpx.TransportError as exc:
                raise self._transport_failure(method, url, type(exc).__name__, idempotent) from exc
            status = response.status_code
            request_id = response.headers.get("request-id")
            log.debug("graph request", method=method, path=path_key(url), status=status,
                      request_id=request_id)
            if 300 <= status < 400:
                # Graph does not redirect these calls: a 3xx comes from something in between
                # (a proxy, a wrong graph_url). Never followed (our token would go along,
                # a redirected list would be read as another), and a write answered so did
                # not happen: a failure, not "done".
                target = response.headers.get("Location")
                raise GraphError(
                    f"{method} {path_key(url)}: Graph answered {status} "
                    + (f"(redirect to {_origin(target)}) " if target else "")
                    + "instead of an answer; redirects are not followed (a proxy or a wrong "
                    "graph_url?)" + ("; the change was not made" if method != "GET" else ""),
                    status=status, request_id=request_id)
            if status < 400:
                return response
            code, message = _error_envelope(response)
            if status == 401 and not refreshed and authorize:
                refreshed = True  # an expired or revoked token: get a new one, once
                continue
            if status == 401:
                raise GraphAuthError(
                    f"Graph refused the token (401 {code or ''}): check tenant id, client id "
                    "and credential", status=401, code=code, request_id=request_id)
            if status == 403:
                raise GraphPermissionError(permission, request_id=request_id, code=code,
                                           detail=f"{method} {path_key(url)}")
            error_cls = GraphNotFoundError if status == 404 else GraphError
            error = error_cls(f"{method} {path_key(url)}: {status} {code or ''} {message}".strip(),
                              status=status, code=code, request_id=request_id)
            if status == 429:
                self.stats.throttled += 1
                raise _Retryable(error, parse_retry_after(response.headers.get("Retry-After")))
            if status in RETRYABLE_STATUS and idempotent:
                raise _Retryable(error, parse_retry_after(response.headers.get("Retry-After")))
            raise error

    @staticmethod
    def _transport_failure(method: str, url: str, what: str, idempotent: bool) -> Exception:
        error = GraphUnavailableError(f"{method} {path_key(url)}: connection {what}")
        # A write that may have reached Graph is not repeated unless that is safe.
        return _Retryable(error, None) if idempotent else error


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL: enough to say where, nothing of its query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "a relative location"


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except ValueError:
        raise GraphDataError(
            f"{response.request.method} {path_key(str(response.request.url))}: "
            "response is not valid JSON",
            status=response.status_code, request_id=response.headers.get("request-id"),
        ) from None
    if not isinstance(body, dict):
        raise GraphDataError("response is not a JSON object", status=response.status_code,
                             request_id=response.headers.get("request-id"))
    return body
