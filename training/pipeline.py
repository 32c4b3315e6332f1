"""The steps of ``train_recommender``, callable from the DAG and from ``flywheel train``.

build training set → train → evaluate candidate and champion on the same holdout → register →
promote or not. Each step takes and returns small JSON-able values (locations, ids, metrics), so
Airflow passes them through XCom and the CLI simply chains them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from core.contract import EVENTS
from core.errors import FlywheelError
from core.lake import VALIDATED, get_lake
from features.compute import latest_day
from training.config import TrainingConfig
from training.data import TrainingSet, build_training_set, load_training_set
from training.evaluation import (
    Requests,
    baseline_metrics,
    evaluate_model,
    paired_difference,
    predict_lists,
    requests_for,
    score_lists,
    strongest,
)
from training.registry import (
    Decision,
    InfraValidationError,
    configure_mlflow,
    decide,
    infra_validate,
    list_versions,
    load_champion,
    load_recommender,
    model_name,
    record_decision,
)
from training.registry import register as register_version
from training.train import run_training

log = logging.getLogger(__name__)

TAG_LIMIT = 5000  # MLflow tag values are capped (8000 chars); keep well below


def summarise_events(events: dict[str, list[dict[str, Any]]]) -> tuple[str, list[dict[str, Any]]]:
    """(trigger tag, events as plain dicts) from ``{asset uri: [event dicts]}``."""
    if not events:
        return "manual", []
    flat = [dict(e, asset=uri) for uri, evs in events.items() for e in evs]
    latest = max(flat, key=lambda e: str(e.get("timestamp", "")))
    trigger = f"asset: {latest['asset']}"
    if latest.get("extra"):
        trigger += " " + json.dumps(latest["extra"], default=str, sort_keys=True)
    return trigger[:TAG_LIMIT], flat


def resolve_end_day(
    param_day: str | None, events: list[dict[str, Any]], newest: dt.date | None
) -> dt.date:
    """Last day of the training window: the Param, else the newest of the events' ``date`` and
    ``newest`` (the newest day the data allows).

    ``newest`` matters because Airflow folds events that arrive while a trigger is already
    pending into it without handing them to the run: the run may see an older event than the
    data it can train on.
    """
    if param_day:
        return dt.date.fromisoformat(str(param_day)[:10])
    days = [
        str((e.get("extra") or {}).get("date") or (e.get("extra") or {}).get("day") or "")[:10]
        for e in events
    ]
    candidates = [dt.date.fromisoformat(d) for d in days if d]
    if newest is not None:
        candidates.append(newest)
    if candidates:
        return max(candidates)
    raise FlywheelError(
        "train_recommender: no end day (no 'end_day' param, no event with a 'date', no validated events)"
    )


def latest_validated_day() -> dt.date | None:
    """The newest day with validated events (None before the first)."""
    return max(get_lake().partitions(VALIDATED, EVENTS.name), default=None)


def latest_data_day(cfg: TrainingConfig) -> dt.date | None:
    """The newest day a window can end on: with Feast features, the newest featurised day."""
    if cfg.data.feature_source != "feast":
        return latest_validated_day()
    return latest_day(get_lake())


# --- steps ----------------------------------------------------------------------------------


def build(end_day: dt.date, cfg: TrainingConfig, location: str | None = None) -> dict[str, Any]:
    """Build and write the training set of the window ending on ``end_day`` (its summary)."""
    return build_training_set(get_lake(), end_day, cfg.data, location)


def trained_before(summary: dict[str, Any]) -> str | None:
    """The registered version already trained on exactly this window and data (the same first
    and last day and the same gate validations of its days), or None.

    An asset-triggered run whose window an earlier run already trained (the earlier run took
    the newest featurised day, or a drift event arrived for a day already trained on) would
    only register a second version of the same data: the DAG skips it instead.
    """
    want = (
        summary["window_start"],
        summary["window_end"],
        ",".join(summary.get("validation_ids") or []),
    )
    for v in list_versions():
        t = v.get("tags", {})
        got = (
            t.get("data_window_start", "")[:10],
            t.get("data_window_end", "")[:10],
            t.get("validation_ids", ""),
        )
        if got == want:
            return v["version"]
    return None


def train(cfg: TrainingConfig, location: str, run_key: str, tags: dict[str, str]) -> dict[str, Any]:
    """Train the candidate on the set at ``location`` (resumes ``run_key``); the key results."""
    result = run_training(cfg, location, run_key=run_key, tags=tags)
    keep = (
        "holdout_ndcg_at_10",
        "holdout_recall_at_20",
        "popularity_ndcg_at_10",
        "ndcg_to_oracle_ratio",
        "interactions_per_s",
    )
    return {
        "run_id": result.run_id,
        "model_uri": result.model_uri,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "resumed_from": result.resumed_from,
        "metrics": {k: result.metrics[k] for k in keep if k in result.metrics},
    }


def evaluate(cfg: TrainingConfig, location: str, trained: dict[str, Any]) -> dict[str, Any]:
    """Candidate (loaded from its logged model), champion and every baseline on the same holdout
    requests; all logged on the candidate's run (see :mod:`training.evaluation`)."""
    client = configure_mlflow()
    ts = load_training_set(location, lean=True)  # ids and times: the models bring their features
    reqs = requests_for(ts, cfg)
    cand_lists = predict_lists(load_recommender(trained["model_uri"]), reqs)
    candidate = score_lists(cand_lists, reqs, ts, cfg)
    champion, champion_version, note = champion_metrics(client, ts, cfg, reqs)
    baselines, lists = baseline_metrics(ts, cfg, reqs)
    best = strongest(baselines)
    bar = gate_baseline(baselines, cfg.promotion.must_beat)
    versus = paired_difference(cand_lists, lists[best], reqs, cfg)
    metrics = {f"holdout_{k}": v for k, v in candidate.items()}
    metrics |= {f"baseline_{n}_{k}": v for n, m in baselines.items() for k, v in m.items()}
    metrics |= {f"strongest_baseline_{k}": v for k, v in baselines[best].items()}
    metrics |= {f"vs_strongest_baseline_{k}": v for k, v in versus.items()}
    if champion is not None:
        metrics |= {f"champion_{k}": v for k, v in champion.items()}
    client.log_batch(trained["run_id"], metrics=_metric_list(metrics))
    client.set_tag(trained["run_id"], "champion_evaluation", note[:TAG_LIMIT])
    client.set_tag(trained["run_id"], "strongest_baseline", best)
    log.info(
        "candidate NDCG@10 %.4f [%.4f, %.4f], champion %s, strongest baseline %s %.4f (%s)",
        candidate["ndcg_at_10"],
        candidate["ndcg_at_10_lo"],
        candidate["ndcg_at_10_hi"],
        champion and round(champion["ndcg_at_10"], 4),
        best,
        baselines[best]["ndcg_at_10"],
        note,
    )
    return {
        "candidate": candidate,
        "champion": champion,
        "champion_version": champion_version,
        "champion_note": note,
        "baseline": baselines[best],
        "baseline_name": best,
        "gate_baseline": baselines[bar],
        "gate_baseline_name": bar,
        "baselines": {n: _headline(m) for n, m in baselines.items()},
        "vs_baseline": versus,
    }


