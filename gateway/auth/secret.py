"""HS256 with a shared secret read from a file: for local use and tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

MIN_SECRET_BYTES = 32


class SharedSecret:
    """Accepts HS256 only: a token claiming any other algorithm is refused before this is asked."""

    algorithms: tuple[str, ...] = ("HS256",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"the JWT secret is {len(secret)} bytes; use at least {MIN_SECRET_BYTES} "
                              "(for example: openssl rand -base64 48)")
        self._secret = secret

    @classmethod
    def from_file(cls, path: Path) -> SharedSecret:
        """The file's bytes less surrounding whitespace (a trailing newline is common)."""
        try:
            secret = path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the JWT secret file {path}: {exc.strerror or exc}") from None
        return cls(secret)

    def key_for(self, header: Mapping[str, Any]) -> bytes:
        return self._secret
