"""cvdeep.train.losses: hand-computed values, gradient directions, invariances, mining,
SDGM's running statistics, bf16 autocast, errors, and a short learning test per loss.

The tiny batches put unit vectors on the circle (D = 2) at whole-degree angles, so every
distance is a chord 2 sin(angle / 2) and every expected value below is written out from
the paper's formula over explicitly listed angles, not from the implementation.
"""
from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F

import cvdeep
from cvdeep.eval.patch_metrics import fpr_at_recall
from cvdeep.train import losses
from cvdeep.train.losses import (
    LOSSES,
    SDGMLoss,
    hardest_triplet_margin_loss,
    hybrid_similarity_loss,
    make_loss,
    mined_hinge_loss,
    sos_regularizer,
    sosnet_loss,
)

# The batch used by most value tests: anchors and positives at these angles (degrees).
ANCHOR_DEG = (0.0, 100.0, 220.0)
POSITIVE_DEG = (20.0, 130.0, 200.0)
# Included angles, anchor row i vs positive column j:   within anchors:   within positives:
#   [[ 20, 130, 160],                                    a0-a1 100          p0-p1 110
#    [ 80,  30, 100],                                    a0-a2 140          p0-p2 180
#    [160,  90,  20]]                                    a1-a2 120          p1-p2  70


def circle(degrees, dtype=torch.float64, requires_grad: bool = False) -> torch.Tensor:
    radians = torch.tensor([math.radians(d) for d in degrees], dtype=dtype)
    return torch.stack([radians.cos(), radians.sin()], dim=1).requires_grad_(requires_grad)


def chord(degrees: float) -> float:
    return 2.0 * math.sin(math.radians(degrees) / 2.0)


def hardnet_distance(degrees: float) -> float:
    """loss_HardNet's distance: sqrt(chord^2 + 1e-6) + 1e-8."""
    return math.sqrt(chord(degrees) ** 2 + 1e-6) + 1e-8


def tian_distance(degrees: float) -> float:
    """HyNet/SOSNet's distance: sqrt(|2 (1 - cos)| + 1e-6)."""
    return math.sqrt(abs(2.0 * (1.0 - math.cos(math.radians(degrees)))) + 1e-6)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return circle(ANCHOR_DEG, requires_grad=True), circle(POSITIVE_DEG, requires_grad=True)


def random_unit(rows: int, dims: int, seed: int, noise: float = 0.5,
                dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    anchor = F.normalize(torch.randn(rows, dims, generator=generator, dtype=dtype), dim=1)
    positive = F.normalize(anchor + noise * torch.randn(rows, dims, generator=generator, dtype=dtype), dim=1)
    return anchor, positive


def directional(grad: torch.Tensor, row: int, towards: torch.Tensor, origin: torch.Tensor) -> float:
    """Derivative of the loss when descriptor ``row`` moves from ``origin`` towards ``towards``."""
    return float(grad[row] @ (towards - origin))


# ---------------------------------------------------------------------------------------------------
# HardNet
# ---------------------------------------------------------------------------------------------------

def test_hardest_triplet_value_with_and_without_anchor_swap() -> None:
    # Positive angles 20, 30, 20. Hardest negative per row (closest non-matching positive):
    # 130, 80, 90; per column (closest non-matching anchor): 80, 90, 100.
    # anchor swap: min of both -> 80, 80, 90; without: rows only -> 130, 80, 90.
    def expected(negatives):
        return sum(max(0.0, 1.0 + hardnet_distance(p) - hardnet_distance(n))
                   for p, n in zip((20, 30, 20), negatives)) / 3.0

    anchor, positive = batch()
    swapped = hardest_triplet_margin_loss(anchor, positive)
    assert swapped.item() == pytest.approx(expected((80, 80, 90)), abs=1e-5)
    assert swapped.item() == pytest.approx(0.0979285448, abs=1e-5)  # (0.0617222 + 0.2320634 + 0) / 3
    plain = hardest_triplet_margin_loss(anchor, positive, anchor_swap=False)
    assert plain.item() == pytest.approx(expected((130, 80, 90)), abs=1e-5)
    assert plain.item() == pytest.approx(0.0773544826, abs=1e-5)
    assert hardest_triplet_margin_loss(anchor, positive, margin=0.5).item() == 0.0  # every triplet satisfied


def test_hardest_triplet_gradient_is_the_analytic_one_and_points_the_right_way() -> None:
    anchor, positive = batch()
    hardest_triplet_margin_loss(anchor, positive).backward()
    a, p = anchor.detach(), positive.detach()
    # Active triplets: pair 0 (negative = anchor 1 vs positive 0, the column minimum) and
    # pair 1 (negative = anchor 1 vs positive 0, the row minimum). Pair 2 is inactive.
    # d/dx ||x - y|| = (x - y) / ||x - y||; each term carries 1/B.
    def unit(x, y):
        return (x - y) / math.sqrt(float((x - y) @ (x - y)) + 1e-6)

    grad_a = torch.zeros_like(a)
    grad_p = torch.zeros_like(p)
    for i in (0, 1):  # + d(a_i, p_i)
        grad_a[i] += unit(a[i], p[i]) / 3
        grad_p[i] += unit(p[i], a[i]) / 3
    for _ in (0, 1):  # - d(a_1, p_0), once per triplet
        grad_a[1] -= unit(a[1], p[0]) / 3
        grad_p[0] -= unit(p[0], a[1]) / 3
    assert torch.allclose(anchor.grad, grad_a, atol=1e-6)
    assert torch.allclose(positive.grad, grad_p, atol=1e-6)
    # Pulled together: moving anchor 1 towards its positive lowers the loss ...
    assert directional(anchor.grad, 1, p[1], a[1]) < 0
    # ... pushed apart: moving anchor 1 towards its hardest negative (positive 0) raises it.
    assert directional(anchor.grad, 1, p[0], a[1]) > 0
    assert torch.count_nonzero(anchor.grad[2]) == 0 and torch.count_nonzero(positive.grad[2]) == 0


def test_hardest_triplet_skips_near_duplicates() -> None:
    # A fourth pair whose positive is anchor 0 turned by 0.2 degrees: distance 0.0035 < 0.008, so
    # it is the same point as anchor 0 and must not be anchor 0's hardest negative.
    anchor = circle(ANCHOR_DEG + (300.0,))
    positive = circle(POSITIVE_DEG + (0.2,))
    value = hardest_triplet_margin_loss(anchor, positive).item()
    # Included angles with the new row/column: a0-p3 0.2 (skipped), a1-p3 99.8, a2-p3 140.2,
    # a3-p0 80, a3-p1 170, a3-p2 100, pair 3 itself 60.2.
    # Negatives: pair 0: row {130, 160} col {80, 160, 80} -> 80;  pair 1: row {80, 100, 99.8}, col
    # {130, 90, 170} -> 80;  pair 2: row {160, 90, 140.2}, col {160, 100, 100} -> 90;  pair 3: row
    # {80, 170, 100}, col {99.8, 140.2} (a0-p3 skipped) -> 80.
    expected = sum(max(0.0, 1.0 + hardnet_distance(p) - hardnet_distance(n))
                   for p, n in zip((20, 30, 20, 60.2), (80, 80, 90, 80))) / 4.0
    assert value == pytest.approx(expected, abs=1e-5)
    # had the duplicate been taken as pair 0's negative, pair 0 alone would cost 1 + d(20) - d(0.2) / 4
    assert value < (1.0 + hardnet_distance(20) - hardnet_distance(0.2)) / 4


def test_hardest_triplet_invariances() -> None:
    anchor, positive = random_unit(12, 8, seed=1)
    value = hardest_triplet_margin_loss(anchor, positive)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(2))
    rotation = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64))[0]
    assert hardest_triplet_margin_loss(anchor[order], positive[order]).item() == pytest.approx(value.item(), abs=1e-9)
    assert hardest_triplet_margin_loss(anchor @ rotation, positive @ rotation).item() == pytest.approx(
        value.item(), abs=1e-7)
    # with anchor swap the roles of anchor and positive are symmetric
    assert hardest_triplet_margin_loss(positive, anchor).item() == pytest.approx(value.item(), abs=1e-9)