def champion_metrics(
    client: MlflowClient, ts: TrainingSet, cfg: TrainingConfig, reqs: Requests
) -> tuple[dict[str, float] | None, str | None, str]:
    """(metrics, version, note) of the champion on the candidate's holdout requests.

    ``metrics`` is None with no champion, or one whose artifact is gone, corrupt or cannot
    answer (the note says which; the gate then holds the candidate to the baselines). A
    registry that does not answer fails the step after :func:`~training.registry.load_champion`'s
    retries: never a silent comparison with the baselines only.
    """
    model, version, note = load_champion(client)
    if model is None:
        return None, version, note
    try:
        return evaluate_model(model, ts, cfg, reqs), version, note
    except Exception as exc:  # a champion that cannot answer must not block the pipeline
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        log.warning("champion v%s cannot answer: %s", version, msg)
        return (
            None,
            version,
            (
                f"champion v{version} cannot answer ({type(exc).__name__}: {msg}), "
                "candidate judged against the baselines"
            ),
        )


NON_PERSONAL = ("popularity", "recent_popularity")  # what serving answers without a model


def gate_baseline(baselines: dict[str, dict[str, float]], must_beat: str) -> str:
    """The baseline the promotion gate compares with (``promotion.must_beat``): the strongest
    of all, or of the non-personal ones (the strongest of all when none was measured)."""
    pool = {n: m for n, m in baselines.items() if must_beat == "strongest" or n in NON_PERSONAL}
    return strongest(pool or baselines)


