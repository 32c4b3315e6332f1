"""Great Expectations Data Docs of every validation, in the lake under ``quality/data_docs/``.

GX renders Data Docs with a site builder that writes to a local folder. The gate's context gets
one Data Docs site (:data:`SITE`, ``context.add_data_docs_site``) whose validations section
reads a store of its own (:data:`STORE`, in memory). :meth:`DataDocs.render` puts one run's
results of a table there, pseudonymised (:func:`validation.gate.redacted_gx_result`), has GX
build the site for those results only (its ``SiteBuilder.build`` with their identifiers, as
``context.build_data_docs`` does: their pages and an index of them) in a temporary folder, takes the HTML and empties the store
again. A build costs the same on the first day and the thousandth, and no raw ``user_id``
reaches a page.

Layout (one site per day and table; GX's own paths inside it)::

    quality/data_docs/dt=D/<table>/index.html              GX's index of the latest run's pages
    quality/data_docs/dt=D/<table>/validations/<suite>/<validation_id>/<run time>/<batch>.html

``<batch>`` is the table for its data suite and the raw file's name for a file's schema suite.
Each run's pages stay (as ``quality/runs/`` keeps each run's outcome). The outcome's
``data_docs_key`` is the page of the table's last failed result (else its last: the data
suite's), not the index: GX draws its index with JavaScript (bootstrap-table), which the UI's
sandboxed pages (``Content-Security-Policy: sandbox``) do not run, while a result page is plain
HTML (its filters and "show more" need scripts; every row is there without them).

Assets: GX inlines its stylesheet in each page and loads Bootstrap, jQuery, Vega and Font
Awesome from public CDNs, its logo from its own bucket; the only local link is
``static/images/favicon.ico``. The site's ``static/`` folder (4 MB, mostly fonts no page uses)
is not copied into the lake.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.lake import QUALITY, partition_prefix
from validation.gate import redacted_gx_result

if TYPE_CHECKING:
    import datetime as dt

    from validation.gate import Gate

#: Lake folder of ``quality/`` with the Data Docs sites (the UI serves .html under it).
DATA_DOCS = "data_docs"
SITE = "flywheel"  # the Data Docs site of the gate's GX context
STORE = "flywheel_data_docs_results"  # the validation results store the site reads
_DOCS: weakref.WeakKeyDictionary[Gate, DataDocs] = weakref.WeakKeyDictionary()
#: values of an argument shown on a page: a value set can hold every id of a re-sent export
#: (``event_ids_seen``), and GX would print each one
SHOWN_VALUES = 50


def docs_prefix(day: dt.date, table: str) -> str:
    """``quality/data_docs/dt=D/<table>/``: the Data Docs site of ``table`` on ``day``."""
    return partition_prefix(QUALITY, DATA_DOCS, day) + f"{table}/"


def for_page(result: Any) -> Any:
    """A copy of a GX validation result fit for a page: user ids pseudonymised
    (:func:`validation.gate.redacted_gx_result`), long value sets cut to :data:`SHOWN_VALUES`
    values and a last one saying how many more there were."""
    out = redacted_gx_result(result)
    for r in out.results:
        cfg = r.expectation_config
        long = {
            k: v for k, v in cfg.kwargs.items() if isinstance(v, list) and len(v) > SHOWN_VALUES
        }
        if long:
            more = {
                k: [*v[:SHOWN_VALUES], f"… {len(v) - SHOWN_VALUES} more"] for k, v in long.items()
            }
            cfg.kwargs = {**cfg.kwargs, **more}
    return out


def batch_name(label: str) -> str:
    """A GX batch identifier (a page's file name) for a table or a raw file's key."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", label.rsplit("/", 1)[-1]) or "batch"


class DataDocs:
    """The Data Docs site of one gate's GX context (:func:`for_gate`)."""

    def __init__(self, context: Any):
        from great_expectations.render.renderer.site_builder import SiteBuilder

        self.context = context
        self._folder = tempfile.TemporaryDirectory(prefix="flywheel-data-docs-")
        self._lock = threading.Lock()  # one build at a time in the folder
        self._store = context.add_store(
            STORE,
            {
                "class_name": "ValidationResultsStore",
                "store_backend": {"class_name": "InMemoryStoreBackend"},
            },
        )
        config = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": self._folder.name,
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "site_section_builders": {
                "expectations": "False",  # suites are code (validation.suites)
                "profiling": "False",
                "validations": {"source_store_name": STORE},
            },
        }
        context.add_data_docs_site(SITE, config)
        # the site's builder, kept: ``context.build_data_docs`` makes a new one per call, and
        # with it new Jinja environments that compile GX's ~100 templates again (~0.4 s a page)
        self._builder = SiteBuilder(
            data_context=context,
            site_name=SITE,
            **{k: v for k, v in config.items() if k != "class_name"},
        )

    def render(
        self, day: dt.date, table: str, validation_id: str, results: list[tuple[str, Any]]
    ) -> tuple[str | None, dict[str, bytes]]:
        """The Data Docs of one run's GX ``results`` of ``table`` (``(batch label, result)``
        pairs, in the order they ran): the entry page's lake key (``None`` without results)
        and the site's HTML files by lake key (to write; nothing is written here)."""
        if not results:
            return None, {}
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        keys = [
            ValidationResultIdentifier(
                ExpectationSuiteIdentifier(name=vr.suite_name),
                RunIdentifier(run_name=validation_id, run_time=vr.meta["run_id"].run_time),
                batch_name(label),
            )
            for label, vr in results
        ]
        failed = [k for k, (_, vr) in zip(keys, results, strict=True) if not vr.success]
        entry = (failed or keys)[-1]
        prefix = docs_prefix(day, table)
        with self._lock:
            root = Path(self._folder.name)  # the last build's pages go: only this run's stay
            shutil.rmtree(root / "validations", ignore_errors=True)
            (root / "index.html").unlink(missing_ok=True)
            try:
                for key, (_, vr) in zip(keys, results, strict=True):
                    self._store.set(key, for_page(vr))
                self._builder.build(resource_identifiers=keys)
            finally:
                for key in keys:
                    self._store.remove_key(key)
            files = {
                prefix + p.relative_to(root).as_posix(): p.read_bytes()
                for p in root.rglob("*.html")
                if p.relative_to(root).parts[0] != "static"
            }
        page = prefix + "validations/" + "/".join(entry.to_tuple()) + ".html"
        return (page if page in files else None), files  # (GX logs a page it failed to render)


def for_gate(gate: Gate) -> DataDocs:
    """The Data Docs site of ``gate``'s context (made on first use, kept with the gate)."""
    docs = _DOCS.get(gate)
    if docs is None:
        docs = _DOCS[gate] = DataDocs(gate.context)
    return docs
