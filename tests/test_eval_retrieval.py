"""The retrieval benchmark (``cvdeep.eval.retrieval``): its metrics on hand-made rankings and a run on
three sequences of the shared data (the full run, every sequence, is done outside the tests)."""
from __future__ import annotations

import json

import pytest

import cvdeep
from cvdeep.eval import retrieval as bench

pytestmark = pytest.mark.filterwarnings("ignore::cvdeep.weights.NonCommercialWeightsWarning")


def test_average_precision_and_recall_on_hand_made_rankings():
    ranking = ["a", "x", "b", "y", "c", "z"]
    assert bench.average_precision(ranking, {"a", "b", "c"}) == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)
    assert bench.average_precision(["x", "a"], {"a", "never"}) == pytest.approx((1 / 2) / 2), "unranked counts 0"
    assert bench.average_precision(["a", "b", "x"], {"a", "b"}) == 1.0
    assert bench.average_precision(["x", "y", "a"], {"a"}) == pytest.approx(1 / 3)
    assert (bench.recall_at(ranking, {"b"}, 1), bench.recall_at(ranking, {"b"}, 5)) == (0.0, 1.0)
    assert bench.ranking_metrics(["x", "y", "z", "w", "v", "a"], {"a"}) == {"ap": pytest.approx(1 / 6), "r@1": 0.0,
                                                                            "r@5": 0.0}
    with pytest.raises(cvdeep.Error, match="without positives"):
        bench.average_precision(ranking, set())


def test_subset_run_with_sift_and_a_feature_without_weights(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CVDEEP_OFFLINE", "1")
    out = tmp_path / "retrieval.json"
    assert bench.main(["--features", "sift,delf[model=delf-gld]", "--root", str(data_dir),
                       "--sequences", "boat,bikes,v_wormhole", "--max-keypoints", "300", "--verify", "6",
                       "--out", str(out), "--quiet"]) == 0
    results = json.loads(out.read_text())
    assert [s["name"] for s in results["sequences"]] == ["v_wormhole", "bikes", "boat"]
    sift, delf = results["results"]
    assert "error" in delf and "delf" in delf["error"], "missing weights are reported, the run goes on"
    assert sift["images"] == 18 and len(sift["queries"]) == 18
    summary = sift["summary"]
    print(summary)
    for ranking in ("votes", "verified"):
        assert 0.0 <= summary[ranking]["mAP"] <= 1.0 and summary[ranking]["R@1"] <= summary[ranking]["R@5"]
    assert summary["verified"]["R@1"] == 1.0, "SIFT + homography finds a same-sequence image first for every query"
    assert summary["verified"]["mAP"] >= summary["votes"]["mAP"]
    assert summary["keypoints_per_image"] <= 300 and summary["describe_seconds_per_image"] > 0
    first = sift["queries"][0]
    assert first["query"] == "hpatches/v_wormhole/1" and all(t["image"] != first["query"] for t in first["top5"])
    table = out.with_suffix(".md").read_text()
    assert "| sift |" in table and "| delf[model=delf-gld] | error:" in table and "18 queries, 3 sequences" in table


def test_bad_options_exit_with_a_message(data_dir, capsys):
    with pytest.raises(SystemExit) as stop:
        bench.main(["--root", str(data_dir), "--sequences", "boat", "--quiet"])
    assert stop.value.code == 2 and "at least 2 sequences" in capsys.readouterr().err


def test_a_sequence_repeating_another_is_left_out(data_dir):
    """HPatches v_graffiti holds Oxford graf's images: the benchmark keeps one of them, so that a query
    never meets its own copy under another sequence's name."""
    from cvdeep.eval.datasets import load_dataset

    sequences = load_dataset("shared", data_dir, ["v_graffiti", "graf", "boat"])
    kept, dropped = bench.distinct_sequences(sequences)
    assert [s.name for s in kept] == ["v_graffiti", "boat"]
    assert dropped == {"oxford/graf": "hpatches/v_graffiti"}
