"""cvdeep in several processes: detectors travel to spawn workers, and fork after torch ran does not hang."""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

import cvdeep
from conftest import ROOT


def _small_image(data_dir: Path) -> np.ndarray:
    image = cv2.imread(str(data_dir / "oxford_affine" / "images" / "graf" / "img1.ppm"))
    return cv2.resize(image, (320, 256), interpolation=cv2.INTER_AREA)


def _extract_in_worker(task: tuple[cvdeep.Feature2D, np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    detector, image = task
    keypoints, descriptors = detector.detectAndCompute(image, None)
    return cv2.KeyPoint_convert(keypoints), descriptors, os.getpid()


def test_spawn_workers_receive_a_detector_and_extract_what_the_parent_does(data_dir: Path) -> None:
    image = _small_image(data_dir)
    detector = cvdeep.XFeat_create(500)
    keypoints, descriptors = detector.detectAndCompute(image, None)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        (points, child_descriptors, pid), = pool.map(_extract_in_worker, [(detector, image)])
    assert pid != os.getpid()
    np.testing.assert_allclose(points, cv2.KeyPoint_convert(keypoints), atol=1e-4)
    np.testing.assert_allclose(child_descriptors, descriptors, atol=1e-5)


FORK_SCRIPT = textwrap.dedent("""
    import multiprocessing, sys
    import cv2, numpy as np, torch
    import cvdeep

    torch.set_num_threads(2)
    image = cv2.resize(cv2.imread(sys.argv[1]), (320, 256), interpolation=cv2.INTER_AREA)
    detector = cvdeep.XFeat_create(500)
    for _ in range(3):  # the parent's OpenMP pool is started
        expected = detector.detectAndCompute(image, None)[1]

    def work(_):
        return torch.get_num_threads(), detector.detectAndCompute(image, None)[1]

    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map(work, range(2))
    assert all(threads == 1 for threads, _ in results), [threads for threads, _ in results]
    assert all(np.allclose(d, expected, atol=1e-5) for _, d in results)
    assert torch.get_num_threads() == 2  # the parent keeps its threads
    print("fork pool done")
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_fork_after_torch_ran_runs_single_threaded_children_and_says_so(data_dir: Path, tmp_path: Path) -> None:
    """Without cvdeep's fork guard the children wait forever for torch's OpenMP threads; the timeout
    bounds the test either way."""
    script = tmp_path / "fork_pool.py"
    script.write_text(FORK_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2")
    graf = data_dir / "oxford_affine" / "images" / "graf" / "img1.ppm"
    try:
        done = subprocess.run([sys.executable, str(script), str(graf)], env=env, capture_output=True, text=True,
                              timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("a fork Pool after torch ran hung (cvdeep's fork guard did not act)")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fork pool done" in done.stdout
    warnings = [line for line in done.stderr.splitlines() if "forks while torch runs on 2 threads" in line]
    assert len(warnings) == 1, done.stderr  # once per parent process, not once per child
    assert "spawn" in warnings[0] and "forkserver" in warnings[0]


def test_fork_guard_leaves_single_threaded_parents_alone(tmp_path: Path) -> None:
    script = tmp_path / "fork_one_thread.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing, torch
        import cvdeep
        torch.set_num_threads(1)
        torch.ones(64, 64) @ torch.ones(64, 64)
        def work(_):
            from cvdeep import parallel
            return torch.get_num_threads(), parallel.forked_single_threaded
        with multiprocessing.get_context("fork").Pool(1) as pool:
            print(pool.map(work, [0]))
    """))
    done = subprocess.run([sys.executable, str(script)], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[(1, False)]" and "forks while torch" not in done.stderr


def test_torch_dataloader_forks_without_the_warning(tmp_path: Path) -> None:
    """torch's DataLoader sets one thread in its workers itself: its fork is not warned about."""
    script = tmp_path / "dataloader.py"
    script.write_text(textwrap.dedent("""
        import torch
        import cvdeep
        torch.set_num_threads(2)
        torch.ones(256, 256) @ torch.ones(256, 256)
        loader = torch.utils.data.DataLoader(list(range(4)), num_workers=2, multiprocessing_context="fork")
        print(sum(int(batch) for batch in loader))
    """))
    done = subprocess.run([sys.executable, str(script)], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "6" and "forks while torch" not in done.stderr
