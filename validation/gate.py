"""Run the Great Expectations suites and turn their results into findings people can act on.

The GX context is built when a gate runs (``gx.get_context(mode="ephemeral")``), never at import:
a pandas datasource with one dataframe asset per (table, suite kind), a whole-dataframe batch
definition, a ValidationDefinition and a Checkpoint each. :class:`Gate` keeps them for the
duration of one ingestion so the three tables of a day share one context.

A failed check is a :class:`Finding` (expectation, rule, column, message, offending examples);
:class:`GateFailure` is the exception that fails the Airflow task and whose text names the file,
the column, the expectation and a few offending values.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import ContractError
from core.privacy import is_personal, pseudonym_key, redact_values
from validation import suites
from validation.config import DEFAULT, GateConfig

if TYPE_CHECKING:
    import pandas as pd


class GateFailure(ContractError):
    """A table of a day's raw data failed the gate: it was not published (the day's other tables
    were, if they passed). ``summary``: what the run published (see ``ingest_day``)."""

    def __init__(self, message: str, summary: dict[str, Any] | None = None):
        super().__init__(message)
        self.summary = summary


@dataclass
class Finding:
    """One failed check, as stored in the validation history.

    ``title``: the expectation with its column(s) and the arguments that tell it apart from
    another expectation of the same type on the same column (value set, bounds), e.g.
    ``expect_column_values_to_be_between(event_ts, max_value=2026-06-01T00:00:00+00:00)``
    (:func:`expectation_title`); the expectation's name when it is not a GX expectation.
    """

    expectation: str
    rule: str
    column: str | None
    message: str
    examples: list = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or self.expectation

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def headline(self) -> str:
        """``title: message; e.g. [examples]`` -- what the finding says, without its files."""
        ex = f"; e.g. {self.examples}" if self.examples else ""
        return f"{self.title}: {self.message}{ex}"

    def one_line(self) -> str:
        where = ", ".join(self.files) if self.files else "(no file)"
        col = f"column '{self.column}'" if self.column else "table"
        ex = f"; e.g. {self.examples}" if self.examples else ""
        return f"{where}: {col} failed {self.title} ({self.rule}): {self.message}{ex}"


#: kwargs that name the checked column(s) or steer GX, not the rule's arguments.
_NOT_ARGUMENTS = frozenset(
    {"column", "column_A", "column_B", "column_list", "batch_id", "result_format"}
    | {"catch_exceptions", "include_config", "row_condition", "condition_parser", "meta"}
)
_SHOWN_VALUES = 5  # values of a value set shown in a title (sets of seen ids run to millions)


def _shown(value: Any, personal: bool) -> str:
    """One argument of a title: scalars as text, long lists cut after a few values."""
    if isinstance(value, dict) and "$PARAMETER" in value:
        return f"${value['$PARAMETER']}"
    if isinstance(value, list | tuple | set | frozenset):
        values = list(value)
        shown = values[:_SHOWN_VALUES]
        if personal:
            shown = redact_values(shown)
        more = f", … {len(values)} values" if len(values) > len(shown) else ""
        return "[" + ", ".join(_shown(v, False) for v in shown) + more + "]"
    value = _jsonable(value)
    return str(redact_values(value) if personal and isinstance(value, str) else value)


def expectation_title(expectation: str, kwargs: dict[str, Any]) -> str:
    """``expectation(column[, column_B], name=value, …)``: the expectation with its column(s)
    and its arguments (value sets cut to a few values; values of a personal column as their
    pseudonyms), so that two rules on one column never read the same."""
    cols = [kwargs[k] for k in ("column", "column_A", "column_B") if kwargs.get(k)]
    cols += list(kwargs.get("column_list") or [])
    personal = any(isinstance(c, str) and is_personal(c) for c in cols)
    args = [
        f"{name}={_shown(value, personal)}"
        for name, value in kwargs.items()
        if name not in _NOT_ARGUMENTS
        and value is not None
        and not (name == "mostly" and value == 1)
    ]
    return f"{expectation}({', '.join([*map(str, cols), *args])})"


def redact_finding(finding: Finding, key: bytes | None = None) -> None:
    """Name the offending values of a personal column (``user_id``) by their pseudonyms, in the
    finding's examples and message (a data suite's finding; a schema finding's examples are
    column names). Done once the findings were attributed to files, before anything shows them.
    """
    if not is_personal(finding.column) or not finding.examples:
        return
    key = key if key is not None else pseudonym_key()
    hashed = redact_values(finding.examples, key)
    for raw, alias in zip(finding.examples, hashed, strict=True):
        if isinstance(raw, str) and raw:
            finding.message = finding.message.replace(raw, alias)
    finding.examples = hashed


def _on_personal(kwargs: dict[str, Any]) -> bool:
    columns = [kwargs.get(k) for k in ("column", "column_A", "column_B")]
    columns += list(kwargs.get("column_list") or [])
    return any(isinstance(c, str) and is_personal(c) for c in columns)


def _exception_kind(info: dict[str, Any]) -> str:
    """The type of the exception an ``exception_info`` reports (``ValueError``), from the last
    line of its traceback, never its message."""
    lines = [ln for ln in str(info.get("exception_traceback") or "").splitlines() if ln.strip()]
    kind = lines[-1].split(":", 1)[0].strip() if lines else ""
    return kind if kind.replace(".", "").replace("_", "").isalnum() else "an exception"


def withheld_exception(info: Any, column: str | None) -> Any:
    """GX's ``exception_info`` of an expectation on a personal column without the exception's
    message and traceback (they can quote raw values), its type kept; nested per-metric
    infos alike."""
    if not isinstance(info, dict):
        return info
    if "exception_message" in info or "exception_traceback" in info:
        note = f"{_exception_kind(info)} (message withheld: it may quote {column} values)"
        return {**info, "exception_message": note, "exception_traceback": note}
    return {k: withheld_exception(v, column) for k, v in info.items()}


def evaluation_error(info: dict[str, Any], column: str | None) -> str:
    """The message of a finding whose expectation could not be evaluated (GX raised): GX's
    exception message, or only the exception's type on a personal column."""
    if is_personal(column):
        info = withheld_exception(info, column)
    return f"could not be evaluated: {info.get('exception_message') or 'no message'}"


