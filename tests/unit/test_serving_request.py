"""The one-row pyfunc request serving (and the promotion smoke test) sends to the model."""

import numpy as np

from training.request import one_row_request


def test_numeric_features_are_float64_and_missing_is_nan():
    # the online store returns counts as int64; the model signature declares double and MLflow
    # refuses int64 -> float64, so the request must carry floats (this blocked every promotion)
    df = one_row_request(
        "p_x", 10, ["i2", "i1"], {"user_views_7d": 3, "user_ctr_28d": None, "user_country": "DE"}
    )
    assert df["user_views_7d"].dtype == np.float64 and df["user_views_7d"][0] == 3.0
    assert df["user_ctr_28d"].dtype == np.float64 and np.isnan(df["user_ctr_28d"][0])
    assert df["user_country"][0] == "DE"
    assert df["exclude_item_ids"][0] == ["i1", "i2"] and df["k"][0] == 10
