"""The one error type configuration problems raise; the CLI prints its lines and exits 2."""

from __future__ import annotations

__all__ = ("ConfigError",)


class ConfigError(Exception):
    """One or more configuration mistakes, each a line that names where the user wrote it."""

    def __init__(self, *messages: str) -> None:
        super().__init__("\n".join(messages))
        self.messages: tuple[str, ...] = messages
