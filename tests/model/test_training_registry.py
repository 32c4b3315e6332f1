"""MLflow registry: the promotion gate, the pyfunc round trip, infra-validation, `flywheel models`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from training.registry import decide

BASE = {"ndcg_at_10": 0.20, "recall_at_20": 0.40}
POP = {"ndcg_at_10": 0.10, "recall_at_20": 0.30}


# --- the gate (pure) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "champion", "promote", "reason"),
    [
        (
            {"ndcg_at_10": 0.25, "recall_at_20": 0.41},
            BASE,
            True,
            "beats champion 0.2000 by +0.0500 > margin 0.0100",
        ),
        (
            {"ndcg_at_10": 0.15, "recall_at_20": 0.45},
            BASE,
            False,
            "gain -0.0500 does not exceed the margin 0.0100",
        ),
        (
            {"ndcg_at_10": 0.20, "recall_at_20": 0.40},
            BASE,
            False,
            "gain +0.0000 does not exceed the margin",
        ),  # tie
        (
            {"ndcg_at_10": 0.205, "recall_at_20": 0.40},
            BASE,
            False,
            "does not exceed the margin 0.0100",
        ),  # within margin
        (
            {"ndcg_at_10": 0.30, "recall_at_20": 0.30},
            BASE,
            False,
            "drops 0.1000 > tolerance 0.0200",
        ),
        (
            {"ndcg_at_10": 0.12, "recall_at_20": 0.1},
            None,
            True,
            "no champion yet; candidate NDCG@10 0.1200 beats popularity 0.1000",
        ),
        (
            {"ndcg_at_10": 0.08, "recall_at_20": 0.5},
            None,
            False,
            "no champion yet; candidate NDCG@10 0.0800 does not beat popularity",
        ),
    ],
    ids=[
        "better",
        "worse",
        "tie",
        "within-margin",
        "recall-drop",
        "first-beats-popularity",
        "first-loses-to-popularity",
    ],
)
def test_promotion_gate(candidate, champion, promote, reason):
    d = decide(candidate, champion, POP, margin=0.01, recall_tolerance=0.02)
    assert d.promote is promote
    assert reason in d.reason


def test_gate_with_unloadable_champion_judges_against_popularity():
    note = "champion v3 cannot be loaded (OSError: gone), candidate judged against popularity"
    d = decide({"ndcg_at_10": 0.11, "recall_at_20": 0.2}, None, POP, 0.0, 0.01, champion_note=note)
    assert d.promote and d.reason.startswith(note) and "beats popularity 0.1000" in d.reason


# --- against a real registry --------------------------------------------------------------------


@pytest.fixture
def sim_lake(fw_home, lake):
    from tests.fixtures.lake import write_simulated
    from tests.fixtures.models import seed_tracking_db

    seed_tracking_db(fw_home)
    end = write_simulated(lake, days=8, users=300, items=120, seed=3)
    return lake, end


def _cfg(*extra: str):
    from training.config import TrainingConfig

    return TrainingConfig.load(
        None,
        [
            "data.feature_source=contract",
            "data.window_days=8",
            "train.epochs=5",
            "train.patience=2",
            # the registry's mechanics, whatever the model's quality against implicit's models:
            # test_gate_against_every_baseline_end_to_end runs the full set of baselines
            "eval.baselines=popularity,recent_popularity",
            *extra,
        ],
    )


def test_pipeline_registry_pyfunc_and_gate(sim_lake, fw_home, monkeypatch):
    from typer.testing import CliRunner

    from core.names import CHAMPION
    from flywheel.cli import app
    from training import pipeline
    from training.data import load_training_set
    from training.registry import configure_mlflow, infra_validate, list_versions, load_recommender

    lake, end = sim_lake
    monkeypatch.setenv(
        "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1"
    )  # short runs: sample ten times a second so even a 1-s training logs some
    cfg = _cfg()
    first = pipeline.run_pipeline(end, cfg, run_key="first")
    d1 = first["decision"]
    assert d1["promoted"], d1
    assert d1["reason"].startswith("no champion yet; candidate NDCG@10")
    assert d1["infra_validation"]["requests"] >= 3

    client = configure_mlflow()
    run = client.get_run(first["trained"]["run_id"])
    tags, metrics = run.data.tags, run.data.metrics
    assert (tags["data_window_start"], tags["data_window_end"]) == ("2026-01-01", "2026-01-08")
    assert (
        tags["feature_service"] == "contract" and tags["trigger"] == "manual" and tags["git_commit"]
    )
    # the gate names the strongest baseline, measured in the same run on the same requests
    best = tags["strongest_baseline"]
    assert best in ("popularity", "recent_popularity")
    assert tags["promotion_decision"] == "promoted"
    assert (
        f"{best} {metrics[f'baseline_{best}_ndcg_at_10']:.4f} (the strongest baseline it must beat)"
        in (tags["promotion_reason"])
    )
    assert {
        "holdout_ndcg_at_10",
        "holdout_ndcg_at_10_lo",
        "holdout_ndcg_at_10_cold",
        "holdout_recall_at_20_warm_hi",
        "holdout_recall_at_20",
        "popularity_ndcg_at_10",
        "oracle_ndcg_at_10",
        "ndcg_to_oracle_ratio",
        "baseline_popularity_ndcg_at_10",
        "baseline_recent_popularity_recall_at_20_cold",
        "strongest_baseline_ndcg_at_10",
        "vs_strongest_baseline_ndcg_at_10_diff_lo",
    } <= set(metrics)
    assert run.data.params["model.embedding_dim"] == str(cfg.model.embedding_dim)
    history = client.get_metric_history(run.info.run_id, "val_ndcg_at_10")
    assert [m.step for m in history] == list(range(1, len(history) + 1))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"training_curve.png", "checkpoints"} <= artifacts
    assert any(k.startswith("system/") for k in metrics), sorted(metrics)  # system metrics sampled
    # what the MLflow UI shows: the training view, a per-epoch loss curve, the data as inputs
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    assert len(losses) == len(history) >= 2
    inputs = {d.dataset.name: d.tags for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"flywheel-training-2026-01-08", "flywheel-evaluation-2026-01-08"}
    assert run.info.run_name.startswith("2026-01-01..2026-01-08 · manual · ")

    # pyfunc round trip, loaded as serving loads it
    ts = load_training_set(first["training_set"]["location"])
    model = load_recommender(f"models:/flywheel-recommender@{CHAMPION}")
    known = ts.split("train")["user_id"].iloc[0]
    seen = sorted(ts.seen()[known])
    out = model.predict(
        pd.DataFrame(
            {"user_id": [known, "brand-new-user"], "k": [5, 7], "exclude_item_ids": [seen, []]}
        )
    )
    assert list(out.columns) == ["user_id", "item_ids", "scores"]
    assert [len(x) for x in out["item_ids"]] == [5, 7]
    assert not set(out["item_ids"][0]) & set(seen)
    assert list(out["scores"][0]) == sorted(out["scores"][0], reverse=True)
    default_k = model.predict(pd.DataFrame({"user_id": [known]}))
    assert len(default_k["item_ids"][0]) == 10
    with_features = model.predict(
        pd.DataFrame({"user_id": ["cold"], "user_country": ["DE"], "user_age_bucket": ["65+"]})
    )
    assert len(with_features["item_ids"][0]) == 10

    # the window and its data are now trained: an asset-triggered run on it would be skipped
    assert pipeline.trained_before(first["training_set"]) == "1"
    other = dict(first["training_set"], validation_ids=["a-re-run-of-a-day"])
    assert pipeline.trained_before(other) is None  # the same days, re-validated: new data

    # registering v1 moved no challenger: only an A/B test started on purpose sets it
    assert set(client.get_registered_model("flywheel-recommender").aliases) == {"champion"}
    client.set_registered_model_alias("flywheel-recommender", "challenger", "1")

    # a tie with the champion under a margin is rejected; the champion and challenger stay
    second = pipeline.run_pipeline(end, _cfg("promotion.margin=0.05"), run_key="second")
    d2 = second["decision"]
    assert not d2["promoted"] and "does not exceed the margin 0.0500" in d2["reason"], d2
    aliases = client.get_registered_model("flywheel-recommender").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": "1", "challenger": "1"}
    assert client.get_model_version("flywheel-recommender", "2").tags["promotion_decision"] == (
        "rejected"
    )
    # the registry's version page opens with the decision and its reason
    v1, v2 = (client.get_model_version("flywheel-recommender", v) for v in ("1", "2"))
    assert v1.description.startswith("PROMOTED: no champion yet")
    assert v2.description.startswith("REJECTED: ") and "margin 0.0500" in v2.description
    # two runs on one window are told apart by name (they started at different times)
    names = {client.get_run(r["trained"]["run_id"]).info.run_name for r in (first, second)}
    assert len(names) == 2

    # infra validation: a version that cannot be loaded blocks promotion
    from training.registry import InfraValidationError

    with pytest.raises(InfraValidationError, match="cannot be loaded as serving loads it"):
        infra_validate("models:/flywheel-recommender/99", ts)

    # champion artifact missing: the candidate is judged against the baselines, with the reason
    champion_source = client.get_model_version("flywheel-recommender", "1").source
    model_dir = next(
        Path(fw_home, "mlflow", "artifacts", "models").glob(champion_source.rsplit("/", 1)[-1])
    )
    shutil.rmtree(model_dir)
    evaluation = pipeline.evaluate(cfg, second["training_set"]["location"], second["trained"])
    assert (
        evaluation["champion"] is None
        and "champion v1 cannot be loaded" in evaluation["champion_note"]
    )
    decision = pipeline.promote(
        cfg, second["training_set"]["location"], second["trained"], evaluation, "2"
    )
    assert (
        decision["promoted"]
        and "champion v1 cannot be loaded" in decision["reason"]
        and f"{evaluation['baseline_name']} " in decision["reason"]
        and "(the strongest baseline it must beat)" in decision["reason"]
    )
    assert str(client.get_registered_model("flywheel-recommender").aliases["champion"]) == "2"

    rows = list_versions()
    assert [r["version"] for r in rows] == ["2", "1"]
    assert rows[0]["aliases"] == ["champion"] and rows[1]["aliases"] == ["challenger"]
    assert (
        rows[0]["tags"]["promotion_decision"] == "promoted"
        and "holdout_ndcg_at_10" in rows[0]["metrics"]
    )
    res = CliRunner().invoke(app, ["models", "--json"])
    assert res.exit_code == 0, res.output
    assert [r["version"] for r in json.loads(res.output)] == ["2", "1"]
    res = CliRunner().invoke(app, ["models"])
    assert (
        res.exit_code == 0 and "champion" in res.output and "2026-01-01..2026-01-08" in res.output
    )
    # the leaderboard shows each version against the strongest baseline of its run
    best = rows[0]["tags"]["strongest_baseline"]
    assert "strongest baseline" in res.output
    assert f"{best} {rows[0]['metrics']['strongest_baseline_ndcg_at_10']:.4f}" in res.output


def test_gate_against_every_baseline_end_to_end(sim_lake):
    """Popularity, recent popularity and implicit's ALS, BPR and item-kNN are fitted in the
    evaluate step, logged with intervals, and the gate holds the candidate to the strongest."""
    from typer.testing import CliRunner

    from flywheel.cli import app
    from training import pipeline
    from training.baselines import BASELINES
    from training.registry import configure_mlflow

    lake, end = sim_lake
    cfg = _cfg(f"eval.baselines={','.join(BASELINES)}")
    out = pipeline.run_pipeline(end, cfg, run_key="baselines")
    ev, decision = out["evaluation"], out["decision"]
    run = configure_mlflow().get_run(out["trained"]["run_id"])
    metrics, tags = run.data.metrics, run.data.tags
    logged = {b: metrics[f"baseline_{b}_ndcg_at_10"] for b in BASELINES}
    best = max(logged, key=logged.get)
    assert tags["strongest_baseline"] == ev["baseline_name"] == best
    for b in BASELINES:
        for suffix in ("", "_lo", "_hi", "_warm", "_cold", "_cold_lo"):
            assert f"baseline_{b}_ndcg_at_10{suffix}" in metrics, (b, suffix)
        assert metrics[f"baseline_{b}_users"] == metrics["holdout_users"]  # the same requests
    # the gate's bar (promotion.must_beat "non_personal"): the stronger of the two popularities;
    # the strongest of all is named in the reason whatever it is
    gate = max(("popularity", "recent_popularity"), key=logged.get)
    assert ev["gate_baseline_name"] == gate
    candidate, bar = ev["candidate"]["ndcg_at_10"], logged[gate] * 0.95
    if ev["champion"] is None:
        assert decision["promoted"] is (candidate > bar), decision
    assert f"{gate} {logged[gate]:.4f} (the strongest baseline it must beat)" in decision["reason"]
    if best != gate:
        assert f"strongest baseline overall: {best} {logged[best]:.4f}" in decision["reason"]
    assert tags["promotion_decision"] == ("promoted" if decision["promoted"] else "rejected")
    res = CliRunner().invoke(app, ["models"])
    assert res.exit_code == 0 and f"{best} {logged[best]:.4f}" in res.output, res.output


def test_infra_validation_failure_blocks_promotion(sim_lake, monkeypatch):
    import training.registry
    from training import pipeline
    from training.registry import configure_mlflow

    lake, end = sim_lake
    cfg = _cfg("train.epochs=2")
    summary = pipeline.build(end, cfg)
    trained = pipeline.train(cfg, summary["location"], "broken", {"trigger": "manual"})
    evaluation = pipeline.evaluate(cfg, summary["location"], trained)
    version = pipeline.register(trained, summary)

    class Broken:
        def predict(self, df):
            return pd.DataFrame(
                {
                    "user_id": df["user_id"],
                    "item_ids": [["nope"]] * len(df),
                    "scores": [[float("nan")]] * len(df),
                }
            )

    monkeypatch.setattr(training.registry, "load_recommender", lambda uri: Broken())
    evaluation["candidate"]["ndcg_at_10"] = (
        evaluation["baseline"]["ndcg_at_10"] + 0.1
    )  # the gate alone would promote
    decision = pipeline.promote(cfg, summary["location"], trained, evaluation, version)
    assert not decision["promoted"]
    assert decision["reason"].startswith(
        "infra-validation failed, promotion blocked: candidate models:/flywheel-recommender/1 answered wrongly"
    )
    client = configure_mlflow()
    assert "champion" not in client.get_registered_model("flywheel-recommender").aliases
    assert client.get_run(trained["run_id"]).data.tags["promotion_decision"] == "rejected"


# --- crash consistency ------------------------------------------------------------------------


def fail_once(real):
    """An MlflowClient method whose first call raises (the registry went away at that moment);
    later calls go through to the real method."""
    calls = []

    def method(client, *args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise ConnectionError("registry connection reset")
        return real(client, *args, **kwargs)

    return method


def _state(client, run_id):
    """(versions registered for the run, aliases, each version's decision tag, run's tag)."""
    versions = client.search_model_versions("name='flywheel-recommender'")
    aliases = {
        k: str(v) for k, v in client.get_registered_model("flywheel-recommender").aliases.items()
    }
    tags = {str(mv.version): mv.tags.get("promotion_decision") for mv in versions}
    return (
        sorted(str(mv.version) for mv in versions if mv.run_id == run_id),
        aliases,
        tags,
        client.get_run(run_id).data.tags.get("promotion_decision"),
    )


def test_promotion_is_crash_consistent_and_idempotent(sim_lake, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from training import pipeline
    from training.registry import configure_mlflow

    lake, end = sim_lake
    cfg = _cfg("train.epochs=2")
    summary = pipeline.build(end, cfg)
    trained = pipeline.train(cfg, summary["location"], "crash", {"trigger": "manual"})
    evaluation = pipeline.evaluate(cfg, summary["location"], trained)
    evaluation["candidate"]["ndcg_at_10"] = evaluation["baseline"]["ndcg_at_10"] + 0.1
    client, run_id = configure_mlflow(), trained["run_id"]

    # register: an earlier try created the version and died before it returned (or tagged it)
    mlflow.register_model(trained["model_uri"], "flywheel-recommender")
    assert pipeline.register(trained, summary) == "1"  # the retry finds it
    assert pipeline.register(trained, summary) == "1"  # and again: still one version
    mv = client.get_model_version("flywheel-recommender", "1")
    assert mv.tags["run_id"] == run_id and mv.tags["data_window_end"] == summary["window_end"]
    assert _state(client, run_id)[:2] == (["1"], {})  # no alias moved by registering

    # promote: the alias move fails -> nothing says "promoted"
    monkeypatch.setattr(
        MlflowClient,
        "set_registered_model_alias",
        fail_once(MlflowClient.set_registered_model_alias),
    )
    with pytest.raises(ConnectionError):
        pipeline.promote(cfg, summary["location"], trained, evaluation, "1")
    assert _state(client, run_id) == (["1"], {}, {"1": None}, None)

    # promote again: the tag write after the alias fails -> champion, not yet tagged
    monkeypatch.setattr(
        MlflowClient, "set_model_version_tag", fail_once(MlflowClient.set_model_version_tag)
    )
    with pytest.raises(ConnectionError):
        pipeline.promote(cfg, summary["location"], trained, evaluation, "1")
    assert _state(client, run_id) == (["1"], {"champion": "1"}, {"1": None}, None)

    # the retry completes it: one version, the alias, consistent tags
    version = pipeline.register(trained, summary)
    decision = pipeline.promote(cfg, summary["location"], trained, evaluation, version)
    assert decision["promoted"] and version == "1"
    assert _state(client, run_id) == (["1"], {"champion": "1"}, {"1": "promoted"}, "promoted")


def test_champion_that_does_not_answer_fails_the_evaluation(sim_lake, monkeypatch):
    """A registry or artifact store that does not answer is retried, then fails the step: the
    candidate is never judged against the baselines only because the champion was unreachable."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    import training.registry
    from training import pipeline
    from training.registry import RegistryError

    lake, end = sim_lake
    monkeypatch.setattr(training.registry, "RETRY_WAIT_S", 0.01)
    cfg = _cfg("train.epochs=2")
    first = pipeline.run_pipeline(end, cfg, run_key="champ")
    assert first["decision"]["promoted"], first["decision"]
    loc, trained = first["training_set"]["location"], first["trained"]
    real_load = training.registry.load_recommender
    fails = {"left": 0}

    def flaky_load(uri):
        if "@champion" in uri and fails["left"]:
            fails["left"] -= 1
            raise ConnectionResetError(104, "Connection reset by peer")
        return real_load(uri)

    monkeypatch.setattr(training.registry, "load_recommender", flaky_load)
    fails["left"] = 2  # two transient failures: the third try loads the champion
    ev = pipeline.evaluate(cfg, loc, trained)
    assert ev["champion"] is not None and ev["champion_version"] == "1", ev["champion_note"]

    fails["left"] = 99  # down for good: the step fails, naming what it could not reach
    with pytest.raises(RegistryError, match="loading champion v1: the registry did not answer"):
        pipeline.evaluate(cfg, loc, trained)

    # the alias lookup itself failing is not "no champion yet" either
    def unreachable(client, name, alias):
        raise MlflowException(
            "API request to http://mlflow/api/2.0/mlflow/registered-models/alias failed with exception ConnectionError"
        )

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", unreachable)
    with pytest.raises(RegistryError, match="looking up the champion"):
        pipeline.evaluate(cfg, loc, trained)


