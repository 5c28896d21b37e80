"""An embedded PostgreSQL (pgserver: a real server shipped in a wheel) for zero-setup runs."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


class EmbeddedPostgres:
    """Starts (or reuses) a PostgreSQL server whose data lives in `data_dir`."""

    def __init__(self, data_dir: Path, *, keep_running: bool = False) -> None:
        self._data_dir = data_dir.resolve()
        self._keep_running = keep_running
        self._server: Any = None

    def start(self) -> str:
        """Start the server; return an asyncpg URL for SQLAlchemy."""
        self._data_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its /tmp
            # fallback is what we want anyway.
            warnings.simplefilter("ignore")
            import pgserver  # heavy import, only when the embedded server is wanted

            self._server = pgserver.get_server(  # type: ignore[attr-defined]
                self._data_dir, cleanup_mode=None if self._keep_running else "stop"
            )
        return asyncpg_url(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None and not self._keep_running:
            self._server.cleanup()
            self._server = None


def asyncpg_url(uri: str) -> str:
    """`postgresql://postgres:@/postgres?host=/sock` -> a `postgresql+asyncpg://` URL."""
    parts = urlsplit(uri)
    host = parse_qs(parts.query).get("host", [""])[0]
    user = parts.username or "postgres"
    database = parts.path.lstrip("/") or "postgres"
    return f"postgresql+asyncpg://{user}@/{database}?host={host}"