# ---------------------------------------------------------------------------------------------------
# DeepDesc
# ---------------------------------------------------------------------------------------------------

def deepdesc_distance(degrees: float) -> float:
    return math.sqrt(chord(degrees) ** 2 + 1e-6)


def test_mined_hinge_value_with_and_without_mining() -> None:
    anchor, positive = batch()
    # Positive costs: ||d1 - d2|| of 20, 30, 20 degrees. With C = 1.5 the six non-matching pairs
    # (130, 160, 80, 100, 160, 90 degrees) cost max(0, 1.5 - chord): only 80 and 90 are active.
    positive_costs = [deepdesc_distance(a) for a in (20, 30, 20)]
    negative_costs = [max(0.0, 1.5 - deepdesc_distance(a)) for a in (130, 160, 80, 100, 160, 90)]
    no_mining = mined_hinge_loss(anchor, positive, margin=1.5, positive_mining_ratio=1, negative_mining_ratio=1,
                                 negatives="all")
    assert no_mining.item() == pytest.approx(sum(positive_costs + negative_costs) / 9, abs=1e-5)
    # r = 3: keep floor(3 / 3) = 1 positive (the 30-degree pair) and floor(6 / 3) = 2 negatives (80, 90).
    mined = mined_hinge_loss(anchor, positive, margin=1.5, positive_mining_ratio=3, negative_mining_ratio=3,
                             negatives="all")
    expected = (deepdesc_distance(30) + (1.5 - deepdesc_distance(80)) + (1.5 - deepdesc_distance(90))) / 3
    assert mined.item() == pytest.approx(expected, abs=1e-5)
    assert mined.item() == pytest.approx(0.2726164, abs=1e-5)


def test_mined_hinge_random_negatives_are_non_matching_pairs() -> None:
    # Anchors e_0..e_5 and positives e_6..e_11: every non-matching pair is at distance sqrt(2),
    # every matching pair too, so whichever negatives are drawn the loss is known.
    eye = torch.eye(12, dtype=torch.float64)
    anchor, positive = eye[:6], eye[6:]
    for seed in range(5):
        value = mined_hinge_loss(anchor, positive, margin=1.5, positive_mining_ratio=1, negative_mining_ratio=1,
                                 generator=torch.Generator().manual_seed(seed))
        assert value.item() == pytest.approx((math.sqrt(2 + 1e-6) + (1.5 - math.sqrt(2 + 1e-6))) / 2, abs=1e-9)
    # A matching pair drawn as a "negative" would cost 1.5 - 0.001 here; none is.
    same = torch.eye(6, dtype=torch.float64)
    value = mined_hinge_loss(same, same.clone(), margin=1.5, positive_mining_ratio=1, negative_mining_ratio=1,
                             generator=torch.Generator().manual_seed(0))
    assert value.item() == pytest.approx((1e-3 + (1.5 - math.sqrt(2 + 1e-6))) / 2, abs=1e-9)


