"""Shared fixtures: every test runs against its own simulated platform file, never the user's."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

_BESIDE_CHECKOUT = Path(__file__).resolve().parents[2] / "shared" / "vectors"
VECTORS = Path(os.environ.get("HAVEN_VECTORS", _BESIDE_CHECKOUT))


@pytest.fixture(autouse=True)
def _private_platform(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Point HAVEN_SIM_PLATFORM at a fresh per-test path so no test touches ~/.local/share/haven."""
    path = tmp_path_factory.mktemp("platform") / "sim-platform.json"
    monkeypatch.setenv("HAVEN_SIM_PLATFORM", str(path))
    yield path


@pytest.fixture
def platform_path(_private_platform: Path) -> Path:
    return _private_platform


@pytest.fixture
def vectors() -> Path:
    if not VECTORS.is_dir():
        pytest.skip(f"attestation vectors not found at {VECTORS}")
    return VECTORS
