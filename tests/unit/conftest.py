"""Fixtures for the unit tests (plain helpers are in unit_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from unit_helpers import REGISTRY_YAML


@pytest.fixture
def registry_file(tmp_path: Path) -> Path:
    """REGISTRY_YAML written to a temporary file (the same registry as build_registry())."""
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY_YAML, encoding="utf-8")
    return path
