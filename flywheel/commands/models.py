"""Model commands: ``flywheel models`` (the registry leaderboard) and ``flywheel train``."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import typer

from core.errors import FlywheelError
from training.config import TrainingConfig
from training.registry import list_versions

_HEADER = [
    "version",
    "aliases",
    "ndcg@10 [95% CI]",
    "recall@20",
    "cold ndcg@10",
    "strongest baseline",
    "vs baseline",
    "vs oracle",
    "window",
    "decision",
    "trigger",
]


def register(app: typer.Typer) -> None:
    """Add ``models`` and ``train`` to the CLI."""
    app.command("models")(models_cmd)
    app.command("train")(train_cmd)


def models_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print JSON (for scripts)"),
) -> None:
    """List registered recommender versions: aliases, holdout metrics against the strongest
    baseline, lineage tags."""
    rows = list_versions()
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo("no registered versions yet (run `flywheel train` or the train_recommender DAG)")
        return
    lines = [_HEADER, *(_leaderboard_line(r) for r in rows)]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(_HEADER))]
    for line in lines:
        typer.echo("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _fmt(m: dict[str, float], key: str) -> str:
    return f"{m[key]:.4f}" if key in m else "-"


def _leaderboard_line(row: dict[str, Any]) -> list[str]:
    """One version as the leaderboard's cells (``-`` where a value is unknown): the model on the
    holdout with its 95 % interval, and the strongest baseline on the same requests."""
    m, t = row["metrics"], row["tags"]
    ndcg = _fmt(m, "holdout_ndcg_at_10")
    if "holdout_ndcg_at_10_lo" in m:
        ndcg += f" [{m['holdout_ndcg_at_10_lo']:.3f}, {m['holdout_ndcg_at_10_hi']:.3f}]"
    best, base = t.get("strongest_baseline"), m.get("strongest_baseline_ndcg_at_10")
    if best and base is not None:
        baseline = f"{best} {base:.4f}"
        ratio = (
            f"{m['holdout_ndcg_at_10'] / base:.2f}x" if base and "holdout_ndcg_at_10" in m else "-"
        )
    elif "popularity_ndcg_at_10" in m:  # versions registered before the baselines were logged
        baseline, ratio = f"popularity {m['popularity_ndcg_at_10']:.4f}", "-"
    else:
        baseline, ratio = "-", "-"
    oracle = m.get("ndcg_to_oracle_ratio")
    return [
        row["version"],
        ",".join(row["aliases"]) or "-",
        ndcg,
        _fmt(m, "holdout_recall_at_20"),
        _fmt(m, "holdout_ndcg_at_10_cold"),
        baseline,
        ratio,
        "-" if oracle is None else f"{oracle:.2f}",
        f"{t.get('data_window_start', '?')}..{t.get('data_window_end', '?')}",
        t.get("promotion_decision", "-"),
        t.get("trigger", "-")[:40],
    ]


def train_cmd(
    end_day: str = typer.Option(
        None, "--end-day", help="Last day of the window (default: newest validated day)"
    ),
    config: Path = typer.Option(None, "--config", help="TOML/JSON training config"),
    overrides: list[str] = typer.Option([], "--set", help="group.key=value override (repeatable)"),
    as_json: bool = typer.Option(False, "--json", help="Print the step summaries as JSON"),
) -> None:
    """Build the training set, train, evaluate vs the champion, register, promote or not."""
    # the pipeline pulls in torch and MLflow: imported when training, not for every CLI call
    from training import pipeline

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = TrainingConfig.load(config, overrides)
    try:
        day = dt.date.fromisoformat(end_day) if end_day else pipeline.latest_validated_day()
    except ValueError:
        raise FlywheelError(f"--end-day must be YYYY-MM-DD, got {end_day!r}") from None
    if day is None:
        raise FlywheelError("no validated events in the lake: run `flywheel ingest` first")
    out = pipeline.run_pipeline(day, cfg)
    if as_json:
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    d, t = out["decision"], out["trained"]
    typer.echo(
        f"run {t['run_id']}: NDCG@10 {t['metrics'].get('holdout_ndcg_at_10', float('nan')):.4f} (epochs {t['epochs_run']})"
    )
    typer.echo(
        f"version {d['version']}: {'champion' if d['promoted'] else 'not promoted'} — {d['reason']}"
    )
