"""structlog set-up: JSON lines on stderr for journald, readable lines on a terminal.

Logs never go to stdout (`--json` prints exactly one document there). A processor redacts
anything that looks like a secret or a token, whatever key it hides under.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

import structlog

SECRET_KEYS = re.compile(r"secret|password|token|authorization|assertion|private|credential",
                         re.IGNORECASE)
# a JWT, or a Bearer header value, anywhere in a string
SECRET_VALUES = re.compile(r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]*|Bearer\s+\S+", re.IGNORECASE)
REDACTED = "[redacted]"
# the configured secret values themselves: whatever echoes one (an authority's error page,
# a proxy) is scrubbed before it is printed or logged
_KNOWN_SECRETS: set[str] = set()


def remember_secret(value: str) -> None:
    if len(value) >= 6:  # shorter strings would redact ordinary words
        _KNOWN_SECRETS.add(value)


def redact_text(text: str) -> str:
    for secret in _KNOWN_SECRETS:
        text = text.replace(secret, REDACTED)
    return SECRET_VALUES.sub(REDACTED, text)


def redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: (REDACTED if SECRET_KEYS.search(str(k)) else redact_value(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if SECRET_KEYS.search(key) and key != "event":
            event[key] = REDACTED
        else:
            event[key] = redact_value(event[key])
    return event


class _CurrentStderr:
    """Writes to whatever sys.stderr is at the time (pytest swaps it; a daemon never does)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(*, verbose: bool = False, quiet: bool = False,
              json_lines: bool | None = None) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    renderer: Any = (structlog.processors.JSONRenderer() if json_lines
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,  # run_id on every line of a run
            structlog.processors.add_log_level,
            _timestamp,
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    # Libraries log through stdlib logging (azure-identity may repeat what a sign-in server
    # said, secret and all): one handler, same stream, same format, same redaction.
    handler = logging.StreamHandler(_CurrentStderr())
    handler.addFilter(_RedactingFilter())
    handler.setFormatter(_JsonFormatter() if json_lines else _TextFormatter(
        "%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # httpx logs every request (with its URL) at INFO; azure-identity is chatty too
    for name in ("httpx", "httpcore", "azure", "msal", "apscheduler"):
        logging.getLogger(name).setLevel(logging.WARNING)


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def utc_stamp(epoch: float) -> str:
    """The one timestamp format of every log line: UTC, ISO 8601, `Z`, microseconds."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _timestamp(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["timestamp"] = utc_stamp(time.time())
    return event


class _TextFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_stamp(record.created)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"event": record.getMessage(), "level": record.levelname.lower(),
                 "logger": record.name, "timestamp": utc_stamp(record.created),
                 # a library's line during a run names the run too
                 **structlog.contextvars.get_contextvars()}
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)
