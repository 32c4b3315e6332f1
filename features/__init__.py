"""Features: daily feature tables computed from validated data, served through Feast.

* :mod:`features.columns` -- the model-facing column lists (the interface the trainer and the
  serving API code against); the service, view and window names are in :mod:`core.names`.
* :mod:`features.compute` -- validated events/items/users of day D into one Parquet partition
  per feature view (``features/<view>/dt=D/part-00000.parquet``), computed in DuckDB SQL over the
  window's partitions, one engine piece per day (:mod:`core.engine`: in process, or Ray tasks),
  and reading them back; :class:`features.compute.FeatureError`.
* :mod:`features.online` -- a day's snapshot streamed into the online store in record batches,
  Feast's exact online format (Redis: pipelined, newer-wins in the server).
* :mod:`features.pit` -- point-in-time joins of entity rows with the feature partitions (what
  Feast's ``get_historical_features`` returns, a day at a time, out of core).
* :mod:`features.store` -- the Feast feature store of the active profile (apply, materialize,
  freshness, training frames, online lookups).
* :mod:`features.pipeline` -- small pure helpers of the ``build_features`` DAG.
"""
