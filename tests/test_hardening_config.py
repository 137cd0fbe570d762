"""Bad configuration, fuzzed: whatever is wrong with the file (or the environment), the CLI
exits 2 with one `source: key: problem` line per problem, and never shows a traceback or
calls it an internal error.

Generated with hypothesis from the demo's complete configuration: malformed TOML (the
valid text cut, spliced and garbled), wrong types and unknown keys at every level, bad
dates, cron expressions, SKU ids and privileged-access register entries. Driven through
`agent.cli.main` in-process (`config check`), plus a few real subprocesses.
"""

from __future__ import annotations

import copy
import json
import os
import re
import string
from collections.abc import Iterator
from datetime import date, time
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tests.helpers_hardening import clean_env, cli, demo_config_data, write_toml

# HARDENING_FUZZ_EXAMPLES=2000 for a deeper (random) search; the suite's default is fixed
DEEP = int(os.environ.get("HARDENING_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=DEEP or 60, deadline=None, derandomize=not DEEP, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
SECTIONS = ("active_users", "offboarding", "device_compliance", "privileged_roles")
# `source: key: problem`; a problem with the whole file is `file: problem`
LINE = re.compile(r"^  (?P<source>/[^:]+|environment [A-Z0-9_]+|\$CREDENTIALS_DIRECTORY): "
                  r"(?P<rest>.+)$")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("DAP_AGENT_") or key == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(key)
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def base_config(tmp: Path) -> dict[str, Any]:
    """The demo's configuration with every job's schedule spelled out."""
    data = demo_config_data(tmp)
    schedules = {"active_users": "last-working-day 07:00", "offboarding": "0 6 * * *",
                 "device_compliance": "0 7 * * 1-5", "privileged_roles": "0 7 * * 1"}
    for section, schedule in schedules.items():
        data.setdefault(section, {})["schedule"] = schedule
    return data


def check(tmp: Path, capsys: pytest.CaptureFixture[str],
          *, text: str | bytes | None = None,
          data: dict[str, Any] | None = None) -> tuple[int, list[str], Path]:
    """Run `config check` on the file; return (exit code, problem lines, the file)."""
    from agent.cli import main

    path = tmp / "agent.toml"
    if data is not None:
        path.write_text(to_toml(data), encoding="utf-8")
    elif isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text, encoding="utf-8")
    capsys.readouterr()
    code = main(["--config", str(path), "config", "check"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "internal error" not in err, err
    assert code in (0, 2), (code, err)
    if code == 0:
        assert err == "" or "error" not in err
        return code, [], path
    head, *lines = err.rstrip("\n").split("\n")
    assert head.startswith("dap-agent: error: "), err
    if head == "dap-agent: error: invalid configuration:":
        assert lines, err
        for line in lines:
            match = LINE.match(line)
            assert match, f"not 'source: key: problem': {line!r}"
        lines = [line.strip() for line in lines]
    else:
        lines = [head.removeprefix("dap-agent: error: ")]
    return code, lines, path


def _toml_str(text: str) -> str:
    """A TOML basic string: JSON's escapes, plus DEL, which TOML forbids raw."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value == float("inf") else
                                             "-inf" if value == float("-inf") else repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (date, time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_str(k)} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(type(value).__name__)


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def to_toml(data: dict[str, Any]) -> str:
    """TOML for a top-level table of values, sub-tables and arrays of tables (any value
    type a TOML file can hold, wrong or right for the setting)."""
    lines: list[str] = []
    sections: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) or _is_tables(value):
            sections.append((key, value))
        else:
            lines.append(f"{_toml_str(key)} = {_toml_value(value)}")
    for key, value in sections:
        for table in value if isinstance(value, list) else [value]:
            lines.append(f"[[{key}]]" if isinstance(value, list) else f"[{key}]")
            nested = [(sub, item) for sub, item in table.items() if _is_tables(item)]
            lines += [f"{_toml_str(sub)} = {_toml_value(item)}"
                      for sub, item in table.items() if not _is_tables(item)]
            for sub, items in nested:
                for entry in items:
                    lines.append(f"[[{key}.{sub}]]")
                    lines += [f"{_toml_str(k)} = {_toml_value(v)}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"


def named(lines: list[str], path: Path, key: str) -> bool:
    """Whether a problem line names the file and the key (dotted, list items by index)."""
    return any(line.strip().startswith(f"{path}: {key}") for line in lines)


def test_the_base_configuration_is_valid(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = check(tmp_path, capsys, data=base_config(tmp_path))
    assert code == 0, lines


# ---- malformed TOML --------------------------------------------------------------------------

def toml_text(tmp: Path) -> str:
    return to_toml(base_config(tmp))


def test_a_cut_off_table_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    valid = toml_text(tmp_path)
    text = valid[: len(valid) // 3] + '\n[offboarding\nmode = "enforce'
    code, lines, path = check(tmp_path, capsys, text=text)
    assert code == 2 and lines[0].startswith(f"{path}: TOML syntax error"), lines


@FUZZ
@given(st.data())
def test_malformed_toml_is_a_usage_error_naming_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], data: Any) -> None:
    valid = toml_text(tmp_path)
    cut = data.draw(st.integers(0, len(valid)))
    junk = data.draw(st.text(alphabet=string.printable + "\u00e9\u2028\x00=[]\"'{}#",
                             max_size=12))
    keep = data.draw(st.integers(0, 40))
    text = valid[:cut] + junk + valid[cut + keep:]
    code, lines, path = check(tmp_path, capsys, text=text)
    if code == 2 and "TOML syntax error" in lines[0]:
        assert lines[0].startswith(f"{path}: TOML syntax error")


@FUZZ
@given(st.binary(min_size=1, max_size=200))
def test_binary_garbage_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         garbage: bytes) -> None:
    code, lines, path = check(tmp_path, capsys, text=b"tenant_id = 1\n" + garbage)
    assert code == 2
    assert lines and all(str(path) in line for line in lines)


# ---- unknown keys at every level -------------------------------------------------------------

def tables(config: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every table of the configuration with its dotted path ('' for the top level)."""
    yield prefix, config
    for key, value in config.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            yield from tables(value, path)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    yield from tables(item, f"{path}.{index}")


KEY = st.from_regex(r"\A[a-z][a-z0-9_]{0,14}\Z")


@FUZZ
@given(st.data(), KEY)
def test_unknown_keys_at_every_level_are_named(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               data: Any, key: str) -> None:
    config = base_config(tmp_path)
    where, table = data.draw(st.sampled_from(list(tables(config))))
    assume(key not in table)
    if where == "" and key in ("client_secret", "client_certificate_path", "graph_url",
                               "authority_host", "timezone", "state_dir", "tenant_id",
                               "client_id", *SECTIONS):
        return
    if where in SECTIONS and key in known_keys(where):
        return
    table[key] = data.draw(st.sampled_from([1, "x", True, [1], date(2026, 1, 1)]))
    code, lines, path = check(tmp_path, capsys, data=config)
    assert code == 2
    full = f"{where}.{key}" if where else key
    assert any(line.strip() == f"{path}: {full}: unknown key" for line in lines), lines


def known_keys(section: str) -> set[str]:
    from agent.settings import Settings

    model = Settings.model_fields[section].annotation
    assert model is not None
    fields: dict[str, Any] = getattr(model, "model_fields", {})
    return {f.alias or name for name, f in fields.items()}


def test_every_unknown_key_is_reported_at_once(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = base_config(tmp_path)
    expected = []
    for where, table in list(tables(config)):
        table["surplus"] = 1
        expected.append(f"{where}.surplus" if where else "surplus")
    code, lines, path = check(tmp_path, capsys, data=config)
    assert code == 2
    for key in expected:
        assert named(lines, path, key), (key, lines)


# ---- wrong types everywhere -----------------------------------------------------------------

def leaves(config: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any], str]]:
    """(dotted path, the table holding it, its key) of every non-table value."""
    for key, value in config.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            yield from leaves(value, path)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for index, item in enumerate(value):
                yield from leaves(item, f"{path}.{index}")
        else:
            yield path, config, key


VALUES = st.one_of(
    st.integers(-10**12, 10**12), st.floats(allow_nan=True), st.booleans(),
    st.text(max_size=30), st.lists(st.integers(-5, 5), max_size=3),
    st.lists(st.text(max_size=8), max_size=3), st.dates(), st.times(),
    st.datetimes(), st.dictionaries(KEY, st.integers(0, 3), min_size=1, max_size=2),
)


@FUZZ
@given(st.data(), VALUES)
def test_wrong_types_anywhere_are_usage_errors_naming_the_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], data: Any, value: Any) -> None:
    config = base_config(tmp_path)
    where, table, key = data.draw(st.sampled_from(list(leaves(config))))
    if where in ("graph_url", "state_dir"):
        return  # the test's own sandbox and state: changing them is not a type error
    table[key] = value
    code, lines, path = check(tmp_path, capsys, data=config)
    if isinstance(value, dict):  # a table where a value belongs is never right
        assert code == 2
    if code == 2:
        named = {where}
        if where.endswith((".start", ".end")):  # a register period: "end before start"
            parent = where.rsplit(".", 1)[0]   # names the other end of it
            named |= {f"{parent}.start", f"{parent}.end"}
        source_ok = any(line.strip().startswith(f"{path}: {w}") for w in named for line in lines)
        assert source_ok, (where, value, lines)


