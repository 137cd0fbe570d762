"""sd_notify(3) without a dependency: one datagram per message to `$NOTIFY_SOCKET`.

`Type=notify` units learn READY=1 (start-up done), STATUS= (shown by `systemctl status`:
the next run times), WATCHDOG=1 (the event loop is alive; `WatchdogSec=` restarts a hung
daemon) and STOPPING=1. Outside systemd (no `$NOTIFY_SOCKET`) every call does nothing.
A notification that cannot be sent is logged and never stops the daemon.
"""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger("agent.systemd")


class Notifier:
    def __init__(self, address: str | None) -> None:
        self.address: str | None = None
        if address:
            # "@name" is an abstract-namespace socket (systemd >= 246 may hand one out)
            self.address = "\0" + address[1:] if address.startswith("@") else address

    @classmethod
    def from_env(cls) -> Notifier:
        return cls(os.environ.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send e.g. `notify("READY=1", "STATUS=...")`; True if it was sent."""
        if self.address is None:
            return False
        message = "\n".join(a.replace("\n", " ") for a in assignments).encode()
        try:  # a socket per message: a few a minute, and nothing left open to leak
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:
            log.warning("systemd notification failed", error=str(exc))
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str) -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of `WatchdogSec=`), or None if not asked.

    `$WATCHDOG_PID`, when set, names the process systemd expects the pings from.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2