@pytest.mark.parametrize("negatives", ["all", "random"])
def test_mined_hinge_only_the_hardest_fraction_gets_gradient(negatives: str) -> None:
    anchor, positive = random_unit(16, 6, seed=4, noise=0.8)
    anchor.requires_grad_(True)
    positive.requires_grad_(True)
    ratio_p, ratio_n = 4.0, 5.0
    loss = mined_hinge_loss(anchor, positive, margin=1.4, positive_mining_ratio=ratio_p,
                            negative_mining_ratio=ratio_n, negatives=negatives,
                            generator=torch.Generator().manual_seed(9))
    loss.backward()
    # Reference: recompute every pair's cost directly, keep the top floor(s / r) by hand and
    # differentiate only those; the gradients must agree exactly.
    a = anchor.detach().clone().requires_grad_(True)
    p = positive.detach().clone().requires_grad_(True)
    rows = list(range(16))
    if negatives == "all":
        pairs = [(i, j) for i in rows for j in rows if i != j]
    else:
        offsets = torch.randint(1, 16, (16,), generator=torch.Generator().manual_seed(9))
        pairs = [(i, (i + int(offsets[i])) % 16) for i in rows]
        assert all(i != j for i, j in pairs)
    positive_costs = [torch.sqrt(((a[i] - p[i]) ** 2).sum() + 1e-6) for i in rows]
    negative_costs = [torch.clamp(1.4 - torch.sqrt(((a[i] - p[j]) ** 2).sum() + 1e-6), min=0) for i, j in pairs]
    keep_p, keep_n = int(16 // ratio_p), int(len(pairs) // ratio_n)
    kept_p = sorted(positive_costs, key=lambda c: -c.item())[:keep_p]
    kept_n = sorted(negative_costs, key=lambda c: -c.item())[:keep_n]
    reference = torch.stack(kept_p + kept_n).mean()
    assert loss.item() == pytest.approx(reference.item(), abs=1e-12)
    reference.backward()
    assert torch.allclose(anchor.grad, a.grad, atol=1e-12)
    assert torch.allclose(positive.grad, p.grad, atol=1e-12)


def test_mined_hinge_unmined_rows_have_exactly_zero_gradient() -> None:
    # Orthonormal anchors, positives turned out of plane by different angles: non-matching pairs
    # are all sqrt(2) apart (> C = 1, no negative cost), matching pairs at 10, 20, ..., 80 degrees.
    eye = torch.eye(16, dtype=torch.float64)
    angles = torch.tensor([math.radians(10.0 * (k + 1)) for k in range(8)], dtype=torch.float64)
    anchor = eye[:8].clone().requires_grad_(True)
    positive = (angles.cos()[:, None] * eye[:8] + angles.sin()[:, None] * eye[8:]).requires_grad_(True)
    loss = mined_hinge_loss(anchor, positive, margin=1.0, positive_mining_ratio=2, negative_mining_ratio=2,
                            negatives="all")
    loss.backward()
    # Half of the 8 positives are kept: the four widest (50..80 degrees, rows 4..7).
    moved = anchor.grad.abs().sum(dim=1) + positive.grad.abs().sum(dim=1)
    assert torch.all(moved[:4] == 0)
    assert torch.all(moved[4:] > 0)
    for row in range(4, 8):  # pulled together
        assert directional(anchor.grad, row, positive.detach()[row], anchor.detach()[row]) < 0


def test_mined_hinge_pushes_the_kept_negative_apart() -> None:
    anchor, positive = batch()
    mined_hinge_loss(anchor, positive, margin=1.5, positive_mining_ratio=3, negative_mining_ratio=6,
                     negatives="all").backward()
    # kept: the 30-degree positive (pair 1) and the single hardest negative, anchor 1 vs positive 0
    a, p = anchor.detach(), positive.detach()
    assert directional(positive.grad, 0, a[1], p[0]) > 0
    assert directional(anchor.grad, 1, p[1], a[1]) < 0
    assert torch.count_nonzero(anchor.grad[2]) == 0 and torch.count_nonzero(positive.grad[2]) == 0


# ---------------------------------------------------------------------------------------------------
# SOSNet
# ---------------------------------------------------------------------------------------------------

def test_sos_regularizer_value() -> None:
    # knn = 8 >= B - 1: every other point is a neighbour. Within-anchor vs within-positive angles:
    # (0,1) 100 vs 110, (0,2) 140 vs 180, (1,2) 120 vs 70.
    anchor, positive = batch()
    t = tian_distance
    rows = [math.sqrt((t(100) - t(110)) ** 2 + (t(140) - t(180)) ** 2 + 1e-6),
            math.sqrt((t(100) - t(110)) ** 2 + (t(120) - t(70)) ** 2 + 1e-6),
            math.sqrt((t(140) - t(180)) ** 2 + (t(120) - t(70)) ** 2 + 1e-6)]
    assert sos_regularizer(anchor, positive).item() == pytest.approx(sum(rows) / 3, abs=1e-5)
    assert sos_regularizer(anchor, positive).item() == pytest.approx(0.4507963, abs=1e-5)


def test_sosnet_loss_value() -> None:
    # First order: squared hinge, margin 1, hardest of four negative sets per pair.
    # pair 0: other anchors {100, 140}, other positives {110, 180}, row {130, 160}, column {80, 160} -> 80
    # pair 1: {100, 120}, {110, 70}, {80, 100}, {130, 90} -> 70;  pair 2: {140, 120}, {180, 70},
    # {160, 90}, {160, 100} -> 70.
    anchor, positive = batch()
    t = tian_distance
    first = sum(max(0.0, 1.0 + t(p) - t(n)) ** 2 for p, n in zip((20, 30, 20), (80, 70, 70))) / 3
    expected = first + sos_regularizer(anchor, positive).item()
    assert sosnet_loss(anchor, positive).item() == pytest.approx(expected, abs=1e-5)
    assert sosnet_loss(anchor, positive).item() == pytest.approx(0.5111720, abs=1e-5)


def brute_force_sos(anchor: torch.Tensor, positive: torch.Tensor, knn: int) -> float:
    """The documented neighbour rule written out with Python loops."""
    def dist(x, y):
        return math.sqrt(abs(2 * (1 - float(x @ y))) + 1e-6)

    size = len(anchor)
    groups = {"aa": (anchor, anchor), "pp": (positive, positive), "ap": (anchor, positive)}
    table = {key: [[dist(x[i], y[j]) for j in range(size)] for i in range(size)] for key, (x, y) in groups.items()}

    def rank_key(value: float, same: bool) -> float:
        value += 2.0 if same else 0.0
        return value + (2.0 if value <= 8e-3 else 0.0)

    edges = set()
    for i in range(size):
        lists = [sorted(range(size), key=lambda j: rank_key(table["aa"][i][j], i == j)),   # anchors near a_i
                 sorted(range(size), key=lambda j: rank_key(table["pp"][j][i], i == j)),   # positives near p_i
                 sorted(range(size), key=lambda j: rank_key(table["ap"][i][j], i == j)),   # positives near a_i
                 sorted(range(size), key=lambda j: rank_key(table["ap"][j][i], i == j))]   # anchors near p_i
        for ordered in lists:
            for j in ordered[:knn]:
                edges.update({(i, j), (j, i)})
    total = 0.0
    for i in range(size):
        total += math.sqrt(sum((table["aa"][i][j] - table["pp"][i][j]) ** 2
                               for j in range(size) if j != i and (i, j) in edges) + 1e-6)
    return total / size


@pytest.mark.parametrize("knn", [1, 2, 5])
def test_sos_neighbours_follow_the_documented_rule(knn: int) -> None:
    anchor, positive = random_unit(10, 5, seed=5, noise=0.6)
    assert sos_regularizer(anchor, positive, knn=knn).item() == pytest.approx(
        brute_force_sos(anchor, positive, knn), abs=1e-9)


def test_sos_is_zero_for_an_isometry_and_invariant_to_order() -> None:
    anchor, _ = random_unit(9, 6, seed=6)
    rotation = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64))[0]
    # positives = rotated anchors: every within-set distance is preserved, only the 1e-6 is left
    assert sos_regularizer(anchor, anchor @ rotation).item() == pytest.approx(1e-3, abs=1e-6)
    anchor, positive = random_unit(9, 6, seed=8)
    order = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    for loss in (sos_regularizer, sosnet_loss):
        value = loss(anchor, positive).item()
        assert value > 2e-3
        assert loss(anchor[order], positive[order]).item() == pytest.approx(value, abs=1e-9)
        assert loss(positive, anchor).item() == pytest.approx(value, abs=1e-9)
        assert loss(anchor @ rotation, positive @ rotation).item() == pytest.approx(value, abs=1e-7)