# ---- dates, cron, SKU ids, register entries --------------------------------------------------

# numbers: test_a_number_is_not_a_date
BAD_DATES = st.one_of(
    st.sampled_from(["2026-13-01", "2026-02-30", "tomorrow", "", "01-01-2026", "2026/01/01",
                     "2026-1-1", "0000-01-01"]),
    st.text(max_size=12).filter(lambda t: not _iso_date(t)), st.booleans(),
    st.lists(st.dates(), min_size=1, max_size=2), st.times(),
)


def _iso_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


@FUZZ
@given(st.integers(0, 9), st.sampled_from(["start", "end"]), BAD_DATES)
def test_bad_register_dates(tmp_path: Path, capsys: pytest.CaptureFixture[str], index: int,
                            field: str, value: Any) -> None:
    config = base_config(tmp_path)
    register = config["privileged_roles"]["register"]
    entry = register[index % len(register)]
    entry[field] = value
    code, lines, path = check(tmp_path, capsys, data=config)
    where = f"privileged_roles.register.{index % len(register)}.{field}"
    assert code == 2, value
    assert named(lines, path, where), lines


@pytest.mark.parametrize("value", [0, 86400, 1767225600, 1767225600.0])
def test_a_number_is_not_a_date(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                value: float) -> None:
    config = base_config(tmp_path)
    config["privileged_roles"]["register"][0]["start"] = value
    code, lines, path = check(tmp_path, capsys, data=config)
    assert code == 2
    assert named(lines, path, "privileged_roles.register.0.start"), lines


