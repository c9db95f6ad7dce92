"""Small shared types."""

from __future__ import annotations

from typing import Any, TypeAlias

JSON: TypeAlias = Any
"""A value that survives ``json.dumps``/``json.loads`` unchanged."""

Inputs: TypeAlias = dict[str, Any]
