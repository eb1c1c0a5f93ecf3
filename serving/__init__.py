"""Serving: the plain Scorer and the BentoML service that delegates to it."""
