"""Serving a collection the way Graph does: query options checked per endpoint, filtered,
paged with opaque next links, projected to `$select`, expanded, counted.

The first page of a listing filters (and orders) the whole collection once and keeps the
result as a cursor; next pages slice it by offset. So serving page 50 of 100k users costs
a slice, not a scan, and a listing is a stable snapshot while the jobs change the tenant.
"""

from __future__ import annotations

import itertools
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from agent.sandbox import odata
from agent.sandbox.odata import ODataError
from agent.sandbox.wire import Call, Family, GraphFault, Reply

Expander = Callable[[Call, Mapping[str, Any]], Any]

# Operators only the directory's advanced query engine supports (ConsistencyLevel + $count).
ADVANCED_OPS = frozenset({"ne", "not", "endswith"})
KNOWN_OPTIONS = frozenset({"$select", "$top", "$filter", "$count", "$expand", "$skiptoken",
                           "$orderby"})


@dataclass(frozen=True)
class ListSpec:
    """How one list endpoint behaves; see routes.FILTERABLE for the filter tables."""

    resource: str  # entity type, e.g. "user": error messages and @odata.type
    context: str  # "users" -> "@odata.context": ".../$metadata#users"
    family: Family
    filterable: Mapping[str, frozenset[str]]
    max_top: int | None = 999  # None: no maximum; 0: $top not supported at all
    page_size: int = 100
    default_select: tuple[str, ...] | None = None  # None: every stored property
    expand: Mapping[str, Expander] = field(default_factory=dict)
    orderby: frozenset[str] = frozenset()
    known: frozenset[str] = frozenset()  # real properties seeds may leave out
    # property -> application permissions of which one is needed to read it (403 without)
    gated: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # property -> permissions without which Graph serves it as null, silently
    masked: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # What `$count=true` answers. "collection": the matching objects (the directory
    # documents this for advanced queries). "page": the items of the page only. Microsoft
    # documents no meaning of @odata.count for Intune lists, and reports in the Graph SDK and
    # docs repositories disagree on what it returns, so the sandbox answers the least useful
    # way a real tenant may: a page-sized count (a whole-collection count must not be relied on).
    count_scope: str = "collection"


class Cursors:
    """Snapshots of listings in progress (LRU): cursor id -> matching objects."""

    def __init__(self, capacity: int = 32) -> None:
        self._items: OrderedDict[str, list[Mapping[str, Any]]] = OrderedDict()
        self._capacity = capacity
        self._prefix = os.urandom(3).hex()
        self._counter = itertools.count(1)

    def add(self, items: list[Mapping[str, Any]]) -> str:
        cursor = f"{self._prefix}{next(self._counter)}"
        self._items[cursor] = items
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)
        return cursor

    def get(self, cursor: str) -> list[Mapping[str, Any]] | None:
        items = self._items.get(cursor)
        if items is not None:
            self._items.move_to_end(cursor)
        return items


def _type_name(spec: ListSpec) -> str:
    return f"microsoft.graph.{spec.resource}"


def _bad(spec: ListSpec, message: str, kind: str = "bad", code: str | None = None) -> GraphFault:
    return GraphFault(400, message, kind=kind, family=spec.family, code=code)


def check_options(call: Call, spec: ListSpec) -> None:
    for name in call.params:
        lowered = name.lower()
        if lowered.startswith("$") and lowered not in KNOWN_OPTIONS:
            raise _bad(spec, f"Query option '{name}' is not supported by the service.")


def parse_top(call: Call, spec: ListSpec) -> int | None:
    raw = call.param("$top")
    if raw is None:
        return None
    if spec.max_top == 0:
        raise _bad(spec, "The query specified in the URI is not valid. Query option 'Top' is "
                         "not allowed. To allow it, set the 'AllowedQueryOptions' property on "
                         "EnableQueryAttribute or QueryValidationSettings.")
    try:
        top = odata.parse_top(raw)
    except ODataError as exc:
        raise _bad(spec, exc.message) from None
    limit = spec.max_top
    if top is None or top < 1 or (limit is not None and top > limit):
        upper = limit if limit is not None else "2147483647"
        raise _bad(spec, f"Invalid page size specified: '{raw}'. Must be between 1 and {upper} "
                         "inclusive.")
    return top


