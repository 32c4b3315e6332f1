"""The serving API and its feedback loop.

* :mod:`serving.app` -- the FastAPI app (``create_app``) behind ``flywheel serve``.
* :mod:`serving.model` -- follows the ``champion``/``challenger`` aliases in MLflow and
  swaps a newly promoted version in the background, without dropping requests.
* :mod:`serving.fallback` -- what serving knows from the lake (catalog, purchases,
  countries, popularity) and the popularity fallback for users the model cannot serve.
* :mod:`serving.feedback` -- impressions and feedback, checked (one event per impression,
  item and type, inside the time window), spooled to local disk (:mod:`serving.spool`) before
  the API answers and written to the raw lake in idempotent batches.
* :mod:`serving.cache` -- the last-known model versions on local disk: serving starts without
  MLflow.
* :mod:`serving.redact` -- credentials in URIs redacted from responses and logs.
* :mod:`serving.ab` -- the stable A/B split and the per-variant click-through report.

Heavy libraries (pandas, pyarrow, mlflow, feast, fastapi) are imported where they are used.
"""
