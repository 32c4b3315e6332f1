"""Monitoring: Evidently drift reports that decide when the champion must be retrained.

Is today's traffic still the world the champion was trained on? One module per job, read in
this order:

* :mod:`monitoring.config` — :class:`~monitoring.config.DriftConfig`: which columns, which
  method and threshold per column, the decision's thresholds and the cooldown, each with its
  reason;
* :mod:`monitoring.frames` — the data: reference and current frames from the feature tables
  (active entities only), and the served slates from the impressions and their feedback;
* :mod:`monitoring.report` — the Evidently 0.7 ``Report`` over those frames, its HTML, and the
  Evidently workspace (project ``flywheel``);
* :mod:`monitoring.decision` — :class:`~monitoring.decision.DriftResult`, the drift decision
  and the cooldown (pure functions);
* :mod:`monitoring.monitor` — the daily check end to end (:func:`~monitoring.monitor.monitor_day`:
  champion window → frames → report → decision → cooldown) and what it stores in the lake
  (``reports/drift/dt=D/``, the trigger state).

``dags/monitor_drift.py`` runs :func:`~monitoring.monitor.monitor_day` per day; the Airflow
UI plugin lists :func:`~monitoring.monitor.summaries`.
"""

from __future__ import annotations

from core.errors import FlywheelError


class DriftError(FlywheelError):
    """The drift check cannot run (missing features, bad window); the message names what."""


__all__ = ["DriftError"]
