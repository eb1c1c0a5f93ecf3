"""Monitoring: Evidently drift and quality, realised-vs-predicted, the pure retrain policy."""