@FUZZ
@given(st.dates(), st.integers(1, 4000))
def test_register_end_before_start(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   start: date, days: int) -> None:
    from datetime import timedelta

    assume(start.toordinal() - days >= 1)
    config = base_config(tmp_path)
    entry = config["privileged_roles"]["register"][0]
    entry["start"], entry["end"] = start, start - timedelta(days=days)
    code, lines, path = check(tmp_path, capsys, data=config)
    assert code == 2
    assert named(lines, path, "privileged_roles.register.0.end"), lines


CRON_FIELD = st.one_of(
    st.just("*"), st.integers(-5, 70).map(str), st.sampled_from(["*/0", "*/61", "1-", "-1",
                                                                   "5-1", "1,,2", "?", "L",
                                                                   "mon-fri", "jan", "1-5/2",
                                                                   "99999999999999999999"]),
    st.text(alphabet="0123456789*/-,", min_size=1, max_size=6))
CRON = st.one_of(
    st.lists(CRON_FIELD, min_size=1, max_size=7).map(" ".join),
    st.text(max_size=30),
    st.from_regex(r"\Alast-working-day [0-9]{1,3}:[0-9]{1,3}\Z"),
)


@FUZZ
@given(st.sampled_from(SECTIONS), CRON)
@example("offboarding", "0 0 30 2 *")
@example("offboarding", "0 0 31 4 *")
@example("offboarding", "60 24 32 13 8")
@example("offboarding", "*/0 * * * *")
@example("active_users", "last-working-day 24:00")
@example("active_users", "99999999999999999999 * * * *")
def test_bad_schedules_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 section: str, schedule: str) -> None:
    config = base_config(tmp_path)
    config[section]["schedule"] = schedule
    code, lines, path = check(tmp_path, capsys, data=config)
    if code == 2:
        assert named(lines, path, f"{section}.schedule"), lines