def redact_gx_result(result: dict[str, Any], key: bytes | None = None) -> dict[str, Any]:
    """A GX validation result (``to_json_dict()``) with the results of expectations on a
    personal column pseudonymised (their offending values, counts by value, any example) and
    their exception messages withheld (:func:`withheld_exception`)."""
    for r in result.get("results", []):
        kwargs = (r.get("expectation_config") or {}).get("kwargs") or {}
        if _on_personal(kwargs):
            key = key if key is not None else pseudonym_key()
            r["result"] = redact_values(r.get("result") or {}, key)
            r["exception_info"] = withheld_exception(r.get("exception_info"), "user_id")
    return result


def redacted_gx_result(result: Any, key: bytes | None = None) -> Any:
    """A copy of a GX validation result (the ``ExpectationSuiteValidationResult`` object)
    redacted as :func:`redact_gx_result` does its JSON: what GX renders (Data Docs) from it
    names users by their pseudonyms only."""
    out = copy.deepcopy(result)
    for r in out.results:
        if _on_personal(r.expectation_config.kwargs):
            key = key if key is not None else pseudonym_key()
            r.result = redact_values(r.result or {}, key)
            r.exception_info = withheld_exception(r.exception_info, "user_id")
    return out


def _jsonable(value: Any) -> Any:
    """Examples as JSON-friendly scalars (timestamps as ISO strings)."""
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if type(value).__module__ == "numpy" and hasattr(value, "item"):  # 7.0, not np.float64(7.0)
        return value.item()
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)


_GATES: dict[GateConfig, Gate] = {}
GX_LOGGER = "great_expectations"


