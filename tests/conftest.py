"""Shared fixtures: the real data in ../shared (skipped cleanly when it is absent)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from cvdeep.eval.datasets import read_homography  # noqa: F401  (the tests import it from here)

ROOT = Path(__file__).resolve().parents[1]


def shared_root() -> Path | None:
    """``$CVDEEP_SHARED`` or ``../shared`` beside the repository, if it exists."""
    candidate = Path(os.environ.get("CVDEEP_SHARED", ROOT.parent / "shared"))
    return candidate if (candidate / "data").is_dir() else None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true",
                     help="also run the tests marked slow (the 12 MP peak-memory checks of every model, ~10 min)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` run with ``--run-slow`` or ``CVDEEP_RUN_SLOW=1`` only: CI keeps to 20 minutes."""
    if config.getoption("--run-slow") or os.environ.get("CVDEEP_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow or CVDEEP_RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared() -> Path:
    root = shared_root()
    if root is None:
        if os.environ.get("CI"):
            pytest.fail("../shared is missing in CI; the real-data tests must run there")
        pytest.skip("../shared (real images and weights) is not present beside the repository")
    return root


@pytest.fixture(scope="session")
def data_dir(shared: Path) -> Path:
    return shared / "data"


@pytest.fixture(scope="session", autouse=True)
def _weights_dirs() -> None:
    """Point the weights hub at ../shared/weights when present (CI and developers)."""
    root = shared_root()
    if root is not None and "CVDEEP_WEIGHTS_DIR" not in os.environ:
        os.environ["CVDEEP_WEIGHTS_DIR"] = str(root / "weights")


@pytest.fixture(scope="session")
def graf_pair(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Oxford graf img1, img2 (BGR uint8) and the ground-truth homography 1 -> 2."""
    seq = data_dir / "oxford_affine" / "images" / "graf"
    return cv2.imread(str(seq / "img1.ppm")), cv2.imread(str(seq / "img2.ppm")), read_homography(seq / "H1to2p")


@pytest.fixture(scope="session")
def churchill_pair(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HPatches v_churchill 1, 2 (BGR uint8) and the ground-truth homography 1 -> 2."""
    seq = data_dir / "hpatches_subset" / "vbalnt_tfeat" / "imgs" / "v_churchill"
    return cv2.imread(str(seq / "1.ppm")), cv2.imread(str(seq / "2.ppm")), read_homography(seq / "H_1_2")


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """torch on one thread for a module's tests (``pytest.mark.usefixtures("one_thread")``): the learning
    tests are tiny, and one thread avoids oversubscribing a shared CPU (it was 10x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
