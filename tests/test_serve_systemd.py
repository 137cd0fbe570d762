"""sd_notify over a real AF_UNIX datagram socket, and the watchdog interval."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.systemd import Notifier, watchdog_interval


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def test_messages_arrive_as_one_datagram_each(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier(path)
    assert notifier.ready("next: offboarding 2026-12-03 06:00 CET")
    assert sock.recv(4096).decode().split("\n") == [
        "READY=1", "STATUS=next: offboarding 2026-12-03 06:00 CET", f"MAINPID={os.getpid()}"]
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.stopping("stopping: waiting for\noffboarding")  # no newline injection
    assert sock.recv(4096).decode().split("\n") == [
        "STOPPING=1", "STATUS=stopping: waiting for offboarding"]


def test_abstract_socket_address() -> None:
    name = f"dap-agent-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        assert Notifier("@" + name).status("hello")
        assert sock.recv(4096) == b"STATUS=hello"
    finally:
        sock.close()


def test_outside_systemd_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier.from_env()
    assert not notifier.enabled
    assert notifier.ready("x") is False


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path) -> None:
    assert Notifier(str(tmp_path / "gone.sock")).watchdog() is False


def test_watchdog_interval() -> None:
    me = str(os.getpid())
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "120000000"}) == 60.0  # half of WatchdogSec
    assert watchdog_interval({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": me}) == 60.0
    assert watchdog_interval({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