@FUZZ
@given(st.sampled_from(["e5_sku_ids", "exchange_only_sku_ids"]),
       st.one_of(st.text(max_size=40), st.uuids().map(lambda u: str(u)[:-1] + "g"),
                 st.uuids().map(lambda u: str(u) + "0")))
def test_bad_sku_ids_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str,
                               sku: str) -> None:
    import uuid

    try:
        uuid.UUID(sku.strip())
        return  # a GUID in another spelling is fine
    except ValueError:
        pass
    config = base_config(tmp_path)
    config["active_users"][key] = ["06ebc4ee-1bb5-47dd-8120-11324bc54e06", sku] \
        if key == "e5_sku_ids" else [sku]
    code, lines, path = check(tmp_path, capsys, data=config)
    assert code == 2
    assert named(lines, path, f"active_users.{key}"), lines


REGISTER_FIELDS = ("principal", "role", "kind", "start", "end", "approved_by", "reference",
                   "scope")


@FUZZ
@given(st.integers(0, 9), st.sets(st.sampled_from(REGISTER_FIELDS), min_size=1),
       st.dictionaries(st.sampled_from(REGISTER_FIELDS),
                       st.one_of(st.text(max_size=20), st.lists(st.text(max_size=20),
                                                                max_size=3),
                                 st.integers(), st.dates()), max_size=3))
def test_bad_register_entries(tmp_path: Path, capsys: pytest.CaptureFixture[str], index: int,
                              drop: set[str], replace: dict[str, Any]) -> None:
    config = base_config(tmp_path)
    register = config["privileged_roles"]["register"]
    number = index % len(register)
    entry = register[number]
    for name in drop:
        entry.pop(name, None)
    entry.update(replace)
    code, lines, path = check(tmp_path, capsys, data=config)
    required = {"principal", "role", "kind", "start", "end", "approved_by"}
    if required & (drop - set(replace)):
        assert code == 2
    if code == 2:
        assert named(lines, path, f"privileged_roles.register.{number}"), lines