def _headline(metrics: dict[str, float]) -> dict[str, float]:
    """NDCG@10 and Recall@20 with their intervals, for all / warm / cold users."""
    keep = ("ndcg_at_10", "recall_at_20", "users", "window_days")
    return {k: v for k, v in metrics.items() if k.startswith(keep)}


def _metric_list(metrics: dict[str, float]) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, 0) for k, v in metrics.items()]


def register(trained: dict[str, Any], summary: dict[str, Any]) -> str:
    """The candidate's registered version, with its data window and feature service: registered
    once per MLflow run (a retried task finds it); no alias moves."""
    client = configure_mlflow()
    tags = {
        "data_window_start": summary["window_start"],
        "data_window_end": summary["window_end"],
        "feature_service": summary["feature_service"],
    }
    return register_version(client, trained["model_uri"], trained["run_id"], tags)


def promote(
    cfg: TrainingConfig,
    location: str,
    trained: dict[str, Any],
    evaluation: dict[str, Any],
    version: str,
) -> dict[str, Any]:
    """Gate, then infra-validation, then the alias, then the decision's tags (in that order: see
    :func:`~training.registry.record_decision`); safe to run again after a crash."""
    client = configure_mlflow()
    bar_name = evaluation.get("gate_baseline_name", evaluation["baseline_name"])
    decision = decide(
        evaluation["candidate"],
        evaluation["champion"],
        evaluation.get("gate_baseline", evaluation["baseline"]),
        cfg.promotion.margin,
        cfg.promotion.recall_tolerance,
        champion_note="" if evaluation["champion_version"] is None else evaluation["champion_note"],
        baseline_name=bar_name,
        baseline_tolerance=cfg.promotion.baseline_tolerance,
    )
    decision.champion_version = evaluation["champion_version"]
    best = evaluation["baseline_name"]
    if best != bar_name:  # the gate's bar is not the strongest: say how the candidate compares
        b, c = evaluation["baseline"]["ndcg_at_10"], evaluation["candidate"]["ndcg_at_10"]
        decision.reason += (
            f"; strongest baseline overall: {best} {b:.4f} (candidate {c / b if b else 0:.2f}x; "
            f"promotion.must_beat={cfg.promotion.must_beat!r} does not require beating it)"
        )
    smoke = None
    if decision.promote:
        try:
            smoke = infra_validate(
                f"models:/{model_name()}/{version}",
                load_training_set(location, lean=True),
                cfg.promotion.smoke_requests,
            )
        except InfraValidationError as exc:
            decision = Decision(
                False,
                f"infra-validation failed, promotion blocked: {exc}",
                decision.candidate,
                decision.champion,
                decision.baseline,
                decision.champion_version,
                decision.baseline_name,
            )
    record_decision(client, version, trained["run_id"], decision)
    verdict = "PROMOTED to champion" if decision.promote else "NOT promoted"
    log.info("version %s %s: %s", version, verdict, decision.reason)
    return {
        "version": version,
        "promoted": decision.promote,
        "reason": decision.reason,
        "infra_validation": smoke,
        "champion_version": decision.champion_version,
        "strongest_baseline": decision.baseline_name,
    }


def run_pipeline(
    end_day: dt.date, cfg: TrainingConfig, run_key: str | None = None, trigger: str = "manual"
) -> dict[str, Any]:
    """All steps in this process (``flywheel train``); returns every step's summary."""
    summary = build(end_day, cfg)
    key = run_key or f"cli-{end_day.isoformat()}"
    trained = train(cfg, summary["location"], key, {"trigger": trigger})
    evaluation = evaluate(cfg, summary["location"], trained)
    version = register(trained, summary)
    decision = promote(cfg, summary["location"], trained, evaluation, version)
    return {
        "training_set": summary,
        "trained": trained,
        "evaluation": evaluation,
        "decision": decision,
    }
