"""The Assets that link Flywheel's DAGs, declared once and reused as outlets and schedules."""

from airflow.sdk import Asset

#: Emitted by ``ingest_events`` when a day's events passed the gate and were written to validated/.
VALIDATED_EVENTS = Asset("flywheel://validated/events")

#: Emitted by ``build_features`` when a day's features are materialized into the online store.
FEATURES = Asset("flywheel://features")

#: Emitted by ``monitor_drift`` when drift is decided; its metadata is the drift summary.
DRIFT = Asset("flywheel://drift")
