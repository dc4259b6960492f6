"""D2-Net's training loss: a detection-weighted triplet margin ranking loss on dense features.

For correspondences c = (A position, B position) on the two feature maps (``pos_a``, ``pos_b``,
(x, y) feature-map cells), with d the L2-normalised features:

- positive distance p(c) = ||d_A(c) - d_B(c)||^2 = 2 - 2 d_A.d_B (the official code uses the squared
  distance between unit vectors; the paper writes the plain Euclidean norm);
- negative distance n(c) = min(min_{k: cheb(k, pos_b) > R} ||d_A(c) - d_B(k)||^2,
  min_{k: cheb(k, pos_a) > R} ||d_B(c) - d_A(k)||^2): the hardest negative in either image outside a
  safe radius R, measured with the Chebyshev distance in feature cells ("> R" is outside); positions
  inside it get +10, more than any squared distance between unit vectors, as in the official code;
- L = sum_c s_A(c) s_B(c) max(0, M + p(c) - n(c)) / sum_c s_A(c) s_B(c), with s the soft detection
  scores (``cvdeep.ops.soft_detection_score``) at the correspondence.

Constants of the official ``lib/loss.py``: margin M = 1, safe radius R = 4 feature cells (32 image
pixels at the training network's stride 8), ``scaling_steps`` = 3 (feature position p <-> image
pixel 2p + 0.5 per pooling, three poolings; cvdeep's inference ``D2Net`` has stride 4, i.e. 2 steps).
A pair with fewer than 128 correspondences is skipped, and a batch where every pair is skipped has
no loss (the official code raises ``NoGradientError``; ``d2net_batch_loss`` returns ``None``).

``cvdeep.ops.soft_detection_score`` against the seed's formulas (alpha, beta, gamma, s, D2-Net
eq. 3-5): beta = y / max_t y^t, gamma = max_k alpha beta and s = gamma / sum gamma are the same.
alpha is not the seed's literal exp(y) / sum_N exp(y): like the official ``SoftDetectionModule`` the
op first divides the (ReLU'd) map by its per-image maximum m, i.e. alpha = exp(y / m) /
sum_N exp(y / m) (identical only when m = 1; it makes the scores invariant to scaling the
features), and at the image border the 3x3 neighbourhood is padded with exp(0) = 1 (the seed sums
over the neighbours that exist). The op matches the official module except that it clamps the
denominators at 1e-12 where the official code adds 1e-6 (different only for all-zero pixels).

Sources (facts only; no code or text copied):

- M. Dusmanu et al., "D2-Net: A Trainable CNN for Joint Description and Detection of Local
  Features", CVPR 2019 (Sec. 3.2-3.3, eq. 3-5 and the loss).
- mihaidusmanu/d2-net (BSD 3-Clause Clear licence): ``lib/loss.py`` (loss, margin, safe radius,
  scaling steps, 128-correspondence minimum), ``lib/model.py`` (SoftDetectionModule),
  ``lib/utils.py`` (upscale/downscale_positions).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import Error
from ..ops import soft_detection_score

_EXCLUDED = 10.0  # added to distances inside the safe radius; squared unit-vector distances are <= 4


def upscale_positions(positions: torch.Tensor, scaling_steps: int = 3) -> torch.Tensor:
    """Feature-map (x, y) -> image pixels: p -> 2p + 0.5 per 2x2 pooling."""
    for _ in range(int(scaling_steps)):
        positions = positions * 2 + 0.5
    return positions


def downscale_positions(positions: torch.Tensor, scaling_steps: int = 3) -> torch.Tensor:
    """Image pixels (x, y) -> feature map: p -> (p - 0.5) / 2 per pooling (inverse of ``upscale_positions``)."""
    for _ in range(int(scaling_steps)):
        positions = (positions - 0.5) / 2
    return positions


def _size(name: str, value: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise Error(f"{name} must be (height, width), got {value!r}") from None
    if h < 1 or w < 1:
        raise Error(f"{name} must be positive, got {value!r}")
    return h, w


def correspondences_from_homography(
    homography: torch.Tensor,
    feature_size_a: tuple[int, int],
    feature_size_b: tuple[int, int],
    scaling_steps: int = 3,
    image_size_b: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth correspondences between two feature maps from a homography (A pixels -> B pixels).

    Every cell of A's (h, w) feature map is moved to image pixels (``upscale_positions``), warped,
    kept when it lands inside B's image (``image_size_b``, default ``feature_size_b * 2^steps``) and
    not behind the camera, and moved back to B's feature map and rounded (the official code rounds
    too). Returns ``pos_a``, ``pos_b``: (N, 2) int64 (x, y) feature-map cells.
    """
    ha, wa = _size("feature_size_a", feature_size_a)
    hb, wb = _size("feature_size_b", feature_size_b)
    stride = 2 ** int(scaling_steps)
    img_h, img_w = _size("image_size_b", image_size_b) if image_size_b is not None else (hb * stride, wb * stride)
    homography = torch.as_tensor(homography, dtype=torch.float64)
    if homography.shape != (3, 3) or not torch.isfinite(homography).all():
        raise Error(f"homography must be a finite 3x3 matrix, got {tuple(homography.shape)}")
    ys, xs = torch.meshgrid(torch.arange(ha), torch.arange(wa), indexing="ij")
    pos_a = torch.stack([xs, ys], dim=-1).reshape(-1, 2)
    pixels = upscale_positions(pos_a.to(torch.float64), scaling_steps)
    mapped = torch.cat([pixels, torch.ones_like(pixels[:, :1])], dim=1) @ homography.T
    in_front = mapped[:, 2] > 1e-12
    warped = mapped[:, :2] / mapped[:, 2:3].clamp_min(1e-12)
    inside = (in_front & (warped[:, 0] >= 0) & (warped[:, 0] <= img_w - 1)
              & (warped[:, 1] >= 0) & (warped[:, 1] <= img_h - 1))
    pos_b = torch.round(downscale_positions(warped[inside], scaling_steps)).long()
    pos_b[:, 0].clamp_(0, wb - 1)
    pos_b[:, 1].clamp_(0, hb - 1)
    return pos_a[inside], pos_b


