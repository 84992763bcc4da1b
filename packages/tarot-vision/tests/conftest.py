"""pytest fixtures: generated data trees in the real formats (generators in vision_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from vision_fixtures import make_cifar, make_cityscapes, make_gta5


@pytest.fixture
def cityscapes_root(tmp_path: Path) -> Path:
    return make_cityscapes(tmp_path / "cityscapes")


@pytest.fixture
def gta_root(tmp_path: Path) -> Path:
    return make_gta5(tmp_path / "gta5")


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    return make_cifar(tmp_path / "cifar-10-batches-py")
