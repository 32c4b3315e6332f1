"""Every threshold of the ingestion gate, in one typed model.

The suites (:mod:`validation.suites`) hold the *rules*; the numbers those rules use live here,
so tightening the gate is a one-line change reviewed in one place. ``GateConfig()`` gives the
defaults; unknown keys are rejected so a typo cannot silently keep the old value.

Overrides, each on top of the one before:

1. settings: ``FLYWHEEL_GATE='{"max_bad_row_share": 0.02}'`` (a JSON object) or one variable
   per key, ``FLYWHEEL_GATE__VOLUME_K_HIGH=12`` (:attr:`core.settings.Settings.gate`);
2. the run: ``flywheel ingest DAY --gate volume_k_high=12`` (also ``ingest-range`` and ``backfill``),
   or the ``gate`` Param of the ``ingest_events`` DAG (a JSON object in the trigger form).

:meth:`GateConfig.resolve` applies them; ``flywheel gate-config`` prints every key with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.contract import RATING_MAX, RATING_MIN
from core.errors import ConfigError
from core.settings import get_settings


class GateConfig(BaseModel):
    """Thresholds of the Great Expectations gate run by ``ingest_events``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- time ---------------------------------------------------------------------------------
    ts_tolerance_minutes: int = Field(
        60,
        ge=0,
        description="event_ts may fall this far outside the data interval (late/early clocks)",
    )

    # --- values ---------------------------------------------------------------------------
    rating_min: float = Field(
        RATING_MIN,
        description="lowest rating value: the contract's half stars from 0.5 (MovieLens and most "
        "rating exports have them)",
    )
    rating_max: float = Field(RATING_MAX, description="highest rating value (5 stars)")

    # --- row-level rules ----------------------------------------------------------------------
    max_bad_row_share: float = Field(
        0.01,
        ge=0,
        le=1,
        description="rows breaking row-level rules (values, nulls, unknown items, duplicate "
        "ids) are quarantined and the rest published while their share of the table's batch is "
        "at most this; above it the table fails (a broken export, not a few bad rows)",
    )

    # --- volume band --------------------------------------------------------------------------
    min_event_rows: int = Field(1, ge=0, description="a day of events with fewer rows fails")
    volume_min_history_days: int = Field(
        7,
        ge=1,
        description="the band applies once this many earlier days were published: with less, "
        "a median and a spread mean nothing",
    )
    volume_window_days: int = Field(
        56,
        ge=2,
        description="the band learns from this many latest published days before the day "
        "(published days, not calendar days: sparse histories skip empty days)",
    )
    volume_k_low: float = Field(
        6.0,
        gt=0,
        description="fewer rows than the median log count - this many robust spreads (1.4826 x "
        "median absolute deviation) is a collapse: at the floor spread steady traffic may fall "
        "to x0.05 (a collapse to 2 % fails) while MovieLens' sparsest days pass",
    )
    volume_k_high: float = Field(
        10.0,
        gt=0,
        description="more rows than the median log count + this many spreads is a flood; wider "
        "than the low side since real traffic is bursty (single MovieLens users rate 500 films "
        "on a day whose median is 3); at the floor spread steady traffic may grow x150",
    )
    volume_min_spread: float = Field(
        0.5,
        ge=0,
        description="the spread (natural log units) is at least this: a run of identical counts "
        "(MAD 0) or very steady traffic must not shrink the band to a point",
    )
    volume_weekday_min_days: int = Field(
        4,
        ge=1,
        description="the band centres on the same weekday's median once the window holds this "
        "many days of that weekday (weekly seasonality); the overall median before that",
    )

    # --- engine -------------------------------------------------------------------------------
    gx_every_batch: bool | None = Field(
        None,
        description="run the GX data suite on every batch (true), or let an Arrow replica of "
        "each rule screen the batch first, GX running (and reporting) only when it finds "
        "something (false: same verdicts, a clean small day costs milliseconds instead of a "
        "GX run). Default (null): true for daily runs, false for a bulk history range",
    )

    # --- reporting ----------------------------------------------------------------------------
    examples: int = Field(5, ge=1, le=50, description="offending values shown per failure")

    @classmethod
    def resolve(cls, overrides: Mapping[str, Any] | None = None) -> GateConfig:
        """The defaults, then the settings' ``gate`` keys, then ``overrides`` (a run's)."""
        merged = {**get_settings().gate, **(overrides or {})}
        return cls.build(merged, "gate settings/overrides")

    @classmethod
    def from_settings(cls) -> GateConfig:
        """The defaults with the settings' overrides (``FLYWHEEL_GATE``/``FLYWHEEL_GATE__*``)."""
        return cls.resolve()

    @classmethod
    def build(cls, values: Mapping[str, Any], source: str) -> GateConfig:
        """A config from ``values``; a clear :class:`ConfigError` naming ``source`` and the
        offending key when a key is unknown or a value is out of range."""
        values = {str(k).lower(): v for k, v in values.items()}
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"]) or "?"
                if err["type"] == "extra_forbidden":
                    problems.append(f"unknown key {key!r} (keys: {', '.join(cls.model_fields)})")
                else:
                    problems.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
            raise ConfigError(f"gate config from {source}: " + "; ".join(problems)) from None

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> GateConfig:
        """This config with ``overrides`` applied (validated like :meth:`build`)."""
        if not overrides:
            return self
        return self.build({**self.model_dump(), **overrides}, "overrides")

    @classmethod
    def describe(cls) -> dict[str, dict[str, Any]]:
        """Every key: its default and the reason for it."""
        return {
            name: {"default": f.default, "description": f.description}
            for name, f in cls.model_fields.items()
        }


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """``["key=value", ...]`` (the CLI's ``--gate``) as a mapping; pydantic converts the values."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--gate {pair!r}: expected key=value (keys: {', '.join(KEYS)})")
        out[key.strip().lower()] = value.strip()
    return out


KEYS: tuple[str, ...] = tuple(GateConfig.model_fields)
DEFAULT = GateConfig()