def test_sos_and_sosnet_gradient_directions() -> None:
    # Positives are the anchors turned by 10 degrees (an isometry) except p2, turned by 30:
    # within-positive angles p0-p2 120 and p1-p2 140 against a0-a2 140 and a1-a2 120.
    anchor = circle(ANCHOR_DEG, requires_grad=True)
    positive = circle((10.0, 110.0, 250.0), requires_grad=True)
    sos_regularizer(anchor, positive).backward()
    # turning p2 back towards 230 degrees restores the anchors' geometry: the loss falls
    assert directional(positive.grad, 2, circle((230.0,))[0], positive.detach()[2]) < 0
    # and p0, p1 (no mismatch between them) are pulled/pushed only through their distances to p2:
    # moving p0 towards p2 shrinks p0-p2 (120, already too short against 140) -- the loss rises
    assert directional(positive.grad, 0, positive.detach()[2], positive.detach()[0]) > 0
    # First-order part: positives = anchors turned by 25 degrees, so the second-order term is at its
    # minimum (no gradient) and the violated triplets pull their positive pairs together. Pairs 0
    # and 1 are violated (hardest negatives 75 degrees: a1-p0); pair 2's hardest negative is 95
    # degrees (a2-p1): 1 + chord(25) - chord(95) < 0, satisfied.
    anchor = circle(ANCHOR_DEG, requires_grad=True)
    positive = circle((25.0, 125.0, 245.0), requires_grad=True)
    sosnet_loss(anchor, positive).backward()
    a, p = anchor.detach(), positive.detach()
    for row in (0, 1):
        assert directional(anchor.grad, row, p[row], a[row]) < 0
        assert directional(positive.grad, row, a[row], p[row]) < 0
    assert anchor.grad[2].abs().max() < 1e-9


# ---------------------------------------------------------------------------------------------------
# HyNet
# ---------------------------------------------------------------------------------------------------

HY_ANCHOR_DEG = (0.0, 120.0, 240.0)
HY_POSITIVE_DEG = (50.0, 175.0, 290.0)
# Positive angles 50, 55, 50. Hardest negatives (four sets): pair 0 -> 70 (a1-p0 and a0-p2),
# pair 1 -> 65 (a2-p1), pair 2 -> 65 (a2-p1).


def test_hybrid_similarity_value_and_norm_regulariser() -> None:
    anchor, positive = circle(HY_ANCHOR_DEG), circle(HY_POSITIVE_DEG)

    def hybrid(degrees):  # d + alpha d^2 / 2 with alpha = 2
        d = tian_distance(degrees)
        return d + d * d

    triplet = sum(max(0.0, 1.2 + hybrid(p) - hybrid(n)) for p, n in zip((50, 55, 50), (70, 65, 65))) / 3
    assert hybrid_similarity_loss(anchor, positive).item() == pytest.approx(triplet, abs=1e-5)
    assert triplet == pytest.approx(0.5246098, abs=1e-6)
    # Raw descriptors with norms (1, 2, 3) and (1.5, 2, 2): gamma * mean((|ra| - |rp|)^2)
    raw_anchor = anchor * torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    raw_positive = positive * torch.tensor([[1.5], [2.0], [2.0]], dtype=torch.float64)
    norms = [(math.sqrt(x * x + 1e-6), math.sqrt(y * y + 1e-6)) for x, y in ((1, 1.5), (2, 2), (3, 2))]
    regulariser = sum((x - y) ** 2 for x, y in norms) / 3
    value = hybrid_similarity_loss(anchor, positive, raw_anchor=raw_anchor, raw_positive=raw_positive)
    assert value.item() == pytest.approx(triplet + 0.1 * regulariser, abs=1e-5)
    # unit "raw" descriptors: the regulariser is zero
    assert hybrid_similarity_loss(anchor, positive, raw_anchor=anchor, raw_positive=positive).item() == \
        pytest.approx(triplet, abs=1e-5)


def test_hybrid_similarity_gradients() -> None:
    anchor, positive = circle(HY_ANCHOR_DEG, requires_grad=True), circle(HY_POSITIVE_DEG, requires_grad=True)
    raw_anchor = (anchor.detach() * 3.0).requires_grad_(True)
    raw_positive = (positive.detach() * 2.0).requires_grad_(True)
    hybrid_similarity_loss(anchor, positive, raw_anchor=raw_anchor, raw_positive=raw_positive).backward()
    a, p = anchor.detach(), positive.detach()
    assert directional(anchor.grad, 1, p[1], a[1]) < 0    # pair 1 pulled together
    assert directional(positive.grad, 1, a[2], p[1]) > 0  # its hardest negative a2-p1 pushed apart
    assert directional(anchor.grad, 2, p[1], a[2]) > 0
    # |raw anchor| = 3 > |raw positive| = 2: growing the raw anchor raises the loss, growing the raw positive lowers it
    assert directional(raw_anchor.grad, 0, 2 * raw_anchor.detach()[0], raw_anchor.detach()[0]) > 0
    assert directional(raw_positive.grad, 0, 2 * raw_positive.detach()[0], raw_positive.detach()[0]) < 0


