"""`warning.raised` on `complaints.alerts` (contract 10.4): an early warning (防未病), once per key and week."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from shared.events.base import GroupEvent


class WarningKind(StrEnum):
    RISING = "rising"  # a weekly count far above its 8-week baseline
    ENTERPRISE_REPEAT = "enterprise_repeat"  # one enterprise, 3 or more cases within 30 days


class WarningRaised(GroupEvent):
    """A weekly count that stands out (Poisson rule), or an enterprise that keeps complaining."""

    event_type: Literal["warning.raised"] = "warning.raised"
    schema_version: Literal[1] = 1
    warning_id: str = Field(description="Deterministic from kind, key and week; the message key.")
    kind: WarningKind = Field(description="`rising` or `enterprise_repeat`.")
    key: dict[str, str] = Field(
        description='What is counted: {"region_code", "category"}, {"category"}, {"uscc"} or {"enterprise_name"}.'
    )
    week: str = Field(description="ISO week, local (Asia/Shanghai), Monday to Sunday, e.g. `2026-W48`.")
    count: int = Field(description="Cases counted: in the week (`rising`), or within 30 days (`enterprise_repeat`).")
    baseline: float | None = Field(
        default=None, description="λ: the mean of the 8 previous weeks, at least 0.5 (`rising` only)."
    )
    p_value: float | None = Field(default=None, description="P(X ≥ count) for X ~ Poisson(baseline) (`rising` only).")
