"""The Assets that link Flywheel's DAGs, declared once and reused as outlets and schedules."""

from airflow.sdk import Asset

from core.names import DRIFT_URI, FEATURES_URI, VALIDATED_EVENTS_URI

#: Emitted by ``ingest_events`` when a day's events passed the gate and were written to validated/.
VALIDATED_EVENTS = Asset(VALIDATED_EVENTS_URI)

#: Emitted by ``build_features`` when a day's features are materialized into the online store.
FEATURES = Asset(FEATURES_URI)

#: Emitted by ``monitor_drift`` when drift is decided; its metadata is the drift summary.
DRIFT = Asset(DRIFT_URI)
