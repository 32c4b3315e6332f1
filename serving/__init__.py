"""The serving API and its feedback loop.

* :mod:`serving.app` -- the FastAPI app (``create_app``) behind ``flywheel serve``.
* :mod:`serving.model` -- follows the ``champion``/``challenger`` aliases in MLflow and
  swaps a newly promoted version in the background, without dropping requests.
* :mod:`serving.fallback` -- what serving knows from the lake (catalog, purchases,
  countries, popularity) and the popularity fallback for users the model cannot serve.
* :mod:`serving.feedback` -- impressions and feedback, buffered and written to the raw
  lake in atomic batches.
* :mod:`serving.ab` -- the stable A/B split and the per-variant click-through report.

Heavy libraries (pandas, pyarrow, mlflow, feast, fastapi) are imported where they are used.
"""
