"""The one place that reads the system time. Everything else takes `now` as an argument."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Now, in UTC, offset-aware."""
    return datetime.now(UTC)