def included(x: float, y: float) -> float:
    turn = abs(x - y) % 360.0
    return min(turn, 360.0 - turn)


def four_set_negatives(anchor_deg, positive_deg, skip_duplicates: bool = True) -> list[float]:
    """Hardest negative angle per pair over the four sets, skipping distances <= 8e-3 (written out)."""
    result = []
    for i in range(len(anchor_deg)):
        candidates = []
        for j in range(len(anchor_deg)):
            if j != i:
                candidates += [included(anchor_deg[i], anchor_deg[j]), included(positive_deg[i], positive_deg[j]),
                               included(anchor_deg[i], positive_deg[j]), included(anchor_deg[j], positive_deg[i])]
        if skip_duplicates:
            candidates = [c for c in candidates if tian_distance(c) > 8e-3]
        result.append(min(candidates))
    return result


def test_hybrid_similarity_and_sosnet_skip_near_duplicates() -> None:
    # A fourth pair whose anchor is anchor 0 turned by 0.2 degrees: a0-a3 is 0.0035 apart (<= 8e-3),
    # the same point, and must not be either pair's hardest negative.
    anchor_deg, positive_deg = HY_ANCHOR_DEG + (0.2,), HY_POSITIVE_DEG + (300.0,)
    anchor, positive = circle(anchor_deg), circle(positive_deg)
    negatives = four_set_negatives(anchor_deg, positive_deg)
    # pair 0: a3-p0 49.8; pair 3: p2-p3 10 (neither is the 0.2-degree a0-a3)
    assert negatives[0] == pytest.approx(49.8) and negatives[3] == pytest.approx(10.0)
    assert four_set_negatives(anchor_deg, positive_deg, skip_duplicates=False)[0] == pytest.approx(0.2)
    positives = [included(a, p) for a, p in zip(anchor_deg, positive_deg)]

    def hybrid(degrees):
        d = tian_distance(degrees)
        return d + d * d

    expected = sum(max(0.0, 1.2 + hybrid(p) - hybrid(n)) for p, n in zip(positives, negatives)) / 4
    assert hybrid_similarity_loss(anchor, positive).item() == pytest.approx(expected, abs=1e-5)
    first = sum(max(0.0, 1.0 + tian_distance(p) - tian_distance(n)) ** 2 for p, n in zip(positives, negatives)) / 4
    assert sosnet_loss(anchor, positive).item() == pytest.approx(first + sos_regularizer(anchor, positive).item(),
                                                                 abs=1e-5)


def test_hybrid_similarity_invariances() -> None:
    anchor, positive = random_unit(10, 6, seed=10, noise=0.9)
    value = hybrid_similarity_loss(anchor, positive).item()
    assert value > 0
    order = torch.randperm(10, generator=torch.Generator().manual_seed(4))
    rotation = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64))[0]
    assert hybrid_similarity_loss(anchor[order], positive[order]).item() == pytest.approx(value, abs=1e-9)
    assert hybrid_similarity_loss(positive, anchor).item() == pytest.approx(value, abs=1e-9)
    assert hybrid_similarity_loss(anchor @ rotation, positive @ rotation).item() == pytest.approx(value, abs=1e-7)


# ---------------------------------------------------------------------------------------------------
# SDGM
# ---------------------------------------------------------------------------------------------------

PHI_INV_06 = statistics.NormalDist().inv_cdf(0.6)


def sample_std(values) -> float:
    return statistics.stdev(values)


def sdgm_first_call(progress: float) -> dict[str, float]:
    """The first forward call on ``batch()`` worked out from the official formulas.

    Positive angles 20, 30, 20 degrees. Negative angle of point i: the smallest included angle
    over the four pairings with each other point j (point pairs (0,1): min 80 -- a1-p0;
    (0,2): 140; (1,2): 70 -- p1-p2): 80, 70, 70 degrees. No pairing is below the 0.6 rad
    (34.4 degree) duplicate angle.
    """
    pos = [math.radians(x) for x in (20, 30, 20)]
    neg = [math.radians(x) for x in (80, 70, 70)]
    diff = [p - n for p, n in zip(pos, neg)]
    stats = {"pos_angle_mean": statistics.mean(pos), "pos_angle_std": sample_std(pos),
             "neg_angle_mean": statistics.mean(neg), "neg_angle_std": sample_std(neg),
             "diff_angle_mean": -1.0,  # the first update leaves the initial -1 in place
             "diff_angle_std": sample_std(diff)}
    cutoff = stats["diff_angle_mean"] + stats["diff_angle_std"] * PHI_INV_06
    if progress < 0.1:
        kept, focus_p, focus_n = [1.0] * 3, [1.0] * 3, [1.0] * 3
    else:
        kept = [1.0 if d >= cutoff else 0.0 for d in diff]
        width_p = math.pi / 6 + stats["pos_angle_std"]
        width_n = math.pi / 6 + stats["neg_angle_std"]
        focus_p = [math.exp(-(x - stats["pos_angle_mean"]) ** 2 / (2 * width_p ** 2)) for x in pos]
        focus_n = [math.exp(-(x - stats["neg_angle_mean"]) ** 2 / (2 * width_n ** 2)) for x in neg]
    weight_p = [f * k for f, k in zip(focus_p, kept)]
    weight_n = [f * k for f, k in zip(focus_n, kept)]
    stats["pos_power"] = 0.999 * 10000 + 0.001 * sum(weight_p)
    stats["neg_power"] = 0.999 * 10000 + 0.001 * sum(weight_n)
    loss = (sum(0.9 * w * x for w, x in zip(weight_p, pos)) / stats["pos_power"]
            - sum(w * x for w, x in zip(weight_n, neg)) / stats["neg_power"])
    return {**stats, "loss": loss, "kept": kept, "cutoff": cutoff}


