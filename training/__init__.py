"""Training: rolling snapshots, models, baselines, evaluation, MLflow tracking and registry."""
