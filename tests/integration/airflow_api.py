"""Helpers for tests that read Airflow's REST API."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def read_asset_events(fetch: Callable[[], Any], timeout: float = 180.0) -> Any:
    """``fetch()`` (a GET of ``/assets/events`` or ``.../upstreamAssetEvents``), retried while
    Airflow answers HTTP 500.

    Airflow 3.3.2 cannot serialise an asset event one of whose created DAG runs has not started
    yet (``created_dagruns[].start_date`` is NULL while the run is queued): apache/airflow#71360,
    fixed upstream by #71379. The window is a queued run's wait, which grows on a loaded machine.
    Tasks are not affected (the execution API's ``triggering_asset_events`` carry no created
    runs); only these public endpoints are, so a reader waits for the run to start.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fetch()
        except Exception as exc:  # httpx.HTTPStatusError or deploy.twin.TwinError
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if not (status == 500 or "HTTP 500" in str(exc)) or time.monotonic() > deadline:
                raise
        time.sleep(2)
