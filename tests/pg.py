"""Real PostgreSQL for tests: TEST_DATABASE_URL when set, else an embedded server.

Each test that needs data gets its own database, cloned from a template that already has
the migrations applied (CREATE DATABASE ... TEMPLATE takes a fraction of a second).
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

from db.embedded import EmbeddedPostgres
from db.engine import normalise_url

TEMPLATE = f"reelgraph_tpl_{os.getpid()}"
_names = itertools.count()


class TestServer:
    """One PostgreSQL server, and the databases the test session makes on it."""

    __test__ = False

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)

    def url_for(self, database: str) -> str:
        return make_url(self.url).set(database=database).render_as_string(hide_password=False)

    def new_name(self) -> str:
        return f"reelgraph_t{os.getpid()}_{next(_names)}"


def server_url() -> Iterator[str]:
    """Yield the URL of the server to use, stopping an embedded one afterwards."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="reelgraph-pg-") as data_dir:
        embedded = EmbeddedPostgres(Path(data_dir))
        try:
            yield embedded.start()
        finally:
            embedded.stop()