def quiet_gx() -> None:
    """Raise Great Expectations' loggers to WARNING.

    Importing GX logs ~200 INFO lines (``_docs_decorators`` registering its API, the metric
    registry, datasource loading); a failing ingest task's log would open with them and show
    the gate's verdict only after. Called before GX is imported (its loggers inherit the level)
    and after (one of its modules sets its own logger to INFO on import). GX's progress bars
    ("Calculating Metrics", tqdm on stderr) are off in the gate's context
    (``ProgressBarsConfig(globally=False)``)."""
    logging.getLogger(GX_LOGGER).setLevel(logging.WARNING)
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if (
            name.startswith(GX_LOGGER + ".")
            and isinstance(logger, logging.Logger)
            and logging.NOTSET < logger.level < logging.WARNING
        ):
            logger.setLevel(logging.WARNING)


class Gate:
    """One ephemeral GX context with a checkpoint per (table, suite kind)."""

    def __init__(self, config: GateConfig | None = None):
        quiet_gx()
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        self.config = config or DEFAULT
        self.context = gx.get_context(
            mode="ephemeral",
            project_config=DataContextConfig(
                store_backend_defaults=InMemoryStoreBackendDefaults(),
                progress_bars=ProgressBarsConfig(globally=False),
                analytics_enabled=False,
            ),
        )
        quiet_gx()
        self._datasource = self.context.data_sources.add_pandas("flywheel_raw")
        self._checkpoints: dict[str, Any] = {}

    @classmethod
    def cached(cls, config: GateConfig | None = None) -> Gate:
        """One gate per config and process: building GX checkpoints costs more than small runs."""
        config = config or DEFAULT
        gate = _GATES.get(config)
        if gate is None:
            gate = _GATES[config] = cls(config)
        return gate

    def _checkpoint(self, table: str, kind: str):
        import great_expectations as gx

        name = f"{table}_{kind}"
        cp = self._checkpoints.get(name)
        if cp is None:
            asset = self._datasource.add_dataframe_asset(name)
            batch = asset.add_batch_definition_whole_dataframe(f"{name}_batch")
            suite = (
                suites.schema_suite(table)
                if kind == "schema"
                else suites.data_suite(table, self.config)
            )
            suite = self.context.suites.add(suite)
            vd = self.context.validation_definitions.add(
                gx.ValidationDefinition(name=f"{name}_validation", data=batch, suite=suite)
            )
            # A data suite reports counts and the first offending values (BASIC): SUMMARY would
            # add the offending rows' index list and a pandas query for them, two more passes
            # over the (row-condition filtered) batch per expectation that nothing here reads.
            cp = self.context.checkpoints.add(
                gx.Checkpoint(
                    name=f"{name}_checkpoint",
                    validation_definitions=[vd],
                    result_format={
                        "result_format": "SUMMARY" if kind == "schema" else "BASIC",
                        "partial_unexpected_count": self.config.examples,
                    },
                )
            )
            self._checkpoints[name] = cp
        return cp

    def run(
        self, table: str, kind: str, frame: pd.DataFrame, parameters: dict | None = None
    ) -> tuple[list[Finding], Any]:
        """Validate ``frame`` with the ``kind`` ("schema" | "data") suite of ``table``.

        Returns the findings (empty when it passed) and GX's validation result (an
        ``ExpectationSuiteValidationResult``; ``.to_json_dict()`` it only when it is kept: that
        deep-copies every expectation's configuration and result).
        """
        from great_expectations.data_context.data_context.context_factory import project_manager

        # GX resolves unbound objects through one process-wide "current project": the context
        # built last. With gates of several configs in a process, make it this gate's context.
        project_manager.set_project(self.context)
        cp = self._checkpoint(table, kind)
        result = cp.run(
            batch_parameters={"dataframe": frame}, expectation_parameters=parameters or {}
        )
        (vr,) = result.run_results.values()
        findings = [self._finding(r) for r in vr.results if not r.success]
        return findings, vr

    def _finding(self, r) -> Finding:
        """The finding of one failed expectation result, titled (:func:`expectation_title`; a
        schema rule, checked on the schema frame, by the columns it names)."""
        cfg = r.expectation_config
        finding = self._finding_of(r)
        if (cfg.meta or {}).get("on"):
            finding.title = f"{cfg.type}({finding.column})"
        else:
            finding.title = expectation_title(cfg.type, cfg.kwargs)
        return finding

    def _finding_of(self, r) -> Finding:
        cfg = r.expectation_config
        kwargs, meta, res = cfg.kwargs, cfg.meta or {}, r.result or {}
        rule = meta.get("rule", cfg.type)
        column = kwargs.get("column")
        n = self.config.examples
        if r.exception_info and r.exception_info.get("raised_exception"):
            return Finding(cfg.type, rule, column, evaluation_error(r.exception_info, column))
        on = meta.get("on")
        if on == "columns" and cfg.type == "expect_column_values_to_be_in_set":
            extra = _jsonable(res.get("partial_unexpected_list", []))
            return Finding(
                cfg.type, rule, ", ".join(extra), f"unexpected column(s) {extra}", extra[:n]
            )
        if on == "columns":
            missing = sorted(set(kwargs["value_set"]) - set(res.get("observed_value") or []))
            return Finding(
                cfg.type, rule, ", ".join(missing), f"missing column(s) {missing}", missing[:n]
            )
        if on == "types":
            pairs = res.get("partial_unexpected_list", [])
            expected = dict(map(tuple, kwargs["value_pairs_set"]))
            parts = [f"{c} is {t}, contract says {expected.get(c)}" for c, t in pairs]
            return Finding(
                cfg.type,
                rule,
                ", ".join(c for c, _ in pairs),
                "; ".join(parts),
                _jsonable(pairs)[:n],
            )
        if "column_B" in kwargs and "unexpected_count" in res:
            # a row-wise rule over two columns: blame the checked one (meta "column"), show pairs
            a, b = kwargs["column_A"], kwargs["column_B"]
            pairs = [_jsonable(p) for p in res.get("partial_unexpected_list", [])][:n]
            shown = ", ".join(f"{b}={y} for {a}={x}" for x, y in pairs)
            count, total = res.get("unexpected_count"), res.get("element_count")
            return Finding(
                cfg.type,
                rule,
                meta.get("column", b),
                f"{count} of {total} rows ({shown})",
                [y for _, y in pairs],
            )
        if "unexpected_count" in res:
            count, total = res.get("unexpected_count"), res.get("element_count")
            examples = _jsonable(res.get("partial_unexpected_list", []))[:n]
            return Finding(cfg.type, rule, column, f"{count} of {total} rows", examples)
        observed = _jsonable(res.get("observed_value"))
        bounds = {k: _jsonable(kwargs.get(k)) for k in ("min_value", "max_value") if k in kwargs}
        return Finding(cfg.type, rule, column, f"observed {observed}, expected {bounds}")


def failure_message(
    day: str,
    validation_id: str,
    failed: dict[str, list[Finding]],
    where: dict[str, str],
    published: list[str] = (),
    withdrawn: dict[str, str] | None = None,
) -> str:
    """One text naming, per failing table, file, column, expectation and offending values
    (``published``: the day's tables that passed and were published all the same;
    ``withdrawn``: table → where its earlier publication of the day was moved)."""
    parts = []
    withdrawn = withdrawn or {}
    for table, findings in failed.items():
        lines = "; ".join(f.one_line() for f in findings)
        dest = f" -> raw files moved to {where[table]}" if where.get(table) else ""
        if withdrawn.get(table):
            dest += f"; the earlier publication was withdrawn to {withdrawn[table]}"
        parts.append(f"[{table}] {lines}{dest}")
    tables = ", ".join(failed)
    also = f" ({', '.join(published)} passed and were published)" if published else ""
    return (
        f"ingest {day} failed the quality gate (validation {validation_id}); {tables} of {day} "
        f"not published{also}. " + " | ".join(parts)
    )