def _check_positions(name: str, positions: torch.Tensor, height: int, width: int) -> torch.Tensor:
    positions = torch.as_tensor(positions)
    if positions.dim() != 2 or positions.shape[1] != 2 or positions.dtype.is_floating_point:
        raise Error(f"{name} must be an (N, 2) integer tensor of (x, y) feature cells, "
                    f"got {tuple(positions.shape)} {positions.dtype}")
    if len(positions) and (positions.min() < 0 or positions[:, 0].max() >= width or positions[:, 1].max() >= height):
        raise Error(f"{name} has cells outside the {height}x{width} feature map")
    return positions.long()


def _hardest_negative(descriptors: torch.Tensor, others: torch.Tensor, positions: torch.Tensor,
                      other_size: tuple[int, int], safe_radius: float) -> torch.Tensor:
    """For (N, C) ``descriptors`` at (N, 2) ``positions`` of the other map, the smallest squared
    distance to the (C, H, W) ``others`` outside ``safe_radius`` (Chebyshev, cells)."""
    height, width = other_size
    # Chebyshev distance <= R  <=>  |dx| <= R and |dy| <= R: an (N, h) x (N, w) outer AND, far cheaper
    # than the (N, h*w) integer distance matrix
    near_x = (positions[:, :1] - torch.arange(width, device=others.device)[None]).abs() <= safe_radius
    near_y = (positions[:, 1:] - torch.arange(height, device=others.device)[None]).abs() <= safe_radius
    inside = (near_y[:, :, None] & near_x[:, None, :]).reshape(len(positions), height * width)
    flat = others.reshape(others.shape[0], -1)
    with torch.no_grad():  # find the hardest negative without an (N, h*w) autograd graph
        distance = 2 - 2 * descriptors @ flat
        hardest = torch.where(inside, distance + _EXCLUDED, distance).argmin(dim=1)
    # the same value, differentiable: min's gradient reaches only the arg-min, as here
    chosen = 2 - 2 * (descriptors * flat[:, hardest].T).sum(dim=1)
    return chosen + inside.gather(1, hardest[:, None])[:, 0].to(chosen.dtype) * _EXCLUDED