def test_sdgm_first_call_value_and_statistics() -> None:
    expected = sdgm_first_call(progress=0.5)
    # diff = -60, -40, -50 degrees; cutoff = -1 + std(diff) * Phi^-1(0.6) = -0.9558 rad cuts pair 0
    assert expected["kept"] == [0.0, 1.0, 1.0]
    loss = SDGMLoss()
    anchor, positive = batch()
    value = loss(anchor, positive, progress=0.5)
    assert value.item() == pytest.approx(expected["loss"], rel=1e-5, abs=1e-10)
    assert value.item() == pytest.approx(-1.6586e-4, rel=1e-3)
    stats = loss.statistics()
    for name in ("pos_angle_mean", "pos_angle_std", "neg_angle_mean", "neg_angle_std", "diff_angle_mean",
                 "diff_angle_std", "pos_power", "neg_power"):
        assert stats[name] == pytest.approx(expected[name], rel=1e-5), name
    assert stats["num_updates"] == 1
    assert stats["cutoff"] == pytest.approx(expected["cutoff"], rel=1e-5)
    assert stats["kept_fraction"] == pytest.approx(2 / 3)


def test_sdgm_warm_up_has_no_modulation() -> None:
    expected = sdgm_first_call(progress=0.05)
    anchor, positive = batch()
    value = SDGMLoss()(anchor, positive, progress=0.05)
    assert value.item() == pytest.approx(expected["loss"], rel=1e-5, abs=1e-10)
    # all weights 1: alpha * sum(theta_p) / P_p - sum(theta_n) / P_n with P = 0.999 * 1e4 + 0.001 * 3
    closed_form = (0.9 * math.radians(70) - math.radians(220)) / (0.999 * 10000 + 0.003)
    assert value.item() == pytest.approx(closed_form, rel=1e-5)


def test_sdgm_gradients_pull_push_and_cut_off() -> None:
    anchor, positive = batch()
    SDGMLoss()(anchor, positive, progress=0.5).backward()
    a, p = anchor.detach(), positive.detach()
    # pair 0 is beyond the probabilistic margin and is nobody's negative: exactly no gradient
    assert torch.count_nonzero(anchor.grad[0]) == 0 and torch.count_nonzero(positive.grad[0]) == 0
    assert directional(anchor.grad, 1, p[1], a[1]) < 0     # pair 1 pulled together
    assert directional(anchor.grad, 2, p[2], a[2]) < 0     # pair 2 pulled together
    # a1 is untouched by any negative: pairs 1 and 2 both take p1-p2 (70 degrees) as hardest negative,
    # so moving p1 towards p2 (closing the negative angle) raises the loss
    assert directional(positive.grad, 1, p[2], p[1]) > 0


def test_sdgm_running_statistics_after_two_updates() -> None:
    loss = SDGMLoss()
    anchor, positive = batch()
    loss(anchor, positive, progress=0.5)
    first = sdgm_first_call(progress=0.5)
    # second batch: anchors 0, 100, 220 again, positives 40, 150, 250 degrees
    positive2 = circle((40.0, 150.0, 250.0))
    second = loss(anchor.detach(), positive2, progress=0.5)
    pos = [math.radians(x) for x in (40, 50, 30)]
    # negatives: point pair (0,1): a0-p1 150, a1-p0 60, a0-a1 100, p0-p1 110 -> 60;
    # (0,2): a0-p2 110, a2-p0 180, a0-a2 140, p0-p2 150 -> 110; (1,2): a1-p2 150, a2-p1 70,
    # a1-a2 120, p1-p2 100 -> 70. Point 0: min(60, 110), point 1: min(60, 70), point 2: min(110, 70).
    neg = [math.radians(x) for x in (60, 60, 70)]
    diff = [x - y for x, y in zip(pos, neg)]
    m = 0.999
    mean_p = m * first["pos_angle_mean"] + (1 - m) * statistics.mean(pos)
    std_p = m * first["pos_angle_std"] + (1 - m) * sample_std(pos)
    mean_n = m * first["neg_angle_mean"] + (1 - m) * statistics.mean(neg)
    std_n = m * first["neg_angle_std"] + (1 - m) * sample_std(neg)
    mean_d = m * -1.0 + (1 - m) * statistics.mean(diff)
    std_d = m * first["diff_angle_std"] + (1 - m) * sample_std(diff)
    cutoff = mean_d + std_d * PHI_INV_06
    kept = [1.0 if d >= cutoff else 0.0 for d in diff]
    assert kept == [1.0, 1.0, 1.0]
    focus_p = [math.exp(-(x - mean_p) ** 2 / (2 * (math.pi / 6 + std_p) ** 2)) for x in pos]
    focus_n = [math.exp(-(x - mean_n) ** 2 / (2 * (math.pi / 6 + std_n) ** 2)) for x in neg]
    power_p = m * first["pos_power"] + (1 - m) * sum(focus_p)
    power_n = m * first["neg_power"] + (1 - m) * sum(focus_n)
    stats = loss.statistics()
    for name, value in (("pos_angle_mean", mean_p), ("pos_angle_std", std_p), ("neg_angle_mean", mean_n),
                        ("neg_angle_std", std_n), ("diff_angle_mean", mean_d), ("diff_angle_std", std_d),
                        ("pos_power", power_p), ("neg_power", power_n)):
        assert stats[name] == pytest.approx(value, rel=1e-5), name
    assert stats["num_updates"] == 2
    expected = (sum(0.9 * w * x for w, x in zip(focus_p, pos)) / power_p
                - sum(w * x for w, x in zip(focus_n, neg)) / power_n)
    assert second.item() == pytest.approx(expected, rel=1e-5)


def test_sdgm_state_dict_round_trip_resumes_exactly() -> None:
    first = SDGMLoss(total_steps=10)
    for seed in range(3):
        first(*random_unit(8, 4, seed=seed, dtype=torch.float32))
    state = first.state_dict()
    assert {"pos_angle_mean", "diff_angle_std", "pos_power", "neg_power", "num_updates"} <= set(state)
    resumed = SDGMLoss(total_steps=10)
    resumed.load_state_dict(state)
    assert resumed.statistics() == {k: v for k, v in first.statistics().items() if k in resumed.statistics()}
    for seed in range(3, 6):
        anchor, positive = random_unit(8, 4, seed=seed, dtype=torch.float32)
        assert first(anchor, positive).item() == resumed(anchor, positive).item()
    assert first.statistics() == resumed.statistics()
    # the state matters: without it the same batch gives another loss
    anchor, positive = random_unit(8, 4, seed=6, dtype=torch.float32)
    assert SDGMLoss(total_steps=10)(anchor, positive).item() != first(anchor, positive).item()


