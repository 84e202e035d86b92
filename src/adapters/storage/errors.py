"""Errors L2 adapters raise at construction when their settings cannot work (the factory names the flag)."""

from __future__ import annotations

__all__ = ("L2ConfigError",)


class L2ConfigError(ValueError):
    """An adapter's settings are unusable (a plugin class that is missing or does not conform, ...).

    The L2 factory turns it into a ConfigError naming `--l2-adapter #N`, so start-up exits 2 with it.
    """