def parse_count(call: Call, spec: ListSpec) -> bool:
    try:
        count = odata.parse_bool("$count", call.param("$count"))
    except ODataError as exc:
        raise _bad(spec, exc.message) from None
    if count and spec.family == "directory" and not call.eventual():
        # Graph's own answer when ConsistencyLevel: eventual is missing
        raise _bad(spec, "$count is not currently supported.")
    return count


def require_gated(call: Call, spec: ListSpec, names: Iterable[str],
                  table: Mapping[str, tuple[str, ...]] | None = None) -> None:
    """Properties that need an extra permission to read (signInActivity, ...)."""
    for name in names:
        allowed = (spec.gated if table is None else table).get(name)
        if allowed and not call.has_role(*allowed):
            raise GraphFault(403, "Insufficient privileges to complete the operation.",
                             kind="forbidden", family=spec.family)


def parse_filter(call: Call, spec: ListSpec, count: bool) -> odata.Filter | None:
    raw = call.param("$filter")
    if raw is None:
        return None
    try:
        parsed = odata.parse_filter(raw)
    except ODataError as exc:
        raise GraphFault(400, exc.message, family=spec.family,
                         code="BadRequest" if exc.code == "BadRequest" else exc.code) from None
    resource = spec.resource[:1].upper() + spec.resource[1:]
    advanced = False
    for prop, op in sorted(parsed.uses):
        if prop == "*":  # `not (...)`
            advanced = advanced or op in ADVANCED_OPS
            continue
        ops = spec.filterable.get(prop)
        if ops is None:
            raise _bad(spec, f"Unsupported or invalid query filter clause specified for "
                             f"property '{prop}' of resource '{resource}'.", kind="query")
        if op not in ops:
            name = odata.COMPARISONS.get(op, op)
            raise _bad(spec, f"Unsupported property filter clause operator '{name}'.",
                       kind="query")
        advanced = advanced or op in ADVANCED_OPS
    if spec.family == "directory" and advanced and not (call.eventual() and count):
        raise _bad(spec, "Unsupported Query.", kind="query")
    used = [p.split("/", 1)[0] for p, _ in parsed.uses]
    require_gated(call, spec, used)
    # Filtering on a value the caller may not read would leak it: refuse instead.
    require_gated(call, spec, (p for p in used if p in _hidden(call, spec)), spec.masked)
    return parsed


def _hidden(call: Call, spec: ListSpec) -> set[str]:
    return {p for p, allowed in spec.masked.items() if not call.has_role(*allowed)}


def _mask(item: dict[str, Any], hidden: set[str]) -> dict[str, Any]:
    for name in hidden & item.keys():
        item[name] = None
    return item


def resolve_select(call: Call, spec: ListSpec, sample: Iterable[Mapping[str, Any]]
                   ) -> tuple[str, ...]:
    """$select names resolved case-insensitively to the real property names."""
    names = odata.parse_list(call.param("$select"))
    if not names:
        return ()
    known: dict[str, str] = {k.lower(): k for k in spec.known}
    seen_any = False
    for obj in sample:
        seen_any = True
        for key in obj:
            if not key.startswith(("_", "@")):
                known.setdefault(key.lower(), key)
    resolved: list[str] = []
    for name in names:
        real = known.get(name.lower())
        if real is None:
            if seen_any:
                raise _bad(spec, f"Could not find a property named '{name}' on type "
                                 f"'{_type_name(spec)}'.")
            real = name  # empty collection: nothing to check against
        if real not in resolved:
            resolved.append(real)
    require_gated(call, spec, resolved)
    return tuple(resolved)


def parse_expand(call: Call, spec: ListSpec) -> tuple[str, ...]:
    names = odata.parse_list(call.param("$expand"))
    for name in names:
        if name not in spec.expand:
            raise _bad(spec, f"Could not find a property named '{name}' on type "
                             f"'{_type_name(spec)}'.")
    return names


