"""cvdeep.eval.patch_metrics on hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import cvdeep
from cvdeep.eval import patch_metrics
from cvdeep.eval.patch_metrics import fpr_at_recall, matching_map


def test_fpr_at_recall_hand_computed() -> None:
    distances = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    labels = [1, 0, 1, 1, 0, 0]
    # all 3 matching pairs: threshold 0.4, non-matching at or below it: 0.2 -> 1 of 3
    assert fpr_at_recall(distances, labels, recall=1.0) == pytest.approx(1 / 3)
    # 2 of 3 (k = ceil(0.5 * 3)): threshold 0.3 -> still 0.2 -> 1 of 3
    assert fpr_at_recall(distances, labels, recall=0.5) == pytest.approx(1 / 3)
    # 1 of 3: threshold 0.1 -> no false positive
    assert fpr_at_recall(distances, labels, recall=0.3) == 0.0


def test_fpr95_with_twenty_matching_pairs_and_a_tie() -> None:
    # 20 matching pairs at 0.01 .. 0.20: 95 % is 19 of them, threshold 0.19. Non-matching pairs at
    # 0.185, 0.19 (a tie with the threshold: accepted, so a false positive), 0.5 and 0.6 -> 2 of 4.
    matching = np.arange(1, 21) / 100.0
    other = np.array([0.185, 0.19, 0.5, 0.6])
    distances = np.concatenate([other, matching])
    labels = np.concatenate([np.zeros(4, bool), np.ones(20, bool)])
    assert fpr_at_recall(distances, labels) == pytest.approx(0.5)
    assert fpr_at_recall(torch.from_numpy(distances).float(), torch.from_numpy(labels)) == pytest.approx(0.5)
    # the order of the pairs does not matter
    order = np.random.default_rng(0).permutation(24)
    assert fpr_at_recall(distances[order], labels[order]) == pytest.approx(0.5)


def sort_based_fpr95(distances: np.ndarray, labels: np.ndarray) -> float:
    """Walk the pairs by increasing distance until 95 % of the matching ones are in; count the others."""
    needed = 0.95 * labels.sum()
    taken = false_positives = 0
    for index in np.argsort(distances):
        if labels[index]:
            taken += 1
            if taken >= needed:
                break
        else:
            false_positives += 1
    return false_positives / (len(labels) - labels.sum())


@pytest.mark.parametrize("seed", range(3))
def test_fpr95_agrees_with_the_sort_based_rule_without_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.random(500) < 0.3
    distances = np.where(labels, rng.normal(0.6, 0.2, 500), rng.normal(1.2, 0.2, 500))
    assert fpr_at_recall(distances, labels) == pytest.approx(sort_based_fpr95(distances, labels))


def test_fpr_at_recall_rejects_bad_input() -> None:
    cases = [
        (([0.1, 0.2], [1, 1]), "non-matching"),
        (([0.1, 0.2], [0, 0]), "matching"),
        (([0.1, 0.2, 0.3], [1, 0]), "shapes"),
        (([[0.1, 0.2]], [[1, 0]]), "1-D"),
        (([0.1, 0.2], [1, 2]), "labels"),
        (([0.1, float("nan")], [1, 0]), "finite"),
    ]
    for (distances, labels), message in cases:
        with pytest.raises(cvdeep.Error, match=message):
            fpr_at_recall(distances, labels)
    for recall in (0.0, 1.5, -0.1, True):
        with pytest.raises(cvdeep.Error, match="recall"):
            fpr_at_recall([0.1, 0.2], [1, 0], recall=recall)


def test_matching_map_hand_computed() -> None:
    anchor = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    candidates = np.array([[0.1, 0.0], [2.0, 0.0], [0.0, 0.2], [0.9, 0.0]])  # the last row is a distractor
    # squared distances, query 0: .01 (correct), 4, .04, .81 -> rank 1
    # query 1: .81, 1 (correct), 1.04, .01 -> rank 3;  query 2: 1.01, 5, .64 (correct), 1.81 -> rank 1
    value, per_query = matching_map(anchor, candidates, return_per_query=True)
    assert per_query.tolist() == pytest.approx([1.0, 1 / 3, 1.0])
    assert value == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert matching_map(torch.from_numpy(anchor), torch.from_numpy(candidates)) == pytest.approx(value)


def test_matching_map_ties_count_against_the_query() -> None:
    # the correct candidate (1, 0) and two wrong ones are all at distance 1: rank 3
    assert matching_map([[0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]) == pytest.approx(1 / 3)
    assert matching_map(np.eye(4), np.eye(4)) == 1.0


def test_matching_map_chunks_give_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    anchor = rng.normal(size=(40, 8))
    candidates = np.concatenate([anchor + rng.normal(scale=0.8, size=(40, 8)), rng.normal(size=(15, 8))])
    whole, per_query = matching_map(anchor, candidates, return_per_query=True)
    monkeypatch.setattr(patch_metrics, "_CHUNK_ELEMENTS", 8 * 55 * 3)  # three queries per chunk
    assert matching_map(anchor, candidates) == whole
    assert 0.0 < whole < 1.0
    # reference: the rank by sorting, one query at a time
    ranks = []
    for i, query in enumerate(anchor):
        distance = np.linalg.norm(candidates - query, axis=1)
        ranks.append(1 + int(np.sum(distance < distance[i])))
    assert per_query == pytest.approx(1.0 / np.array(ranks))


def test_matching_map_rejects_bad_input() -> None:
    with pytest.raises(cvdeep.Error, match="M >= N"):
        matching_map(np.zeros((3, 2)), np.zeros((2, 2)))
    with pytest.raises(cvdeep.Error, match="one D"):
        matching_map(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(cvdeep.Error, match="2-D"):
        matching_map(np.zeros(2), np.zeros((2, 2)))
    with pytest.raises(cvdeep.Error, match="N >= 1"):
        matching_map(np.zeros((0, 2)), np.zeros((2, 2)))
    with pytest.raises(cvdeep.Error, match="finite"):
        matching_map([[np.inf, 0.0]], [[0.0, 0.0]])
