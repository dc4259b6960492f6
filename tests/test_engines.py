"""Batch commands on every engine: local (one process, spawn pool) and a real local Ray cluster of 2 workers."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cvdeep
from cvdeep.apps import h5files
from cvdeep.apps.extract import DATASETS, extract_to_h5
from cvdeep.cli import main
from cvdeep.engines import Engine, import_ray
from test_cli import make_image_folder, one_error_line

SIFT = {"features": "sift", "nfeatures": 200, "max_size": 200, "progress": False}


def photos_with_a_broken_one(tmp_path: Path, data_dir: Path) -> Path:
    folder = make_image_folder(tmp_path, data_dir)
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def assert_same_features(first: Path, second: Path, names: list[str]) -> None:
    h5py = pytest.importorskip("h5py")
    with h5py.File(first, "r") as one, h5py.File(second, "r") as two:
        assert sorted(one.keys()) == sorted(two.keys())
        for name in names:
            for dataset in DATASETS:
                np.testing.assert_array_equal(one[name][dataset][()], two[name][dataset][()])
            assert one[name]["keypoints"].attrs["uncertainty"] == two[name]["keypoints"].attrs["uncertainty"]


def test_a_failed_image_is_reported_and_the_others_written(tmp_path: Path, data_dir: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("h5py")
    folder = photos_with_a_broken_one(tmp_path, data_dir)
    for workers in (1, 2):
        out = tmp_path / f"local{workers}.h5"
        summary = extract_to_h5(folder, out, workers=workers, **SIFT)  # type: ignore[arg-type]
        assert (summary.written, summary.skipped) == (3, 0)
        assert list(summary.failed) == ["broken.png"] and "not an image" in summary.failed["broken.png"]
    assert_same_features(tmp_path / "local1.h5", tmp_path / "local2.h5", ["a.png", "b.jpg", "sub/c.png"])
    # the command writes the others, then exits with one error line naming the failed image
    assert main(["extract", str(folder), "--features", "sift", "--out", str(tmp_path / "cli.h5"), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "3 images extracted, 0 already there" in captured.out
    one_error_line(captured, "1 images failed", "broken.png", "run the command again")


def test_ray_extracts_what_the_local_engine_does(tmp_path: Path, data_dir: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    ray = pytest.importorskip("ray")
    folder = photos_with_a_broken_one(tmp_path, data_dir)
    local, on_ray = tmp_path / "local.h5", tmp_path / "ray.h5"
    extract_to_h5(folder, local, **SIFT)  # type: ignore[arg-type]
    assert not ray.is_initialized()
    assert main(["extract", str(folder), "--features", "sift", "--nfeatures", "200", "--max-size", "200",
                 "--engine", "ray", "--workers", "2", "--out", str(on_ray), "--quiet"]) == 1
    assert not ray.is_initialized()  # the local cluster the command started is gone
    captured = capsys.readouterr()
    assert "3 images extracted, 0 already there" in captured.out
    one_error_line(captured, "broken.png")
    assert_same_features(local, on_ray, ["a.png", "b.jpg", "sub/c.png"])


class InterruptedItems(dict):  # type: ignore[type-arg]
    """A record's datasets whose writing is interrupted (Ctrl-C) after the first dataset."""

    def items(self) -> Any:
        first = next(iter(super().items()))
        yield first
        raise KeyboardInterrupt


def test_an_interrupted_ray_run_leaves_no_partial_group_and_resumes(tmp_path: Path, data_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray")
    h5py = pytest.importorskip("h5py")
    folder = make_image_folder(tmp_path, data_dir)
    out, local = tmp_path / "ray.h5", tmp_path / "local.h5"
    write_record, calls = h5files.write_record, []

    def interrupted_second(store: Any, name: str, record: h5files.Record) -> None:
        calls.append(name)
        if len(calls) == 2:
            record = h5files.Record(InterruptedItems(record.datasets), record.attrs)
        write_record(store, name, record)

    monkeypatch.setattr(h5files, "write_record", interrupted_second)
    with pytest.raises(KeyboardInterrupt):
        extract_to_h5(folder, out, engine="ray", workers=2, **SIFT)  # type: ignore[arg-type]
    assert not ray.is_initialized()
    with h5py.File(out, "r") as store:
        groups = [name for name in ("a.png", "b.jpg", "sub/c.png") if name in store]
        assert groups == [calls[0]]  # the first image whole, the interrupted one not at all
        assert all(dataset in store[calls[0]] for dataset in DATASETS)
    monkeypatch.setattr(h5files, "write_record", write_record)
    summary = extract_to_h5(folder, out, engine="ray", workers=2, **SIFT)  # type: ignore[arg-type]
    assert summary == (2, 1, {})
    extract_to_h5(folder, local, **SIFT)  # type: ignore[arg-type]
    assert_same_features(local, out, ["a.png", "b.jpg", "sub/c.png"])


def test_engine_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for kind, workers, address, words in (("spark", 1, None, "accepted: local, ray"),
                                          ("local", 0, None, "integer >= 1"),
                                          ("local", 2, "auto", "for --engine ray")):
        with pytest.raises(cvdeep.Error, match=words):
            Engine(kind, workers, address)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(cvdeep.Error, match=r"cvdeep\[ray\]"):
        import_ray()