def test_sdgm_progress_from_total_steps_and_eval_mode() -> None:
    anchor, positive = batch()
    scheduled = SDGMLoss(total_steps=20)
    explicit = SDGMLoss()
    for step in range(4):  # progress 0, 0.05, 0.1, 0.15: warm-up, warm-up, modulated, duplicates excluded
        assert scheduled(anchor, positive).item() == explicit(anchor, positive, progress=step / 20).item()
        assert scheduled.statistics()["progress"] == pytest.approx(step / 20)
    before = scheduled.state_dict()
    scheduled.eval()
    value = scheduled(anchor, positive)
    after = scheduled.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # eval mode writes nothing back
    scheduled.train()
    assert scheduled(anchor, positive).item() == value.item()      # and computes what training would
    assert SDGMLoss()(anchor, positive).item() == SDGMLoss()(anchor, positive, progress=1.0).item()


def test_sdgm_invariances() -> None:
    anchor, positive = random_unit(10, 6, seed=11, dtype=torch.float64)
    value = SDGMLoss()(anchor, positive).item()
    order = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    assert SDGMLoss()(anchor[order], positive[order]).item() == pytest.approx(value, rel=1e-9)
    assert SDGMLoss()(positive, anchor).item() == pytest.approx(value, rel=1e-9)


@pytest.mark.parametrize("name", ["deepdesc", "hardnet", "sosnet", "hynet", "sdgm"])
def test_every_loss_depends_only_on_the_pairs_geometry(name: str) -> None:
    # Reordering the pairs, exchanging the roles of anchor and positive, or rotating all
    # descriptors together leaves every loss unchanged (DeepDesc with all negatives, no draw).
    anchor, positive = random_unit(10, 6, seed=14, noise=0.8)
    options = {"negatives": "all", "margin": 1.2} if name == "deepdesc" else {}
    value = LOSSES[name](**options)(anchor, positive).item()
    assert value != 0.0
    order = torch.randperm(10, generator=torch.Generator().manual_seed(15))
    rotation = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(16), dtype=torch.float64))[0]
    assert LOSSES[name](**options)(anchor[order], positive[order]).item() == pytest.approx(value, rel=1e-9, abs=1e-12)
    assert LOSSES[name](**options)(positive, anchor).item() == pytest.approx(value, rel=1e-9, abs=1e-12)
    assert LOSSES[name](**options)(anchor @ rotation, positive @ rotation).item() == pytest.approx(
        value, rel=1e-7, abs=1e-10)


# ---------------------------------------------------------------------------------------------------
# registry, precision, errors
# ---------------------------------------------------------------------------------------------------

def test_registry_builds_each_loss_with_its_defaults_and_overrides() -> None:
    assert set(LOSSES) == {"deepdesc", "hardnet", "sosnet", "hynet", "sdgm", "l2net"}
    anchor, positive = random_unit(6, 4, seed=12)
    assert LOSSES["hardnet"]()(anchor, positive).item() == hardest_triplet_margin_loss(anchor, positive).item()
    assert LOSSES["hardnet"](margin=0.3).margin == 0.3
    assert LOSSES["sosnet"]()(anchor, positive).item() == sosnet_loss(anchor, positive).item()
    assert LOSSES["hynet"]()(anchor, positive).item() == hybrid_similarity_loss(anchor, positive).item()
    assert make_loss("hynet", alpha=1.0).alpha == 1.0
    deepdesc = LOSSES["deepdesc"](negatives="all")
    assert (deepdesc.margin, deepdesc.positive_mining_ratio, deepdesc.negative_mining_ratio) == (1.0, 8.0, 8.0)
    assert deepdesc(anchor, positive).item() == mined_hinge_loss(anchor, positive, negatives="all").item()
    sdgm = LOSSES["sdgm"]()
    assert (sdgm.alpha, sdgm.prob_margin, sdgm.momentum) == (0.9, 0.6, 0.999)
    for name in LOSSES:
        module = LOSSES[name]()
        assert isinstance(module, torch.nn.Module)
        assert module(anchor, positive).dim() == 0


def test_unknown_loss_and_bad_parameters_raise_cvdeep_error() -> None:
    with pytest.raises(cvdeep.Error, match="deepdesc, hardnet, hynet, l2net, sdgm, sosnet"):
        LOSSES["triplet"]
    with pytest.raises(cvdeep.Error, match="accepted"):
        make_loss("hardnet", knn=3)
    for build in (lambda: LOSSES["hardnet"](margin=-1), lambda: LOSSES["sosnet"](knn=0),
                  lambda: LOSSES["deepdesc"](negative_mining_ratio=0.5), lambda: LOSSES["deepdesc"](negatives="some"),
                  lambda: LOSSES["sdgm"](prob_margin=1.0), lambda: LOSSES["sdgm"](momentum=1.0),
                  lambda: LOSSES["hynet"](gamma=float("nan"))):
        with pytest.raises(cvdeep.Error):
            build()
    with pytest.raises(ValueError):  # cvdeep.Error is a ValueError
        LOSSES["sdgm"](total_steps=0)


@pytest.mark.parametrize("name", sorted(["deepdesc", "hardnet", "sosnet", "hynet", "sdgm"]))
def test_bad_shapes_raise_cvdeep_error(name: str) -> None:
    loss = LOSSES[name]()
    good = torch.zeros(4, 3)
    cases = {
        "not 2-D": (torch.zeros(4), torch.zeros(4)),
        "B mismatch": (torch.zeros(4, 3), torch.zeros(5, 3)),
        "D mismatch": (torch.zeros(4, 3), torch.zeros(4, 2)),
        "B < 2": (torch.zeros(1, 3), torch.zeros(1, 3)),
        "integer": (torch.zeros(4, 3, dtype=torch.long), good),
        "not a tensor": ([[0.0] * 3] * 4, good),
    }
    for what, (anchor, positive) in cases.items():
        with pytest.raises(cvdeep.Error) as caught:
            loss(anchor, positive)
        assert "got" in str(caught.value), what
    with pytest.raises(cvdeep.Error, match=r"\(4, 3\) and \(5, 3\)"):
        loss(torch.zeros(4, 3), torch.zeros(5, 3))


