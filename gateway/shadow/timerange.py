"""Reading the ends of a review's time range: epoch seconds, ISO 8601, or an age like `2h`."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_instant(text: str, now: float) -> float:
    """Seconds since the epoch for `text`: a number of epoch seconds, an ISO 8601 time (UTC
    when it names no zone), or an age before `now` such as `90s`, `15m`, `2h`, `7d`, `1w`.

    Raises ValueError saying which forms are accepted.
    """
    value = text.strip()
    age = _AGE.match(value.lower())
    if age is not None:
        return now - float(age.group(1)) * _UNIT_S[age.group(2)]
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"time {text!r} is not finite")
        return seconds
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"time {text!r} is not epoch seconds, an ISO 8601 time, or an age like 15m, 2h, 7d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def time_range(
    since: str | None, until: str | None, now: float
) -> tuple[float | None, float | None]:
    """Both ends of a range (None: open); raises ValueError when `since` is after `until`."""
    start = None if since is None or not since.strip() else parse_instant(since, now)
    end = None if until is None or not until.strip() else parse_instant(until, now)
    if start is not None and end is not None and start > end:
        raise ValueError(f"since ({since}) is after until ({until})")
    return start, end
