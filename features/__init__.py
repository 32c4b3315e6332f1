"""Features: daily feature tables computed from validated data, served through Feast.

* :mod:`features.columns` -- the model-facing column lists (the interface the trainer and the
  serving API code against); the service, view and window names are in :mod:`core.names`.
* :mod:`features.compute` -- validated events/items/users of day D into one Parquet partition
  per feature view (``features/<view>/dt=D/part-00000.parquet``), a range of days in one pass
  (:func:`features.compute.compute_range`), and reading them back;
  :class:`features.compute.FeatureError`.
* :mod:`features.store` -- the Feast feature store of the active profile (apply, materialize,
  freshness, training frames, online lookups).
* :mod:`features.pipeline` -- small pure helpers of the ``build_features`` DAG.
"""
