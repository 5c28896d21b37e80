"""The GraphQL schema: types, connections, inputs and the error policy."""

from __future__ import annotations

from schema.build import build_schema

__all__ = ["build_schema"]