def test_candidate_unreachable_at_infra_validation_fails_instead_of_rejecting(monkeypatch):
    """A registry that does not answer while the candidate is loaded for infra-validation fails
    the step (retried by Airflow) rather than recording a "rejected" decision."""
    import training.registry
    from training.registry import InfraValidationError, RegistryError, infra_validate

    monkeypatch.setattr(training.registry, "RETRY_WAIT_S", 0.01)
    tries = []

    def unreachable(uri):
        tries.append(uri)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(training.registry, "load_recommender", unreachable)
    with pytest.raises(RegistryError, match="did not answer after 3 tries") as err:
        infra_validate("models:/flywheel-recommender/1", ts=None)
    assert not isinstance(err.value, InfraValidationError) and len(tries) == 3

    def corrupt(uri):
        raise OSError("not a model")

    monkeypatch.setattr(training.registry, "load_recommender", corrupt)
    with pytest.raises(InfraValidationError, match="cannot be loaded as serving loads it"):
        infra_validate("models:/flywheel-recommender/1", ts=None)


@pytest.mark.parametrize(
    ("tag", "words"),
    [
        (None, "manual"),
        ("manual", "manual"),
        (
            'asset: flywheel://drift {"date": "2026-01-16", "drift_share": 0.5}',
            "drift on 2026-01-16",
        ),
        ('asset: flywheel://drift/ {"date": "2026-01-16"}', "drift on 2026-01-16"),  # Airflow's
        ('asset: flywheel://features {"date": "2026-01-20T00:00:00"}', "new features 2026-01-20"),
        ('asset: flywheel://validated/events {"date": "2026-01-2', "new data"),  # a cut tag
    ],
)
def test_trigger_tags_read_as_words(tag, words):
    from training.registry import describe_trigger

    assert describe_trigger(tag) == words
    if words.startswith("drift on"):
        assert describe_trigger(tag, short=True) == "drift on 01-16"


def _open_store(home: str) -> str:
    import os

    os.environ["FLYWHEEL_HOME"] = home
    os.environ.pop("FLYWHEEL_MLFLOW_TRACKING_URI", None)
    from training.registry import configure_mlflow

    return str(len(configure_mlflow().search_experiments()))


def test_processes_opening_a_new_sqlite_store_at_once_all_succeed(tmp_path):
    """The first drift check and the first training open the embedded store together: one
    migrates, the others wait (alembic's half-done temporary table broke every later open)."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(4) as pool:
        opened = pool.map(_open_store, [str(tmp_path)] * 4)
    assert opened == ["1"] * 4  # every process saw the migrated store's Default experiment
