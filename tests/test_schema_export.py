"""schema.graphql at the root is the exported SDL; drift fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app import export_schema

ROOT = Path(__file__).resolve().parent.parent


def test_schema_graphql_matches_export() -> None:
    committed = (ROOT / "schema.graphql").read_text()
    assert committed == export_schema(), (
        "schema.graphql is stale: run `reelgraph export-schema > schema.graphql`"
    )


def test_cli_export_schema_prints_the_same_sdl() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "export-schema"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout == (ROOT / "schema.graphql").read_text()