def test_hynet_raw_descriptors_go_together() -> None:
    anchor, positive = random_unit(4, 3, seed=0)
    with pytest.raises(cvdeep.Error, match="both"):
        hybrid_similarity_loss(anchor, positive, raw_anchor=anchor)
    with pytest.raises(cvdeep.Error):
        hybrid_similarity_loss(anchor, positive, raw_anchor=anchor[:3], raw_positive=positive[:3])


@pytest.mark.parametrize("name", ["deepdesc", "hardnet", "sosnet", "hynet", "sdgm"])
def test_bf16_autocast_computes_the_loss_in_float32(name: str) -> None:
    anchor, positive = random_unit(16, 8, seed=13, dtype=torch.float32)
    anchor16, positive16 = anchor.bfloat16().requires_grad_(True), positive.bfloat16().requires_grad_(True)
    options = {"negatives": "all"} if name == "deepdesc" else {}
    reference = LOSSES[name](**options)(anchor16.detach().float(), positive16.detach().float())
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        value = LOSSES[name](**options)(anchor16, positive16)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(reference.item(), rel=1e-5, abs=1e-7)
    value.backward()
    assert anchor16.grad is not None and anchor16.grad.dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------------
# learning: each loss separates 32 classes of noisy points within 150 steps
# ---------------------------------------------------------------------------------------------------

class _TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(16, 64)
        self.out = torch.nn.Linear(64, 16)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.raw(x), dim=1)


def _views(seed: int):
    """32 classes: 4 informative dims (class centre + noise 0.15) and 12 nuisance dims (noise 1.5).

    Raw inputs are dominated by the nuisance (FPR95 about 0.88); a descriptor must learn to
    ignore it. Each call draws one view of every class, so two calls give a HardNet batch.
    """
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(32, 4, generator=generator)

    def draw() -> torch.Tensor:
        signal = centres + 0.15 * torch.randn(32, 4, generator=generator)
        return torch.cat([signal, 1.5 * torch.randn(32, 12, generator=generator)], dim=1)

    return draw


def _adam_step(parameters, moments: dict, step: int, lr: float, beta1: float = 0.9, beta2: float = 0.999) -> None:
    """Adam (Kingma & Ba) written out: torch.optim's first construction imports torch._dynamo (seconds)."""
    with torch.no_grad():
        for parameter in parameters:
            first, second = moments.setdefault(parameter, (torch.zeros_like(parameter), torch.zeros_like(parameter)))
            first.mul_(beta1).add_(parameter.grad, alpha=1 - beta1)
            second.mul_(beta2).addcmul_(parameter.grad, parameter.grad, value=1 - beta2)
            parameter -= lr * (first / (1 - beta1 ** step)) / ((second / (1 - beta2 ** step)).sqrt() + 1e-8)
            parameter.grad = None


def _fpr95(describe, seed: int) -> float:
    draw = _views(seed)
    distances, labels = [], []
    with torch.no_grad():
        for _ in range(4):
            first, second = describe(draw()), describe(draw())
            distances.append(torch.cdist(first, second).flatten())
            labels.append(torch.eye(32).flatten())
    return fpr_at_recall(torch.cat(distances), torch.cat(labels))


@pytest.mark.parametrize("name", ["deepdesc", "hardnet", "sosnet", "hynet", "sdgm"])
def test_each_loss_learns_to_separate_the_classes(name: str) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        net = _TinyNet()
        options = {"generator": torch.Generator().manual_seed(0)} if name == "deepdesc" else {}
        loss_fn = LOSSES[name](**options)
        moments: dict = {}
        before = _fpr95(net, seed=0)
        draw = _views(seed=0)
        for step in range(1, 151):
            first, second = draw(), draw()
            if name == "hynet":
                raw_first, raw_second = net.raw(first), net.raw(second)
                loss = loss_fn(F.normalize(raw_first, dim=1), F.normalize(raw_second, dim=1), raw_first, raw_second)
            else:
                loss = loss_fn(net(first), net(second))
            loss.backward()
            _adam_step(list(net.parameters()), moments, step, lr=2e-2)
        after = _fpr95(net, seed=0)
    finally:
        torch.set_num_threads(threads)
    assert _fpr95(lambda x: F.normalize(x, dim=1), seed=0) > 0.8   # the raw inputs do not separate
    assert before > 0.5
    assert after < 0.1, f"{name}: FPR95 {before:.3f} -> {after:.3f}"


def test_module_constants_match_the_documented_sources() -> None:
    assert (losses.HARDNET_MARGIN, losses.HARDNET_DUPLICATE_DISTANCE) == (1.0, 0.008)
    assert (losses.HYNET_ALPHA, losses.HYNET_MARGIN, losses.HYNET_GAMMA, losses.SOS_KNN) == (2.0, 1.2, 0.1, 8)
    assert (losses.SDGM_ALPHA, losses.SDGM_PROB_MARGIN, losses.SDGM_MOMENTUM) == (0.9, 0.6, 0.999)


def test_l2net_loss_known_value_and_gradient_direction():
    """Two orthogonal points seen twice: E1 from the row/column softmax of exp(2 - d), E2 = 1
    because two centred one-hot columns are perfectly anti-correlated."""
    from cvdeep.train.losses import l2net_loss

    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    positive = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    same, other = math.sqrt(1e-6), math.sqrt(2.0 + 1e-6)
    log_match = (2 - same) - math.log(math.exp(2 - same) + math.exp(2 - other))
    expected = -log_match + 1.0  # rows and columns give the same term; E2 = 1
    value = l2net_loss(anchor, positive)
    assert abs(float(value) - expected) < 1e-5
    # E1 alone: a gradient step moves anchor 0 away from the non-matching positive 1
    e1 = l2net_loss(anchor, positive, compactness_weight=0.0)
    e1.backward()
    assert float(anchor.grad[0] @ (positive[1] - anchor.detach()[0])) > 0.0
    assert torch.isfinite(anchor.grad).all()
    assert "l2net" in LOSSES
