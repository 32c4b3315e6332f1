"""
### train_recommender — train, evaluate against the champion, register, promote or not

Runs when new features land (Asset `flywheel://features`) or drift is decided (Asset
`flywheel://drift`), whichever comes first, and by hand with the Params form.

1. **build_training_set** — positives (click, add-to-cart, purchase, rating ≥ 4) of the
   `window_days` days ending on the end day, features of `recommender_v1` joined point-in-time
   through Feast, temporal split: train days, one validation day, the last day as holdout. The
   end day is the `end_day` Param, else the newest of the triggering events' `date` and the
   newest featurised day (events that arrive while a trigger is pending are folded into it and
   never reach the run). Frames go to the lake (`training_sets/dt=<end day>/`); XCom carries
   the path.
   When the window cannot train a model (too little history yet, no positives, empty holdout)
   an asset-triggered run is **skipped** with the reason; a manual run fails (no retry). An
   asset-triggered run whose window and data a registered version was already trained on (the
   same days, the same gate validations) is skipped too, its note naming that version: one
   version per window, however many events point at it.
2. **train** — queue `gpu`, pool `training` (create it: `airflow pools set training 1 "one
   training at a time"`; the twin creates it from `deploy/topology.py`), `max_active_runs=1`. Two-tower
   model, checkpoint every epoch; a retry resumes from the last checkpoint of this DAG run.
3. **evaluate** — the candidate (loaded as serving loads it), the current champion and the
   baselines (popularity, recent popularity, implicit's ALS, BPR and item-kNN, each with a
   popularity fallback) on the same holdout requests: NDCG@10 and Recall@20 for all, warm and
   cold users with bootstrap 95 % intervals, logged on the candidate's MLflow run.
4. **register** — a new version of `flywheel-recommender` (once per MLflow run: a retry finds
   it); no alias moves (`challenger` is set only on purpose, for an A/B test).
5. **promote** — champion only if NDCG@10 beats the champion's by the margin and Recall@20 drops
   at most the tolerance, and beats the baseline `promotion.must_beat` names (default: the
   stronger of the two popularities, less `promotion.baseline_tolerance`), after an
   infra-validation smoke test; the reason also names the strongest baseline of all.
   The decision and its reason are in this task's log and in MLflow (`promotion_decision`,
   `promotion_reason` on the run and the version).

Manual run: `flywheel dag test train_recommender --conf '{"end_day": "2026-01-14", "epochs": 5}'`
or `flywheel train --end-day 2026-01-14` (same steps, no Airflow). A Param left empty uses the
training config's value (`training/config.py`, the one home of every training default; each
Param's description states it).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from core.assets import DRIFT, FEATURES
from core.names import GPU_QUEUE, RUN_NOTE, TRAIN_DAG, TRAINING_POOL


def config_param(name: str, description: str, json_type: str | list[str], **schema) -> Param:
    """A Param whose default is ``None``: "use the training config" (whose value it states).

    The value comes from :class:`training.config.TrainingConfig`, the one place training defaults
    live, so an empty form trains exactly as ``python -m training.train`` does.
    """
    from training.config import PARAM_KEYS, TrainingConfig

    key = PARAM_KEYS[name]
    default = TrainingConfig().value(key)
    if "enum" in schema:
        schema["enum"] = [None, *schema["enum"]]
    types = json_type if isinstance(json_type, list) else [json_type]
    return Param(
        None,
        type=["null", *types],
        description=f"{description}. Empty: the training config's {key} ({default})",
        **schema,
    )


@dag(
    dag_id=TRAIN_DAG,
    schedule=(FEATURES | DRIFT),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["flywheel", "training", "mlflow"],
    doc_md=__doc__,
    default_args={
        "owner": "flywheel",
        "retries": 2,
        "retry_delay": pendulum.duration(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": pendulum.duration(minutes=10),
    },
    params={
        "end_day": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Last day of the window (YYYY-MM-DD); default: the triggering event's date",
        ),
        "epochs": config_param(
            "epochs",
            "Maximum epochs (early stopping on validation NDCG@10)",
            "integer",
            minimum=1,
            maximum=500,
        ),
        "learning_rate": config_param(
            "learning_rate", "Adam learning rate", "number", exclusiveMinimum=0
        ),
        "embedding_dim": config_param(
            "embedding_dim", "Embedding size of both towers", "integer", minimum=2, maximum=1024
        ),
        "window_days": config_param(
            "window_days",
            'Training window in days (the last is the holdout), or "all" (every validated day)',
            ["integer", "string"],
            minimum=3,  # a number: at least train + validation + holdout days
            pattern="^all$",  # a text: only "all"
        ),
        "promotion_margin": config_param(
            "promotion_margin",
            "NDCG@10 the candidate must gain over the champion",
            "number",
            minimum=0,
        ),
        "feature_source": config_param(
            "feature_source",
            "feast: recommender_v1 point-in-time; contract: attributes only",
            "string",
            enum=["feast", "contract"],
        ),
    },
)
def train_recommender():
    @task
    def build_training_set(**context) -> dict:
        """Temporal split of the window; the frames go to the lake, the path to XCom."""
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from training import pipeline
        from training.config import config_from_params
        from training.data import TrainingDataError

        events = {
            asset.uri: [
                {
                    "extra": dict(e.extra or {}),
                    "timestamp": str(e.timestamp),
                    "source_dag_id": e.source_dag_id,
                    "source_run_id": e.source_run_id,
                }
                for e in evs
            ]
            for asset, evs in context["triggering_asset_events"].items()
        }
        trigger, flat = pipeline.summarise_events(events)
        params = context["params"]
        cfg = config_from_params(params)  # a Param left empty keeps the config's value
        end_day = pipeline.resolve_end_day(
            params.get("end_day"), flat, pipeline.latest_data_day(cfg)
        )
        try:
            summary = pipeline.build(end_day, cfg)
        except TrainingDataError as exc:
            # retrying cannot add data; an asset-triggered run before enough history is a skip
            if params.get("end_day") or trigger == "manual":
                _note(context, f"window ending {end_day} cannot train: {exc}")
                raise AirflowFailException(str(exc)) from None
            _note(context, f"not trained yet (window ending {end_day}): {exc}")
            raise AirflowSkipException(f"not trained yet: {exc}") from None
        earlier = None if trigger == "manual" else pipeline.trained_before(summary)
        if earlier is not None:  # a person may retrain a window on purpose; an event may not
            window = f"{summary['window_start']}..{summary['window_end']}"
            _note(context, f"not retrained: window {window} is already v{earlier}, same data")
            raise AirflowSkipException(f"window {window} already trained as v{earlier}")
        return {
            **summary,
            "config": cfg.to_dict(),
            "trigger": trigger,
            "triggering_asset_events": flat,
        }

    @task(queue=GPU_QUEUE, pool=TRAINING_POOL)
    def train(summary: dict, **context) -> dict:
        """Train the candidate (resumes from this run's last checkpoint on a retry)."""
        import json

        from training import pipeline
        from training.config import TrainingConfig

        tags = {
            "trigger": summary["trigger"],
            "triggering_asset_events": json.dumps(summary["triggering_asset_events"], default=str)[
                : pipeline.TAG_LIMIT
            ],
            "validation_ids": ",".join(summary["validation_ids"]),
            "airflow_dag_run": context["run_id"],
            "airflow_try_number": str(context["ti"].try_number),
        }
        run_key = f"{context['dag'].dag_id}/{context['run_id']}"
        return pipeline.train(
            TrainingConfig.from_dict(summary["config"]), summary["location"], run_key, tags
        )

    @task
    def evaluate(summary: dict, trained: dict) -> dict:
        """Candidate and current champion on the same holdout, with the popularity baseline."""
        from training import pipeline
        from training.config import TrainingConfig

        return pipeline.evaluate(
            TrainingConfig.from_dict(summary["config"]), summary["location"], trained
        )

    @task
    def register(summary: dict, trained: dict) -> str:
        """The candidate's registered version (found again on a retry; no alias moves)."""
        from training import pipeline

        return pipeline.register(trained, summary)

    @task
    def promote(summary: dict, trained: dict, evaluation: dict, version: str, **context) -> dict:
        """Champion or not: the gate, the infra-validation smoke test, the alias and the reason."""
        from training import pipeline
        from training.config import TrainingConfig

        result = pipeline.promote(
            TrainingConfig.from_dict(summary["config"]),
            summary["location"],
            trained,
            evaluation,
            version,
        )
        verdict = "promoted to champion" if result["promoted"] else "not promoted"
        window = f"{summary['window_start']}..{summary['window_end']}"
        _note(context, f"v{version} ({window}): {verdict} — {result['reason']}")
        return result

    summary = build_training_set()
    trained = train(summary)
    evaluation = evaluate(summary, trained)
    version = register(summary, trained)
    evaluation >> version
    promote(summary, trained, evaluation, version)


def _note(context, text: str) -> None:
    """Leave what this run did (XCom ``run_note``) for the run's note in the Airflow UI."""
    context["ti"].xcom_push(RUN_NOTE, text[:1000])


train_recommender()
