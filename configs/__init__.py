"""Configuration: ``default.yaml`` and the typed :class:`Settings` that loads it."""

from retentio.configs.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
