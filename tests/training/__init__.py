"""Training tests. ``LGBM``: small, fast LightGBM parameters shared by the model tests."""

LGBM = {"n_estimators": 60, "learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 20,
        "verbose": -1}  # fmt: skip
