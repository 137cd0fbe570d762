"""active-users without HTTP: categorisation, totals, policy validation, rendering."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.errors import UsageError
from agent.exports import render_csv, safe_text
from agent.graph.licensing import LicenseAssignment, LicensedUser, SubscribedSku, parse_user
from jobs.active_users import (
    COLUMNS,
    DEFAULT_E5_SKU_IDS,
    DEFAULT_EXCHANGE_ONLY_SKU_IDS,
    Policy,
    Row,
    Rules,
    categorise,
    export_month,
    parse_month,
    per_sku,
    previous_month,
    render_export,
    totals,
)

E5 = "06ebc4ee-1bb5-47dd-8120-11324bc54e06"  # SPE_E5
O365_E5 = "c7df2760-2c81-4ef7-b578-5b5392b571df"  # ENTERPRISEPREMIUM
EXO1 = "4b9405b0-7788-4568-add1-99614e613b69"  # EXCHANGESTANDARD
EXO2 = "19ec0d23-8335-4cbd-94ac-6050e30712fa"  # EXCHANGEENTERPRISE
E5_SECURITY = "26124093-3d78-432b-b5dc-48bf992543d5"  # IDENTITY_THREAT_PROTECTION
GROUP_A = "aaaaaaaa-0000-4000-8000-000000000001"
GROUP_B = "bbbbbbbb-0000-4000-8000-000000000002"
SKUS = [SubscribedSku(E5, "SPE_E5", "Enabled", 10, 9),
        SubscribedSku(O365_E5, "ENTERPRISEPREMIUM", "Enabled", 5, 1),
        SubscribedSku(EXO1, "EXCHANGESTANDARD", "Enabled", 5, 2),
        SubscribedSku(EXO2, "EXCHANGEENTERPRISE", "Enabled", 5, 1),
        SubscribedSku(E5_SECURITY, "IDENTITY_THREAT_PROTECTION", "Enabled", 5, 1)]
REFERENCE_CSV = Path(__file__).parent / "data" / "licensing-reference-extract.csv"


def state(sku: str, group: str | None = None, st: str = "Active",
          error: str | None = None) -> LicenseAssignment:
    return LicenseAssignment(sku_id=sku, assigned_by_group=group, state=st, error=error)


def person(name: str, *assignments: LicenseAssignment, assigned: tuple[str, ...] | None = None,
           enabled: bool | None = True, user_type: str = "Member") -> LicensedUser:
    held = tuple(dict.fromkeys(a.sku_id for a in assignments if a.state == "Active"))
    return LicensedUser(id=f"id-{name}", user_principal_name=f"{name}@contoso.nl",
                        display_name=name.title(), account_enabled=enabled,
                        user_type=user_type,
                        assigned_sku_ids=held if assigned is None else assigned,
                        assignments=assignments)


def rules(**policy: Any) -> Rules:
    return Rules.from_policy(Policy(**policy), SKUS)


def row_of(user: LicensedUser, **policy: Any) -> Row:
    row = categorise(user, rules(**policy))
    assert row is not None
    return row


def cells(row: Row, **policy: Any) -> dict[str, str]:
    return dict(zip(COLUMNS, row.cells(rules(**policy)), strict=True))


# ---- categories -----------------------------------------------------------------------------

def test_direct_e5_is_counted() -> None:
    row = row_of(person("anna", state(E5)))
    assert (row.category, row.counted) == ("e5", True)
    c = cells(row)
    assert c["sku_part_numbers"] == "SPE_E5"
    assert c["category_skus"] == "SPE_E5"
    assert c["category_sources"] == "SPE_E5: direct"
    assert c["reason"] == "counted: E5"
    assert (c["account_enabled"], c["counted"]) == ("true", "true")


def test_group_inherited_e5_counts_and_names_the_group() -> None:
    row = row_of(person("gea", state(E5, GROUP_A)))
    assert (row.category, row.counted) == ("e5", True)
    assert cells(row)["category_sources"] == f"SPE_E5: group {GROUP_A}"


def test_direct_and_group_count_once() -> None:
    row = row_of(person("dirk", state(E5, GROUP_A), state(E5), state(E5, GROUP_B)))
    assert row.held == (E5,)
    assert cells(row)["category_sources"] == f"SPE_E5: direct + group {GROUP_A} + group {GROUP_B}"
    assert totals([row]).active == 1


def test_e5_wins_over_exchange() -> None:
    row = row_of(person("esther", state(E5), state(EXO1)))
    assert row.category == "e5"
    c = cells(row)
    assert c["sku_part_numbers"] == "EXCHANGESTANDARD;SPE_E5"
    assert c["category_skus"] == "SPE_E5"


def test_office_365_e5_is_e5() -> None:
    assert row_of(person("olga", state(O365_E5))).category == "e5"


def test_exchange_only() -> None:
    row = row_of(person("roos", state(EXO2, GROUP_A)))
    assert (row.category, row.counted) == ("exchange-only", True)
    assert cells(row)["reason"] == "counted: Exchange Online (no E5)"


def test_error_state_is_not_a_held_licence() -> None:
    user = person("fleur", state(E5, GROUP_A, "Error", "CountViolation"))
    assert user.assigned_sku_ids == ()
    row = row_of(user)
    assert (row.category, row.counted) == ("other", False)
    c = cells(row)
    assert c["sku_part_numbers"] == ""
    assert c["not_held"] == f"SPE_E5: Error (CountViolation) group {GROUP_A}"
    assert "SPE_E5 assigned but not held" in c["reason"]


def test_error_state_even_if_graph_lists_it_in_assigned_licenses() -> None:
    user = person("fleur", state(E5, GROUP_A, "Error", "CountViolation"), assigned=(E5,))
    assert row_of(user).category == "other"


def test_failed_e5_falls_back_to_held_exchange() -> None:
    row = row_of(person("frank", state(E5, GROUP_A, "Error", "CountViolation"), state(EXO2)))
    assert (row.category, row.counted) == ("exchange-only", True)
    assert cells(row)["not_held"].startswith("SPE_E5: Error (CountViolation)")


def test_active_with_error_is_held_only_when_configured() -> None:
    user = person("mila", state(E5, None, "ActiveWithError", "Other"))
    assert row_of(user).category == "other"
    assert row_of(user, held_states=["Active", "ActiveWithError"]).category == "e5"


def test_assigned_licence_without_state_is_held() -> None:
    row = row_of(person("old", assigned=(E5,)))
    assert row.category == "e5"
    assert cells(row)["category_sources"] == "SPE_E5: assignedLicenses (no assignment state)"


def test_disabled_account_is_listed_not_counted() -> None:
    row = row_of(person("wim", state(E5), enabled=False))
    assert (row.category, row.counted) == ("e5", False)
    assert cells(row)["reason"] == "not counted: licensed, disabled (E5)"
    assert totals([row]).licensed_disabled == 1
    counted = row_of(person("wim", state(E5), enabled=False), count_disabled=True)
    assert counted.counted
    assert "count_disabled = true" in counted.reason


def test_unknown_account_state_is_counted_and_said() -> None:
    row = row_of(person("x", state(E5), enabled=None))
    assert row.counted
    assert cells(row)["account_enabled"] == "unknown"
    assert "taken as enabled" in row.reason


def test_exclusions_by_upn_and_id_case_insensitive() -> None:
    by_upn = row_of(person("scan", state(E5)), exclude_users=["SCAN@Contoso.NL"])
    by_id = row_of(person("room", state(EXO1)), exclude_users=["ID-ROOM"])
    for row in (by_upn, by_id):
        assert not row.counted
        assert row.reason.startswith("not counted: in exclude_users")
    assert totals([by_upn, by_id]).excluded == 2


def test_guests() -> None:
    guest = person("kim", state(EXO1), user_type="Guest")
    assert row_of(guest).counted
    row = row_of(guest, count_guests=False)
    assert not row.counted
    assert "guest" in row.reason


def test_add_on_only_is_other() -> None:
    row = row_of(person("otto", state(E5_SECURITY)))
    assert (row.category, row.counted) == ("other", False)
    assert row.reason == "not counted: holds no E5 or Exchange Online licence"


def test_no_licence_is_no_row() -> None:
    assert categorise(person("lisa"), rules()) is None


def test_unknown_sku_is_shown_by_id() -> None:
    sku = "11111111-2222-4333-8444-555555555555"
    row = row_of(person("u", state(sku)))
    assert cells(row)["sku_part_numbers"] == sku


def test_totals_and_per_sku() -> None:
    r = rules(exclude_users=["ex@contoso.nl"])
    users = [person("a", state(E5)), person("b", state(E5, GROUP_A), state(EXO1)),
             person("c", state(EXO1)), person("d", state(E5), enabled=False),
             person("ex", state(E5)), person("f", state(E5, GROUP_A, "Error", "CountViolation")),
             person("g", state(E5_SECURITY))]
    rows = [row for u in users if (row := categorise(u, r)) is not None]
    t = totals(rows)
    assert t.as_dict() == {"active": 3, "e5": 2, "exchange_only": 1, "licensed_disabled": 1,
                           "excluded": 1, "other": 2, "licensed_users": 7,
                           "not_held_users": 1}
    skus = per_sku(rows, r, SKUS)
    assert skus["SPE_E5"] == {"sku_id": E5, "category": "e5", "holders": 4, "counted": 2,
                              "not_held": 1, "prepaid_units": 10, "consumed_units": 9}
    assert skus["EXCHANGESTANDARD"]["holders"] == 2
    assert skus["EXCHANGESTANDARD"]["counted"] == 2  # b (counted as e5) and c
    assert skus["ENTERPRISEPREMIUM"]["holders"] == 0  # in the tenant, nobody holds it


# ---- Graph JSON -> model ---------------------------------------------------------------------

def test_parse_user_from_graph_json() -> None:
    raw = {"id": "u1", "userPrincipalName": "a@contoso.nl", "displayName": "A",
           "accountEnabled": False, "userType": "Member",
           "assignedLicenses": [{"disabledPlans": [], "skuId": E5.upper()}],
           "licenseAssignmentStates": [
               {"assignedByGroup": None, "disabledPlans": [], "error": "None",
                "lastUpdatedDateTime": "2024-01-01T00:00:00Z", "skuId": E5, "state": "Active"},
               {"assignedByGroup": GROUP_A, "disabledPlans": [], "error": "CountViolation",
                "lastUpdatedDateTime": None, "skuId": EXO1, "state": "Error"}]}
    user = parse_user(raw)
    assert user.assigned_sku_ids == (E5,)
    assert user.account_enabled is False
    assert user.assignments == (state(E5), state(EXO1, GROUP_A, "Error", "CountViolation"))
    bare = parse_user({"id": "u2", "assignedLicenses": [], "licenseAssignmentStates": None})
    assert not bare.has_licence_data


# ---- policy ----------------------------------------------------------------------------------

def test_policy_validation() -> None:
    assert Policy(e5_sku_ids=[E5.upper(), E5]).e5_sku_ids == [E5]
    with pytest.raises(ValidationError, match="not an SKU id"):
        Policy(e5_sku_ids=["SPE_E5"])
    with pytest.raises(ValidationError, match="in both"):
        Policy(e5_sku_ids=[E5], exchange_only_sku_ids=[E5])
    with pytest.raises(ValidationError, match="sender is empty"):
        Policy(deliver_to=["sm@contoso.nl"])
    with pytest.raises(ValidationError, match="not a mail address"):
        Policy(deliver_to=["nobody"], sender="x@contoso.nl")
    with pytest.raises(ValidationError, match="must include 'Active'"):
        Policy(held_states=["ActiveWithError"])
    with pytest.raises(ValidationError, match="unknown state"):
        Policy(held_states=["Active", "Fine"])
    with pytest.raises(ValidationError):
        Policy(unknown_key=1)  # type: ignore[call-arg]


def _reference() -> dict[str, str]:
    with REFERENCE_CSV.open(encoding="utf-8", newline="") as fh:
        return {r["GUID"]: r["String_Id"] for r in csv.DictReader(fh)}


def test_default_sku_ids_are_microsofts() -> None:
    reference = _reference()
    e5_parts = {reference[g] for g in DEFAULT_E5_SKU_IDS}
    assert {"SPE_E5", "SPE_E5_NOPSTNCONF", "ENTERPRISEPREMIUM", "ENTERPRISEPREMIUM_NOPSTNCONF",
            "O365_w/o_Teams_Bundle_M5", "Office_365_w/o_Teams_Bundle_E5"} <= e5_parts
    assert not e5_parts & {"IDENTITY_THREAT_PROTECTION", "INFORMATION_PROTECTION_COMPLIANCE",
                           "EMSPREMIUM", "M365_E5_SUITE_COMPONENTS", "WIN_ENT_E5"}
    assert [reference[g] for g in DEFAULT_EXCHANGE_ONLY_SKU_IDS] == [
        "EXCHANGESTANDARD", "EXCHANGEENTERPRISE", "EXCHANGEDESKLESS"]
    assert Policy().e5_sku_ids == DEFAULT_E5_SKU_IDS


# ---- rendering -------------------------------------------------------------------------------

def test_csv_neutralises_formulas() -> None:
    data = render_csv(["a", "b"], [["=HYPERLINK(\"x\")", "-1"], ["plain, text", "@x"]])
    parsed = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    assert parsed == [["a", "b"], ["'=HYPERLINK(\"x\")", "'-1"], ["plain, text", "'@x"]]
    assert data.endswith(b"\r\n")
    assert safe_text("Anna") == "Anna"


def _snapshot(rows: list[Row], r: Rules, delivered: bool = False) -> dict[str, Any]:
    return {"format": 1, "month": "2026-05", "tenant_id": "t", "taken_at": "2026-05-29T05:00:00Z",
            "run_id": "r", "delivered": delivered, "policy": {}, "totals": totals(rows).as_dict(),
            "per_sku": per_sku(rows, r, SKUS), "columns": list(COLUMNS),
            "rows": [row.cells(r) for row in rows],
            "export": {"file": "active-users-2026-05.csv", "sha256": ""}}


def test_rendering_is_deterministic() -> None:
    r = rules()
    rows = [row for u in (person("a", state(E5)), person("b", state(EXO1), enabled=False))
            if (row := categorise(u, r)) is not None]
    snap = _snapshot(rows, r)
    assert render_export(snap, "csv") == render_export(snap, "csv")
    first, second = render_export(snap, "xlsx"), render_export(snap, "xlsx")
    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        core = archive.read("docProps/core.xml").decode()
    assert "2026-05-29T05:00:00Z" in core
    header = render_export(snap, "csv").split(b"\r\n")[0].decode()
    assert header.split(",")[:7] == ["user_id", "user_principal_name", "display_name",
                                     "user_type", "category", "account_enabled", "counted"]


def test_months() -> None:
    assert parse_month("2026-05") == (2026, 5)
    assert previous_month("2026-01") == "2025-12"
    assert previous_month("2026-05") == "2026-04"
    for bad in ("2026-5", "2026-13", "May 2026", "2026-00"):
        with pytest.raises(UsageError, match="YYYY-MM"):
            parse_month(bad)


def test_export_month_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no active-users snapshot for 2026-05"):
        export_month(tmp_path, "2026-05")
    with pytest.raises(UsageError, match="YYYY-MM"):
        export_month(tmp_path, "05-2026")
    with pytest.raises(UsageError, match="csv or xlsx"):
        export_month(tmp_path, "2026-05", "pdf")