def parse_orderby(call: Call, spec: ListSpec) -> list[tuple[str, bool]]:
    keys: list[tuple[str, bool]] = []
    for part in odata.parse_list(call.param("$orderby")):
        prop, _, direction = part.partition(" ")
        direction = direction.strip().lower() or "asc"
        if prop not in spec.orderby or direction not in {"asc", "desc"}:
            raise _bad(spec, f"Sorting is not supported for '{part}'.", kind="query")
        keys.append((prop, direction == "desc"))
    return keys


def _sort_key(prop: str) -> Callable[[Mapping[str, Any]], tuple[bool, str]]:
    return lambda obj: (obj.get(prop) is None, str(obj.get(prop) or "").lower())


def _sample(items: list[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    return itertools.chain(items[:50], items[-50:])


def serve(call: Call, spec: ListSpec, source: Iterable[Mapping[str, Any]]) -> Reply:
    """Answer a list request over `source` (the endpoint's objects, in stored order)."""
    check_options(call, spec)
    top = parse_top(call, spec)
    count = parse_count(call, spec)
    flt = parse_filter(call, spec, count)
    expand = parse_expand(call, spec)
    orderby = parse_orderby(call, spec)
    digest = odata.query_digest(call.path, call.params)
    token = call.param("$skiptoken")

    matches: list[Mapping[str, Any]] | None = None
    offset, cursor = 0, ""
    if token is not None:
        try:
            offset, cursor = odata.read_skiptoken(call.key, token, digest)
        except ODataError as exc:
            raise GraphFault(400, exc.message, family=spec.family) from None
        matches = call.cursors.get(cursor)
    if matches is None:  # first page, or a cursor this process no longer (or never) had
        pool = list(source)
        try:
            matches = [o for o in pool if flt.matches(o)] if flt else pool
        except ODataError as exc:  # a type mismatch shows only against the data
            raise GraphFault(400, exc.message, family=spec.family, code="BadRequest") from None
        for prop, desc in reversed(orderby):
            matches.sort(key=_sort_key(prop), reverse=desc)
        cursor = call.cursors.add(matches)
    select = resolve_select(call, spec, _sample(matches))

    size = top or spec.page_size
    page = matches[offset:offset + size]
    values = []
    hidden = _hidden(call, spec)
    for obj in page:
        item = _mask(odata.project(obj, select, spec.default_select), hidden)
        for name in expand:
            item[name] = spec.expand[name](call, obj)
        values.append(item)

    context = spec.context + (f"({','.join(select)})" if select else "")
    body: dict[str, Any] = {"@odata.context": f"{call.base}/$metadata#{context}"}
    if count and token is None:
        body["@odata.count"] = len(page) if spec.count_scope == "page" else len(matches)
    body["value"] = values
    more = offset + size < len(matches)
    if more:
        next_token = odata.make_skiptoken(call.key, offset + size, digest, cursor)
        params = {k: v for k, v in call.params.items() if k.lower() != "$skiptoken"}
        params["$skiptoken"] = next_token
        query = urlencode(params, quote_via=quote, safe="$,()':/@")
        body["@odata.nextLink"] = f"{call.base}{call.path}?{query}"
    return Reply(200, body, first_page=token is None, list_truncatable=more)


def serve_one(call: Call, spec: ListSpec, obj: Mapping[str, Any], context_suffix: str = "/$entity"
              ) -> Reply:
    """A single entity (GET /users/{id}): $select and $expand as for its list."""
    for name in call.params:
        if name.lower() not in {"$select", "$expand"} and name.startswith("$"):
            raise _bad(spec, f"Query option '{name}' is not supported by the service.")
    select = resolve_select(call, spec, [obj])
    expand = parse_expand(call, spec)
    item = _mask(odata.project(obj, select, spec.default_select), _hidden(call, spec))
    for name in expand:
        item[name] = spec.expand[name](call, obj)
    context = spec.context + (f"({','.join(select)})" if select else "") + context_suffix
    return Reply(200, {"@odata.context": f"{call.base}/$metadata#{context}", **item})
