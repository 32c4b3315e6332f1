"""Shared names: the vocabulary the stages, the DAGs and the UI have in common, spelled once.

Import them from here; a literal ``"champion"`` or ``"gpu"`` anywhere else is a bug waiting for a
rename. Lake zones and file names are in :mod:`core.lake`, column rules in :mod:`core.contract`.
"""

from __future__ import annotations

# --- events ---------------------------------------------------------------------------------
#: Every event type the contract admits, in funnel order.
EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase", "rating")
#: Event types that say a user wanted an item (training positives); a view says nothing.
POSITIVE_EVENT_TYPES: tuple[str, ...] = ("click", "add_to_cart", "purchase", "rating")
#: Feedback the serving API accepts on a recommendation: the positive types.
FEEDBACK_EVENT_TYPES: tuple[str, ...] = POSITIVE_EVENT_TYPES
#: A rating is a positive only at this many stars or more (4 and 5 of 5).
MIN_POSITIVE_RATING = 4.0
#: Feedback that counts as a click on a shown item (slate click-through); a rating is not one.
CLICK_EVENT_TYPES: tuple[str, ...] = ("click", "add_to_cart", "purchase")

# --- model registry and serving -------------------------------------------------------------
#: MLflow alias of the version that serves everyone (moved only by a won comparison).
CHAMPION = "champion"
#: MLflow alias of a version under A/B test against the champion (moved only on purpose).
CHALLENGER = "challenger"
#: Serving variant when no model can answer: the popularity fallback.
FALLBACK = "fallback"
ALIASES: tuple[str, ...] = (CHAMPION, CHALLENGER)
VARIANTS: tuple[str, ...] = (CHAMPION, CHALLENGER, FALLBACK)

# --- Airflow --------------------------------------------------------------------------------
INGEST_DAG = "ingest_events"
FEATURES_DAG = "build_features"
TRAIN_DAG = "train_recommender"
DRIFT_DAG = "monitor_drift"

#: Celery queues: ``gpu`` is served by the GPU worker (training), ``default`` by the others.
DEFAULT_QUEUE = "default"
GPU_QUEUE = "gpu"
QUEUES: tuple[str, ...] = (DEFAULT_QUEUE, GPU_QUEUE)

#: Pool that lets one training run hold the GPU at a time.
TRAINING_POOL = "training"
#: Pools the DAGs use: name → (slots, description); created by airflow-init and the demo.
POOLS: dict[str, tuple[int, str]] = {
    TRAINING_POOL: (1, "one training run at a time (train_recommender.train)"),
}

#: Asset URIs that chain the DAGs (the Asset objects are in :mod:`core.assets`).
VALIDATED_EVENTS_URI = "flywheel://validated/events"
FEATURES_URI = "flywheel://features"
DRIFT_URI = "flywheel://drift"

# --- features -------------------------------------------------------------------------------
#: The feature service the model reads through (training and serving alike).
FEATURE_SERVICE = "recommender_v1"
#: The feature views, by short name (also the lake folder ``features/<name>/``).
USER_VIEW = "user_stats"
ITEM_VIEW = "item_stats"
VIEWS: tuple[str, ...] = (USER_VIEW, ITEM_VIEW)
#: How long a day's values serve (the views' Feast ``ttl``): a row of day D reads the features
#: of D-1, or of D-2 when D-1's batch was quarantined; a longer gap means missing features.
FEATURE_TTL_DAYS = 2
#: Rolling windows in days, each ending at the end of day D.
FEATURE_WINDOWS: tuple[int, ...] = (1, 7, 28)
#: Event types counted per window, and the word that names their count column.
COUNTED_EVENTS: dict[str, str] = {
    "view": "views",
    "click": "clicks",
    "add_to_cart": "carts",
    "purchase": "purchases",
    "rating": "ratings",
}

#: XCom key under which a task says what its run did; the plugin's listener copies it into the
#: DAG run's note (the Airflow 3 task SDK cannot set a note itself).
RUN_NOTE = "run_note"
