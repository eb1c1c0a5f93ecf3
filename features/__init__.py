"""Features: the data contract, loading and validation, point-in-time features, labels, store."""