def d2net_loss(
    features_a: torch.Tensor,
    features_b: torch.Tensor,
    pos_a: torch.Tensor,
    pos_b: torch.Tensor,
    margin: float = 1.0,
    safe_radius: float = 4.0,
    scores_a: torch.Tensor | None = None,
    scores_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """D2-Net's loss for one image pair.

    ``features_a`` (C, Ha, Wa), ``features_b`` (C, Hb, Wb): the raw dense feature maps, before
    normalisation (the official training network ends at conv4_3 without its ReLU; the soft
    detection score applies the ReLU itself). ``pos_a``, ``pos_b``: (N >= 1, 2) int (x, y) corresponding
    cells (``correspondences_from_homography``). ``scores_a`` / ``scores_b``: optional (H, W) soft
    detection scores; by default ``soft_detection_score`` of each map. Returns a scalar.
    """
    if not isinstance(features_a, torch.Tensor) or not isinstance(features_b, torch.Tensor) \
            or features_a.dim() != 3 or features_b.dim() != 3 or features_a.shape[0] != features_b.shape[0]:
        raise Error("features_a and features_b must be (C, H, W) tensors with the same C, got "
                    f"{tuple(getattr(features_a, 'shape', ()))} and {tuple(getattr(features_b, 'shape', ()))}")
    _, ha, wa = features_a.shape
    _, hb, wb = features_b.shape
    pos_a = _check_positions("pos_a", pos_a, ha, wa).to(features_a.device)
    pos_b = _check_positions("pos_b", pos_b, hb, wb).to(features_a.device)
    if len(pos_a) != len(pos_b) or len(pos_a) == 0:
        raise Error(f"pos_a and pos_b must hold the same number (>= 1) of cells, got {len(pos_a)} and {len(pos_b)}")
    if scores_a is None:
        scores_a = soft_detection_score(features_a[None])[0]
    if scores_b is None:
        scores_b = soft_detection_score(features_b[None])[0]
    if scores_a.shape != (ha, wa) or scores_b.shape != (hb, wb):
        raise Error(f"scores must match the feature maps: {(ha, wa)} and {(hb, wb)}, "
                    f"got {tuple(scores_a.shape)} and {tuple(scores_b.shape)}")
    dense_a = F.normalize(features_a, dim=0)
    dense_b = F.normalize(features_b, dim=0)
    d_a = dense_a[:, pos_a[:, 1], pos_a[:, 0]].T  # (N, C)
    d_b = dense_b[:, pos_b[:, 1], pos_b[:, 0]].T
    positive = 2 - 2 * (d_a * d_b).sum(dim=1)
    negative = torch.minimum(
        _hardest_negative(d_a, dense_b, pos_b, (hb, wb), safe_radius),
        _hardest_negative(d_b, dense_a, pos_a, (ha, wa), safe_radius),
    )
    weights = scores_a[pos_a[:, 1], pos_a[:, 0]] * scores_b[pos_b[:, 1], pos_b[:, 0]]
    return (weights * F.relu(margin + positive - negative)).sum() / weights.sum()


def d2net_batch_loss(
    features_a: torch.Tensor,
    features_b: torch.Tensor,
    homographies: torch.Tensor,
    scaling_steps: int = 3,
    margin: float = 1.0,
    safe_radius: float = 4.0,
    min_correspondences: int = 128,
    image_size_b: tuple[int, int] | None = None,
) -> torch.Tensor | None:
    """Mean of ``d2net_loss`` over a batch of (B, C, H, W) feature pairs related by (B, 3, 3)
    homographies (A pixels -> B pixels), skipping pairs with fewer than ``min_correspondences``
    correspondences; ``None`` when every pair is skipped. Soft detection scores are computed on the
    whole batch."""
    if not isinstance(features_a, torch.Tensor) or features_a.dim() != 4 or not isinstance(features_b, torch.Tensor) \
            or features_b.dim() != 4 or features_a.shape[:2] != features_b.shape[:2]:
        raise Error("features_a and features_b must be (B, C, H, W) with the same B and C")
    homographies = torch.as_tensor(homographies)
    if homographies.shape != (features_a.shape[0], 3, 3):
        raise Error(f"homographies must be {(features_a.shape[0], 3, 3)}, got {tuple(homographies.shape)}")
    scores_a, scores_b = soft_detection_score(features_a), soft_detection_score(features_b)
    losses = []
    for index in range(features_a.shape[0]):
        pos_a, pos_b = correspondences_from_homography(
            homographies[index], (features_a.shape[2], features_a.shape[3]), (features_b.shape[2], features_b.shape[3]),
            scaling_steps, image_size_b)
        if len(pos_a) < max(1, int(min_correspondences)):
            continue
        losses.append(d2net_loss(features_a[index], features_b[index], pos_a, pos_b, margin, safe_radius,
                                 scores_a[index], scores_b[index]))
    return torch.stack(losses).mean() if losses else None