def test_a_register_that_is_not_a_list_of_tables(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for value in ("everyone", 3, ["admin@contoso.nl"], {"principal": "x"}):
        config = base_config(tmp_path)
        config["privileged_roles"]["register"] = copy.deepcopy(value)
        code, lines, path = check(tmp_path, capsys, data=config)
        assert code == 2
        assert named(lines, path, "privileged_roles.register"), lines


def test_every_problem_is_reported_at_once(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    config = base_config(tmp_path)
    config["offboarding"]["mode"] = "sometimes"
    config["offboarding"]["schedule"] = "61 * * * *"
    config["active_users"]["e5_sku_ids"] = ["not-a-guid"]
    config["privileged_roles"]["register"][0]["start"] = "2026-13-01"
    config["device_compliance"]["stale_after_days"] = 0
    config["timezone"] = "Mars/Olympus"
    code, lines, path = check(tmp_path, capsys, data=config)
    assert code == 2
    for key in ("offboarding.mode", "offboarding.schedule", "active_users.e5_sku_ids",
                "privileged_roles.register.0.start", "device_compliance.stale_after_days",
                "timezone"):
        assert named(lines, path, key), (key, lines)


# ---- the environment -------------------------------------------------------------------------

def check_env(tmp: Path, capsys: pytest.CaptureFixture[str], name: str,
              value: str) -> tuple[int, list[str]]:
    write_toml(tmp / "agent.toml", base_config(tmp))
    os.environ[name] = value
    try:
        code, lines, _ = check(tmp, capsys)
    finally:
        del os.environ[name]
    if code == 2:
        assert any(f"environment {name}" in line for line in lines), (name, lines)
    return code, lines


ENV_TEXT = st.text(alphabet=string.ascii_letters + string.digits + " -*/[]{}\",:", max_size=20)


@FUZZ
@given(st.sampled_from(["DAP_AGENT_OFFBOARDING__MAX_PURGE_PER_RUN",
                        "DAP_AGENT_OFFBOARDING__MODE", "DAP_AGENT_TIMEZONE",
                        "DAP_AGENT_PRIVILEGED_ROLES__GLOBAL_ADMIN_COUNT",
                        "DAP_AGENT_DEVICE_COMPLIANCE__SCHEDULE",
                        "DAP_AGENT_OFFBOARDING__WIPE_DEVICES"]), ENV_TEXT)
def test_bad_environment_values_name_the_variable(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, value: str) -> None:
    check_env(tmp_path, capsys, name, value)


@FUZZ
@given(st.sampled_from(["DAP_AGENT_ACTIVE_USERS__E5_SKU_IDS",
                        "DAP_AGENT_OFFBOARDING__PROTECTED_USERS",
                        "DAP_AGENT_PRIVILEGED_ROLES__REGISTER"]),
       st.one_of(st.just("[]"), st.just('["not-a-guid"]'), st.just("[1, 2]"), st.just("{}")))
def test_bad_json_lists_in_the_environment_name_the_variable(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, value: str) -> None:
    check_env(tmp_path, capsys, name, value)


@pytest.mark.parametrize(("name", "value"), [
    ("DAP_AGENT_ACTIVE_USERS__E5_SKU_IDS", "06ebc4ee-1bb5-47dd-8120-11324bc54e06"),
    ("DAP_AGENT_OFFBOARDING__PROTECTED_USERS", "admin@contoso.nl"),
    ("DAP_AGENT_PRIVILEGED_ROLES__REGISTER", "[{"),
])
def test_a_list_in_the_environment_that_is_not_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, value: str) -> None:
    code, _ = check_env(tmp_path, capsys, name, value)
    assert code == 2


# ---- a few real processes --------------------------------------------------------------------

@pytest.mark.parametrize("command", [["config", "check"], ["run", "active-users"], ["jobs"],
                                     ["audit", "verify"]])
def test_cli_processes_exit_2_on_a_bad_file(tmp_path: Path, command: list[str]) -> None:
    config = base_config(tmp_path)
    config["offboarding"]["surplus"] = True
    config["privileged_roles"]["register"][1]["end"] = "2026-02-30"
    config["device_compliance"]["schedule"] = "every day"
    path = write_toml(tmp_path / "agent.toml", config)
    result = cli("--config", str(path), *command, env=clean_env())
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for key in ("offboarding.surplus", "privileged_roles.register.1.end",
                "device_compliance.schedule"):
        assert f"{path}: {key}: " in result.stderr


def test_cli_process_with_a_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(toml_text(tmp_path)[:400], encoding="utf-8")
    result = cli("--config", str(path), "run", "offboarding", env=clean_env())
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(path) in result.stderr


def test_cli_process_with_a_directory_or_missing_file(tmp_path: Path) -> None:
    for target in (tmp_path, tmp_path / "missing.toml"):
        result = cli("--config", str(target), "config", "check", env=clean_env())
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert str(target) in result.stderr
