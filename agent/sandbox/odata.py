"""OData query options as Graph understands them: $filter, $select, $top, $count, $expand,
and the opaque $skiptoken of next links.

The `$filter` parser is a small recursive-descent parser over the grammar Graph accepts
on the endpoints we fake: comparisons (eq ne lt le gt ge), `in (...)`, and/or/not,
parentheses, `startswith()`/`endswith()`, and lambdas `coll/any(x: x/prop eq v)`. It
compiles to a predicate and reports which (property, operator) pairs the expression uses,
so a route can reject what Graph would reject.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class ODataError(Exception):
    """A query Graph would refuse: becomes a 400 with Graph's error envelope."""

    def __init__(self, message: str, *, code: str = "BadRequest", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


# ---- $filter: tokens ---------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))
  | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?![\w-])
  | (?P<number>-?\d+(?:\.\d+)?)(?![\w-])
  | (?P<name>[A-Za-z_$@][\w.$@]*(?:/[A-Za-z_$@][\w.$@]*)*)
  | (?P<punct>[(),:])
    """,
    re.VERBOSE,
)

COMPARISONS = {"eq": "Equal", "ne": "NotEqual", "lt": "LessThan", "le": "LessThanOrEqual",
               "gt": "GreaterThan", "ge": "GreaterThanOrEqual"}
FUNCTIONS = {"startswith", "endswith"}


@dataclass(frozen=True)
class _Tok:
    kind: str  # string datetime guid number name punct end
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.lastgroup is None:
            raise ODataError(f"Invalid filter clause: syntax error at position {pos} in "
                             f"'{text}'.")
        if match.lastgroup != "ws":
            tokens.append(_Tok(match.lastgroup, match.group(), pos))
        pos = match.end()
    tokens.append(_Tok("end", "", len(text)))
    return tokens


# ---- $filter: AST -----------------------------------------------------------------------

Predicate = Callable[[Mapping[str, Any], dict[str, Any]], bool]


@dataclass(frozen=True)
class Literal:
    value: Any  # str, bool, None, int/float, datetime


@dataclass(frozen=True)
class Prop:
    path: tuple[str, ...]  # ("assignedLicenses",) or ("x", "skuId") inside a lambda


@dataclass
class Filter:
    """A parsed $filter: `matches(obj)` and the (property, operator) pairs it uses."""

    text: str
    predicate: Predicate
    uses: set[tuple[str, str]] = field(default_factory=set)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return self.predicate(obj, {})


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.uses: set[tuple[str, str]] = set()
        self.lambda_vars: dict[str, str] = {}  # variable -> collection property

    # token helpers
    def peek(self) -> _Tok:
        return self.tokens[self.i]

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok.kind == "name" and tok.text.lower() == word:
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> None:
        tok = self.take()
        if tok.text != text:
            self.fail(tok, f"expected '{text}'")

    def fail(self, tok: _Tok, what: str) -> None:
        raise ODataError(f"Invalid filter clause: {what} at position {tok.pos} in "
                         f"'{self.text}'.")

    # grammar
    def parse(self) -> Filter:
        pred = self.or_expr()
        if self.peek().kind != "end":
            self.fail(self.peek(), "unexpected token")
        return Filter(self.text, pred, self.uses)

    def or_expr(self) -> Predicate:
        left = self.and_expr()
        while self.keyword("or"):
            right = self.and_expr()
            left = _or(left, right)
        return left

    def and_expr(self) -> Predicate:
        left = self.unary()
        while self.keyword("and"):
            right = self.unary()
            left = _and(left, right)
        return left

    def unary(self) -> Predicate:
        if self.keyword("not"):
            inner = self.unary()
            self.uses.add(("*", "not"))
            return lambda obj, env: not inner(obj, env)
        return self.primary()

    def primary(self) -> Predicate:
        tok = self.peek()
        if tok.text == "(":
            self.take()
            inner = self.or_expr()
            self.expect(")")
            return inner
        if tok.kind == "name" and tok.text.lower() in FUNCTIONS and \
                self.tokens[self.i + 1].text == "(":
            return self.function()
        if tok.kind == "name" and re.search(r"/(any|all)$", tok.text, re.IGNORECASE) and \
                self.tokens[self.i + 1].text == "(":
            return self.lambda_expr()
        return self.comparison()

    def function(self) -> Predicate:
        name = self.take().text.lower()
        self.expect("(")
        prop = self.operand_prop()
        self.expect(",")
        lit = self.literal()
        self.expect(")")
        if not isinstance(lit.value, str):
            raise ODataError(f"Invalid filter clause: {name}() needs a string literal.")
        self.use(prop, name)
        needle = lit.value.lower()
        path = prop.path

        def test(obj: Mapping[str, Any], env: dict[str, Any]) -> bool:
            value = _resolve(obj, env, path)
            if not isinstance(value, str):
                return False
            value = value.lower()
            return value.startswith(needle) if name == "startswith" else value.endswith(needle)

        return test

    def lambda_expr(self) -> Predicate:
        tok = self.take()
        collection, _, kind = tok.text.rpartition("/")
        if kind.lower() != "any":
            raise ODataError(f"Invalid filter clause: lambda '{kind}' is not supported.",
                             code="Request_UnsupportedQuery")
        self.expect("(")
        var = self.take()
        if var.kind != "name" or "/" in var.text:
            self.fail(var, "expected a lambda variable")
        self.expect(":")
        coll_path = tuple(collection.split("/"))
        self.uses.add((collection, "any"))
        self.lambda_vars[var.text] = collection
        body = self.or_expr()
        del self.lambda_vars[var.text]
        self.expect(")")
        name = var.text

        def test(obj: Mapping[str, Any], env: dict[str, Any]) -> bool:
            items = _resolve(obj, env, coll_path)
            if not isinstance(items, list):
                return False
            return any(body(obj, {**env, name: item}) for item in items)

        return test

    def comparison(self) -> Predicate:
        prop = self.operand_prop()
        op_tok = self.take()
        op = op_tok.text.lower()
        if op == "in":
            self.use(prop, "in")
            self.expect("(")
            values = [self.literal().value]
            while self.peek().text == ",":
                self.take()
                values.append(self.literal().value)
            self.expect(")")
            path = prop.path
            return lambda obj, env: any(_compare(_resolve(obj, env, path), "eq", v)
                                        for v in values)
        if op not in COMPARISONS:
            self.fail(op_tok, "expected a comparison operator")
        lit = self.literal()
        self.use(prop, op)
        path, value = prop.path, lit.value
        return lambda obj, env: _compare(_resolve(obj, env, path), op, value)

    def operand_prop(self) -> Prop:
        tok = self.take()
        if tok.kind != "name" or tok.text.lower() in {"true", "false", "null"}:
            self.fail(tok, "expected a property")
        return Prop(tuple(tok.text.split("/")))

    def literal(self) -> Literal:
        tok = self.take()
        if tok.kind == "string":
            return Literal(tok.text[1:-1].replace("''", "'"))
        if tok.kind == "guid":
            return Literal(tok.text.lower())
        if tok.kind == "datetime":
            return Literal(_parse_datetime(tok.text))
        if tok.kind == "number":
            return Literal(float(tok.text) if "." in tok.text else int(tok.text))
        if tok.kind == "name" and tok.text.lower() in {"true", "false", "null"}:
            return Literal({"true": True, "false": False, "null": None}[tok.text.lower()])
        self.fail(tok, "expected a literal")
        raise AssertionError("unreachable")  # pragma: no cover

    def use(self, prop: Prop, op: str) -> None:
        """Record the property as the route sees it (lambda variables resolved)."""
        head = prop.path[0]
        if head in self.lambda_vars:
            inner = "/".join(prop.path[1:])
            name = self.lambda_vars[head] + (f"/{inner}" if inner else "")
        else:
            name = "/".join(prop.path)
        self.uses.add((name, op))


def _and(a: Predicate, b: Predicate) -> Predicate:
    return lambda obj, env: a(obj, env) and b(obj, env)


def _or(a: Predicate, b: Predicate) -> Predicate:
    return lambda obj, env: a(obj, env) or b(obj, env)


def _resolve(obj: Mapping[str, Any], env: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = env[path[0]] if path[0] in env else obj.get(path[0])
    for part in path[1:]:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _parse_datetime(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ODataError(f"Invalid filter clause: '{text}' is not a valid DateTimeOffset.") \
            from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if expected is None or actual is None:
        same = actual is None and expected is None
        return same if op == "eq" else (not same) if op == "ne" else False
    if isinstance(expected, datetime):
        if not isinstance(actual, str):
            return False
        try:
            actual = _parse_datetime(actual)
        except ODataError:
            return False
    elif isinstance(expected, bool) or isinstance(actual, bool):
        if not (isinstance(expected, bool) and isinstance(actual, bool)):
            raise ODataError("A binary operator with incompatible types was detected: "
                             f"{type(actual).__name__} and {type(expected).__name__}.")
    elif isinstance(expected, str):
        if not isinstance(actual, str):
            actual = str(actual)
        # Directory and Intune string comparisons are case-insensitive.
        actual, expected = actual.lower(), expected.lower()
    elif isinstance(expected, int | float) and not isinstance(actual, int | float):
        return False
    if op == "eq":
        return bool(actual == expected)
    if op == "ne":
        return bool(actual != expected)
    try:
        if op == "lt":
            return bool(actual < expected)
        if op == "le":
            return bool(actual <= expected)
        if op == "gt":
            return bool(actual > expected)
        return bool(actual >= expected)
    except TypeError:
        return False


def parse_filter(text: str) -> Filter:
    """Parse a $filter expression (raises ODataError on syntax errors)."""
    if not text.strip():
        raise ODataError("Invalid filter clause: the expression is empty.")
    return _Parser(text).parse()


# ---- $select, $top, $expand, $count --------------------------------------------------------

def parse_list(value: str | None) -> tuple[str, ...]:
    """'a, b,c' -> ('a', 'b', 'c'); None/'' -> ()."""
    if not value:
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())


def parse_top(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        top = int(value)
    except ValueError:
        raise ODataError(f"Invalid value '{value}' for $top query option found.") from None
    if top < 0:
        raise ODataError(f"Invalid value '{value}' for $top query option found.")
    return top


def parse_bool(name: str, value: str | None) -> bool:
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered not in {"true", "false"}:
        raise ODataError(f"Invalid value '{value}' for {name} query option found. "
                         "The value must be 'true' or 'false'.")
    return lowered == "true"


def project(obj: Mapping[str, Any], select: tuple[str, ...],
            default: tuple[str, ...] | None) -> dict[str, Any]:
    """What Graph serves of an object: the selected (or default) properties, never the
    sandbox's underscore keys; `id` and `@odata.type` always when the object has them."""
    if select:
        out: dict[str, Any] = {}
        if "@odata.type" in obj:
            out["@odata.type"] = obj["@odata.type"]
        out["id"] = obj.get("id")
        for name in select:
            out[name] = obj.get(name)
        return out
    if default is not None:
        out = {name: obj.get(name) for name in default}
        if "@odata.type" in obj:
            out = {"@odata.type": obj["@odata.type"], **out}
        return out
    return {k: v for k, v in obj.items() if not k.startswith("_")}


# ---- $skiptoken ----------------------------------------------------------------------------

def query_digest(path: str, params: Mapping[str, str]) -> str:
    """A digest of the request's query minus $skiptoken: a token is only valid for it."""
    items = sorted((k.lower(), v) for k, v in params.items() if k.lower() != "$skiptoken")
    raw = json.dumps([path.lower(), items], separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def make_skiptoken(key: bytes, offset: int, digest: str, cursor: str) -> str:
    body = json.dumps({"o": offset, "q": digest, "c": cursor}, separators=(",", ":")).encode()
    mac = hmac.new(key, body, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(mac + body).decode().rstrip("=")


def read_skiptoken(key: bytes, token: str, digest: str) -> tuple[int, str]:
    """(offset, cursor id) of a token issued for this same query; ODataError otherwise."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        mac, body = raw[:12], raw[12:]
        valid = hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()[:12])
        data = json.loads(body) if valid else None
    except (ValueError, TypeError):
        data = None
    if not isinstance(data, dict) or data.get("q") != digest or \
            not isinstance(data.get("o"), int) or data["o"] < 0:
        raise ODataError("The specified page token value is invalid or does not match the "
                         "request's query.", code="Request_BadRequest")
    return int(data["o"]), str(data.get("c", ""))
