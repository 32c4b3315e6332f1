"""Every threshold of the ingestion gate, in one typed model.

The suites (:mod:`validation.suites`) hold the *rules*; the numbers those rules use live here,
so tightening the gate is a one-line change reviewed in one place. ``GateConfig()`` gives the
defaults; unknown keys are rejected so a typo cannot silently keep the old value.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GateConfig(BaseModel):
    """Thresholds of the Great Expectations gate run by ``ingest_events``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- time ---------------------------------------------------------------------------------
    ts_tolerance_minutes: int = Field(
        60,
        ge=0,
        description="event_ts may fall this far outside the data interval (late/early clocks)",
    )

    # --- volume band --------------------------------------------------------------------------
    volume_window_days: int = Field(
        7, ge=1, description="trailing days whose average event count defines the band"
    )
    volume_min_history_days: int = Field(
        3,
        ge=1,
        description="days exempt from the band: it applies once this many trailing days exist",
    )
    volume_min_ratio: float = Field(
        0.2, gt=0, description="fewer rows than this x the trailing average is a collapse"
    )
    volume_max_ratio: float = Field(
        5.0, gt=1, description="more rows than this x the trailing average is a flood"
    )
    min_event_rows: int = Field(1, ge=0, description="a day of events with fewer rows fails")

    # --- reporting ----------------------------------------------------------------------------
    examples: int = Field(5, ge=1, le=50, description="offending values shown per failure")


DEFAULT = GateConfig()
