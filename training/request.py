"""The recommender's input contract: the request frame its pyfunc reads, and serving sends.

Input DataFrame columns:

* ``user_id`` (str, pseudonymised) — required;
* ``k`` (int, default :data:`DEFAULT_K`) — optional;
* ``exclude_item_ids`` (list of str) — optional, items never to return (e.g. already bought);
* ``recent_item_ids`` (list of str, oldest first) — optional, items the user chose since the
  model's cutoff (or, for a user new to the model, at all): the user tower adds them to the
  user's stored history, so a new user gets personal results from the first items;
* user feature columns (``features.columns.USER_FEATURES`` / ``USER_CATEGORICAL`` names) —
  optional; when absent the model uses the features it stored at training time for known users
  and defaults (feature-only cold-start path) for new ones.

Output DataFrame: ``user_id``, ``item_ids`` (list[str]), ``scores`` (list[float]).

The model reads it (:mod:`training.pyfunc`), serving builds it (:func:`one_row_request`), and the
promotion smoke test sends it (:func:`training.registry.infra_validate`). This module stays light
(numpy and pandas are imported when a request is built) so serving can import it at start-up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

#: Items returned when a request has no ``k``.
DEFAULT_K = 10


def one_row_request(
    user_id: str,
    k: int,
    exclude: Iterable[str],
    features: Mapping[str, Any] | None,
    recent: Iterable[str] | None = None,
) -> pd.DataFrame:
    """The pyfunc input for one user, built from 1-element arrays (half the cost of lists).

    Numeric features are sent as float64 (a missing one as NaN): the model's signature declares
    them double, and MLflow refuses to convert the online store's int64 counts to float64.
    Serving and the promotion smoke test (``training.registry.infra_validate``) build their
    requests here.
    """
    import numpy as np
    import pandas as pd

    def obj(value: Any) -> np.ndarray:
        arr = np.empty(1, dtype=object)
        arr[0] = value
        return arr

    cols: dict[str, np.ndarray] = {
        "user_id": obj(user_id),
        "k": np.array([int(k)], dtype=np.int64),
        "exclude_item_ids": obj(sorted(exclude)),
    }
    if recent is not None:
        cols["recent_item_ids"] = obj([str(i) for i in recent])
    for name, value in (features or {}).items():
        if isinstance(value, str):
            cols[name] = obj(value)
        else:
            cols[name] = np.array([np.nan if value is None else value], dtype=np.float64)
    return pd.DataFrame(cols, copy=False)
