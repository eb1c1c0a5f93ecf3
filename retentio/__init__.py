"""retentio: churn risk, next purchase and lifetime value for every CRM customer."""

__version__ = "0.1.0"
