"""Job schedules: cron expressions and the `last-working-day HH:MM` trigger.

(Placeholder interface; the serve/scheduling work fills it in.)
"""

from __future__ import annotations

import re

_LAST_WORKING_DAY = re.compile(r"^last-working-day (\d{2}):(\d{2})$")


def parse_schedule(value: str) -> None:
    """Raise ValueError naming the problem when `value` is not a valid schedule."""
    match = _LAST_WORKING_DAY.match(value)
    if match:
        hour, minute = int(match[1]), int(match[2])
        if hour > 23 or minute > 59:
            raise ValueError(f"bad time in {value!r}")
        return
    fields = value.split()
    if len(fields) != 5:
        raise ValueError(f"{value!r} is neither a cron expression 'm h dom mon dow' nor "
                         "'last-working-day HH:MM'")
