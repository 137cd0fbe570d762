"""A small TOML writer for the files the agent generates (the demo configuration)."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML value")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def dumps(data: dict[str, Any], _prefix: str = "") -> str:
    lines: list[str] = []
    tables: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) or _is_table_array(value):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, value in tables:
        name = f"{_prefix}{key}"
        if isinstance(value, dict):
            out += f"\n[{name}]\n" + dumps(value, name + ".")
        else:
            for item in value:
                out += f"\n[[{name}]]\n" + dumps(item, name + ".")
    return out
