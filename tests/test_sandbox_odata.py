"""The OData pieces on their own: the $filter parser, projection, skiptokens, routes."""

from __future__ import annotations

from typing import Any

import pytest

from agent.sandbox import odata, routes
from agent.sandbox.odata import ODataError

USER: dict[str, Any] = {
    "id": "u1", "userPrincipalName": "Anna.de.Vries@contoso.nl", "accountEnabled": True,
    "userType": "Member", "employeeLeaveDateTime": "2026-05-31T22:00:00Z", "age": 41,
    "assignedLicenses": [{"skuId": "06ebc4ee-1bb5-47dd-8120-11324bc54e06"}],
    "methodsRegistered": ["sms", "push"], "manager": {"id": "m1"}, "mail": None,
    "_members": ["secret"],
}


@pytest.mark.parametrize(("text", "expected"), [
    ("accountEnabled eq true", True),
    ("accountEnabled eq false", False),
    ("not (accountEnabled eq false)", True),
    ("userPrincipalName eq 'anna.de.vries@CONTOSO.nl'", True),  # case-insensitive
    ("startswith(userPrincipalName, 'anna')", True),
    ("endswith(userPrincipalName,'@contoso.nl')", True),
    ("userType in ('Guest', 'Member')", True),
    ("userType ne 'Member' or age ge 41", True),
    ("age gt 41", False),
    ("age lt 41.5", True),
    ("mail eq null", True),
    ("mail ne null", False),
    ("employeeLeaveDateTime le 2026-06-01T00:00:00+02:00", True),
    ("employeeLeaveDateTime lt 2026-05-31T22:00:00Z", False),
    ("assignedLicenses/any(x:x/skuId eq 06EBC4EE-1bb5-47dd-8120-11324bc54e06)", True),
    ("assignedLicenses/any(x: x/skuId eq 4b9405b0-7788-4568-add1-99614e613b69)", False),
    ("methodsRegistered/any(m:m eq 'sms')", True),
    ("manager/id eq 'm1'", True),
    ("userPrincipalName eq 'it''s'", False),
    ("(accountEnabled eq true and (age eq 1 or age eq 41))", True),
])
def test_filter_evaluates_like_graph(text: str, expected: bool) -> None:
    assert odata.parse_filter(text).matches(USER) is expected


def test_filter_reports_properties_and_operators_used() -> None:
    parsed = odata.parse_filter("assignedLicenses/any(x:x/skuId eq 06ebc4ee-1bb5-47dd-8120-"
                                "11324bc54e06) and not startswith(mail,'a') and age in (1, 2)")
    assert parsed.uses == {("assignedLicenses", "any"), ("assignedLicenses/skuId", "eq"),
                           ("*", "not"), ("mail", "startswith"), ("age", "in")}


@pytest.mark.parametrize("text", [
    "", "accountEnabled eq", "eq true", "accountEnabled equals true", "(age eq 1",
    "age eq 1)", "startswith(mail)", "assignedLicenses/all(x:x/skuId eq 1)", "age eq @",
    "startswith(mail, 3)", "employeeLeaveDateTime le 2026-13-45T00:00:00Z",
])
def test_bad_filters_raise(text: str) -> None:
    with pytest.raises(ODataError):
        odata.parse_filter(text).matches(USER)


def test_type_mismatch_is_an_error() -> None:
    with pytest.raises(ODataError):
        odata.parse_filter("accountEnabled eq 'true'").matches(USER)


def test_project_hides_underscore_keys_and_honours_select() -> None:
    assert "_members" not in odata.project(USER, (), None)
    assert odata.project(USER, ("mail", "nope"), None) == {"id": "u1", "mail": None, "nope": None}
    assert odata.project({"@odata.type": "#t", "id": "1", "a": 1}, ("a",), None) == \
        {"@odata.type": "#t", "id": "1", "a": 1}
    assert odata.project(USER, (), ("id", "age")) == {"id": "u1", "age": 41}


def test_skiptoken_round_trip_and_rejections() -> None:
    key = b"k" * 32
    digest = odata.query_digest("/users", {"$top": "5", "$skiptoken": "ignored"})
    assert digest == odata.query_digest("/USERS", {"$TOP": "5"})
    token = odata.make_skiptoken(key, 10, digest, "c1")
    assert odata.read_skiptoken(key, token, digest) == (10, "c1")
    for bad_key, bad_token, bad_digest in ((b"x" * 32, token, digest), (key, token[:-2], digest),
                                           (key, token, "other"), (key, "!!", digest)):
        with pytest.raises(ODataError):
            odata.read_skiptoken(bad_key, bad_token, bad_digest)


@pytest.mark.parametrize(("value", "ok"), [("1", True), ("999", True), ("-1", False),
                                           ("ten", False)])
def test_parse_top(value: str, ok: bool) -> None:
    if ok:
        assert odata.parse_top(value) == int(value)
    else:
        with pytest.raises(ODataError):
            odata.parse_top(value)


def test_route_table_is_consistent() -> None:
    seen = set()
    for route in routes.ROUTES:
        key = (route.version, route.method, route.template.lower())
        assert key not in seen
        seen.add(key)
        assert route.permissions
        if route.method != "GET":
            assert route.write
    assert routes.match("v1.0", "GET", "/directory/deletedItems/microsoft.graph.user").route \
        is not None
    found = routes.match("v1.0", "DELETE", "/directory/deletedItems/abc")
    assert found.route is not None and found.args == {"id": "abc"}
    assert routes.match("v1.0", "PUT", "/users/abc").allowed_methods
    assert routes.unknown_segment("v1.0", "/users/abc/photo") == "photo"
    assert {"method", "path", "permissions", "filterable"} <= set(routes.describe()[0])
    assert "User.Read.All" in routes.ALL_PERMISSIONS
    assert "User-LifeCycleInfo.Read.All" in routes.ALL_PERMISSIONS
