"""The demo's printed summary: cut lines say so, and the training counts add up (issue 16)."""

from __future__ import annotations

from flywheel.demo import clip, format_summary, training_outcomes


class TaskInstances:
    """The one Airflow REST call :func:`training_outcomes` makes, answered from a list."""

    def __init__(self, rows: list[tuple[str, str, str]]):
        self.rows = [{"dag_run_id": r, "task_id": t, "state": s} for r, t, s in rows]

    def all_task_instances(self, dag_id: str) -> list[dict]:
        assert dag_id == "train_recommender"
        return self.rows


def _summary(**extra) -> dict:
    return {
        "days_ingested": ["2026-01-01"],
        "days_rejected": [],
        "quarantined": [{"date": "2026-01-02", "table": "events", "reasons": ["x" * 400]}],
        "runs": {"train_recommender": {"success": 3}},
        "models": [{"version": "1", "tags": {}, "metrics": {}, "aliases": ["champion"]}],
        "drift": [],
        **extra,
    }


def test_a_cut_line_ends_with_an_ellipsis_and_a_short_one_is_left_alone():
    assert clip("abcdef", 4) == "abc…" and len(clip("abcdef", 4)) == 4
    assert clip("abc", 4) == "abc"
    text = format_summary(_summary(), {}, [])
    line = next(ln for ln in text.splitlines() if "2026-01-02 events" in ln)
    assert line.endswith("…") and len(line) == 160


def test_successful_training_runs_are_explained_against_the_registry():
    client = TaskInstances(
        [
            ("r1", "build_training_set", "success"),
            ("r1", "register", "success"),
            ("r2", "build_training_set", "skipped"),
            ("r2", "register", "skipped"),
            ("r3", "build_training_set", "success"),
            ("r3", "train", "failed"),
            ("r3", "register", "upstream_failed"),
        ]
    )
    trainings = training_outcomes(client)
    assert trainings == {"registered": 1, "skipped": 1, "failed": 1, "other": 0}
    text = format_summary(_summary(trainings=trainings), {}, [])
    assert (
        "Trainings: 1 registered a version, 1 skipped (too little history yet, or a window "
        "already trained), "
        "1 failed; the registry holds 1 version(s)"
    ) in text


def test_serving_is_ready_only_with_its_champion_features_and_data():
    """The demo plays traffic once serving answers with its model: an API that is up but still
    loading its champion serves every request from the popularity fallback (a demo once measured
    247 of 300 slates that way and reported their relevance as the model's)."""
    import http.server
    import json
    import threading

    from flywheel.demo import serving_ready

    health = {"status": "ok", "champion": None, "features": True, "data_as_of": None}

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = json.dumps(health).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert not serving_ready(url)
        health.update(champion="4")
        assert not serving_ready(url)  # data not read yet
        health.update(data_as_of="2026-01-30")
        assert serving_ready(url)
    finally:
        server.shutdown()
    assert not serving_ready(url)  # down


def test_the_summary_names_the_model_behind_each_served_slate():
    text = format_summary(
        _summary(
            serving={
                "url": "http://127.0.0.1:8000",
                "requests": 300,
                "errors": 0,
                "clicks_per_slate": 1.5,
                "feedback": {"click": 1},
                "served_relevance": 0.2,
                "oracle_relevance": 0.6,
                "model_versions": {"4": 53, "popularity": 247},
                "relevance_by_version": {"4": 0.446, "popularity": 0.168},
            }
        ),
        {},
        [],
    )
    assert "served by: v4 53 slates (relevance 0.446), popularity 247 slates" in text
