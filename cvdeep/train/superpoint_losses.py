"""SuperPoint's training losses, homographic adaptation and pseudo ground truth.

- ``keypoint_map_to_labels``: a (B, H, W) keypoint map -> (B, H/8, W/8) labels in 0..64, where
  label c < 64 is the pixel (row c // 8, column c % 8) of the cell (the order of
  ``F.pixel_shuffle``, which ``cvdeep.nets.superpoint.cell_logits_to_scores`` uses to unfold the
  65-way softmax) and 64 is the "no keypoint" dustbin. A cell with several keypoints gets one of
  them uniformly at random (paper, Sec. 3.2; rpautrat breaks the tie with uniform noise too).
- ``detector_loss``: the paper's L_p, the mean over cells of the 65-way cross-entropy; cells with
  any invalid pixel are left out of the sum and of the count (rpautrat's masking, which reduces
  by the number of cells kept).
- ``descriptor_loss``: the paper's L_d. Cell centres are at ``cell * j + (cell - 1) / 2`` in x (the
  centre of the 8x8 pixel block under OpenCV's pixel-centre convention; rpautrat uses
  ``cell * j + cell // 2``). A pair of cells (hw in A, h'w' in B) is positive (s = 1) when the
  centre of hw warped by H lies within ``positive_radius`` (default: the paper's 8 px, "<=") of the
  centre of h'w'; rpautrat uses ``<= cell - 0.5`` so that the 4-neighbours of an identity warp
  (exactly 8 px away) are not positives. l_d = lambda_d * s * max(0, m_p - d.d') +
  (1 - s) * max(0, d.d' - m_n) on L2-normalised descriptors; the sum over all pairs whose B cell is
  valid is divided by (number of valid B cells) * Hc * Wc, which is the paper's 1 / (Hc Wc)^2 when
  everything is valid. Paper constants: m_p = 1, m_n = 0.2, lambda_d = 250. rpautrat additionally
  applies ReLU and two L2 normalisations to the dot-product matrix; that is not in the paper and
  is not done here.
- ``homographic_adaptation``: F(I) = (sum_i H_i^-1 f(H_i(I))) / (sum_i count_i), the identity
  included with a count of 1 everywhere. As in rpautrat, the detections on a warp are masked by
  the area of the warped image that saw the original, eroded by ``valid_margin`` pixels (rpautrat's
  ``valid_border_margin`` = 3, with a (2r)x(2r) elliptic kernel; here a disc of radius r, so that it
  is centred), before warping back. count_i = 1 where all the pixels the bilinear warp back reads
  were in that eroded area; rpautrat instead erodes a separately warped count mask in the original
  frame, which counts warps that contributed nothing near the original image border (the mean is
  diluted there). ``"max"`` aggregation takes the pixel-wise maximum instead of the mean.
- ``pseudo_ground_truth``: hard NMS (``cvdeep.ops.nms``) on the aggregated heatmap, a threshold and
  an optional top-k (rpautrat's export: NMS radius 4, threshold 0.015, no top-k; it uses box NMS
  with IoU 0.1, ``cvdeep.ops.nms`` is exact window NMS).

Homographies are 3x3 tensors mapping a pixel (x, y) of image A (the original) to image B (the
warped one), OpenCV pixel-centre convention; warping uses ``F.grid_sample`` with
``align_corners=False`` and the matching half-pixel normalisation.

Sources (facts only; no code or text copied):

- D. DeTone, T. Malisiewicz, A. Rabinovich, "SuperPoint: Self-Supervised Interest Point Detection
  and Description", CVPR Workshops 2018 (Sec. 3.2-3.4, 5: losses, constants, homographic adaptation).
- rpautrat/SuperPoint (MIT licence): ``superpoint/models/utils.py`` (detector_loss,
  descriptor_loss), ``superpoint/models/homographies.py`` (homography_adaptation),
  ``configs/magic-point_coco_export.yaml`` (export NMS and threshold).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import ops
from ..errors import Error

DUSTBIN = 64


def _check_cell(cell: int) -> int:
    if int(cell) < 1:
        raise Error(f"cell must be a positive integer, got {cell}")
    return int(cell)


def _check_map(name: str, value: torch.Tensor, dims: int = 3) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() != dims:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise Error(f"{name} must be a {dims}-D tensor, got {shape}")
    return value


def _cells_all_valid(valid: torch.Tensor, cell: int) -> torch.Tensor:
    """(B, H, W) bool -> (B, H/cell, W/cell) bool: every pixel of the cell is valid."""
    invalid = (~valid.bool()).float()[:, None]
    return F.max_pool2d(invalid, cell, cell)[:, 0] == 0


def keypoints_to_map(keypoints: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 2) (x, y) pixel keypoints -> (H, W) bool map with each at its nearest pixel; keypoints
    outside [-0.5, W - 0.5) x [-0.5, H - 0.5) are dropped."""
    keypoints = _check_map("keypoints", torch.as_tensor(keypoints, dtype=torch.float32), 2)
    if keypoints.shape[1] != 2:
        raise Error(f"keypoints must be (N, 2) (x, y), got {tuple(keypoints.shape)}")
    height, width = (int(v) for v in size)
    cols = torch.floor(keypoints[:, 0] + 0.5).long()
    rows = torch.floor(keypoints[:, 1] + 0.5).long()
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    result = torch.zeros((height, width), dtype=torch.bool, device=keypoints.device)
    result[rows[inside], cols[inside]] = True
    return result


def keypoint_map_to_labels(keypoints: torch.Tensor, cell: int = 8, rng: torch.Generator | None = None) -> torch.Tensor:
    """(B, H, W) keypoint map (bool, or numbers: > 0 is a keypoint) -> (B, H/cell, W/cell) int64
    labels in 0..cell^2 (cell^2 = the dustbin). H and W must be multiples of ``cell``. Ties (several
    keypoints in a cell) are broken uniformly at random with ``rng`` (a ``torch.Generator``)."""
    cell = _check_cell(cell)
    keypoints = _check_map("keypoints", keypoints)
    _, height, width = keypoints.shape
    if height % cell or width % cell:
        raise Error(f"keypoint map size {height}x{width} is not a multiple of cell={cell}")
    present = F.pixel_unshuffle((keypoints > 0).float()[:, None], cell)  # (B, cell^2, Hc, Wc)
    if rng is None:
        noise = torch.rand(present.shape, device=present.device)
    else:
        noise = torch.rand(present.shape, generator=rng, device=rng.device).to(present.device)
    scores = present * (1.0 + noise)  # keypoints score in [1, 2), empty pixels 0
    dustbin = torch.full_like(scores[:, :1], 0.5)
    return torch.cat([scores, dustbin], dim=1).argmax(dim=1)


def detector_loss(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cell-wise cross-entropy of (B, cell^2 + 1, Hc, Wc) ``logits`` against (B, Hc, Wc)
    ``labels``; with ``valid`` (B, H, W) (H = cell * Hc) the cells touching an invalid pixel are
    ignored. Returns a scalar (0, still attached to ``logits``, when no cell is valid)."""
    logits = _check_map("logits", logits, 4)
    labels = _check_map("labels", labels)
    batch, channels, hc, wc = logits.shape
    cell = round((channels - 1) ** 0.5)
    if cell * cell + 1 != channels:
        raise Error(f"logits must have cell^2 + 1 channels (65 for 8x8 cells), got {channels}")
    if labels.shape != (batch, hc, wc):
        raise Error(f"labels must be {(batch, hc, wc)} to match logits, got {tuple(labels.shape)}")
    per_cell = F.cross_entropy(logits, labels.long(), reduction="none")
    if valid is None:
        return per_cell.mean()
    valid = _check_map("valid", valid)
    if valid.shape != (batch, hc * cell, wc * cell):
        raise Error(f"valid must be {(batch, hc * cell, wc * cell)}, got {tuple(valid.shape)}")
    weights = _cells_all_valid(valid, cell).to(per_cell.dtype)
    return (per_cell * weights).sum() / weights.sum().clamp_min(1.0)


def _cell_centres(hc: int, wc: int, cell: int, device: torch.device) -> torch.Tensor:
    """(Hc * Wc, 2) (x, y) pixel centres of the cells, row-major."""
    ys, xs = torch.meshgrid(torch.arange(hc, device=device), torch.arange(wc, device=device), indexing="ij")
    offset = (cell - 1) / 2
    return torch.stack([xs, ys], dim=-1).reshape(-1, 2).to(torch.float64) * cell + offset


def _apply_homography(homography: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) x (N, 2) -> (B, N, 2); points behind the camera (w <= 0) become +inf."""
    homogeneous = torch.cat([points, torch.ones_like(points[:, :1])], dim=1)
    mapped = torch.einsum("bij,nj->bni", homography.to(points.dtype), homogeneous)
    w = mapped[..., 2:3]
    out = mapped[..., :2] / w.clamp_min(1e-12)
    return torch.where(w > 1e-12, out, torch.full_like(out, float("inf")))


def descriptor_loss(
    desc_a: torch.Tensor,
    desc_b: torch.Tensor,
    homography: torch.Tensor,
    valid_b: torch.Tensor | None = None,
    positive_margin: float = 1.0,
    negative_margin: float = 0.2,
    lambda_d: float = 250.0,
    cell: int = 8,
    positive_radius: float | None = None,
) -> torch.Tensor:
    """SuperPoint's descriptor hinge loss between every cell pair of two images.

    ``desc_a``, ``desc_b``: (B, D, Hc, Wc) descriptors of image A and of B = A warped by
    ``homography`` (B, 3, 3), A pixels -> B pixels. ``valid_b``: optional (B, cell * Hc, cell * Wc)
    bool, the pixels of B that saw A. ``positive_radius``: px, default ``cell`` (the paper's 8).
    Returns a scalar. Raises ``cvdeep.Error`` on mismatched shapes.
    """
    cell = _check_cell(cell)
    desc_a, desc_b = _check_map("desc_a", desc_a, 4), _check_map("desc_b", desc_b, 4)
    if desc_a.shape != desc_b.shape:
        raise Error(f"desc_a and desc_b must have the same shape, got {tuple(desc_a.shape)} and {tuple(desc_b.shape)}")
    batch, _, hc, wc = desc_a.shape
    homography = torch.as_tensor(homography)
    if homography.shape != (batch, 3, 3):
        raise Error(f"homography must be (B, 3, 3) = {(batch, 3, 3)}, got {tuple(homography.shape)}")
    radius = float(cell if positive_radius is None else positive_radius)
    centres = _cell_centres(hc, wc, cell, desc_a.device)
    warped = _apply_homography(homography.to(desc_a.device, torch.float64), centres)  # (B, N, 2)
    # exact differences (no |a|^2 + |b|^2 - 2ab shortcut): neighbours of an identity warp are exactly 8 px away
    distance = torch.cdist(warped, centres[None].expand(batch, -1, -1), compute_mode="donot_use_mm_for_euclid_dist")
    s = (distance <= radius).to(desc_a.dtype)
    a = F.normalize(desc_a.flatten(2), dim=1)  # (B, D, N)
    b = F.normalize(desc_b.flatten(2), dim=1)
    dot = torch.einsum("bdn,bdm->bnm", a, b)
    loss = lambda_d * s * F.relu(positive_margin - dot) + (1 - s) * F.relu(dot - negative_margin)
    if valid_b is None:
        weights = torch.ones((batch, hc * wc), dtype=desc_a.dtype, device=desc_a.device)
    else:
        valid_b = _check_map("valid_b", valid_b)
        if valid_b.shape != (batch, hc * cell, wc * cell):
            raise Error(f"valid_b must be {(batch, hc * cell, wc * cell)}, got {tuple(valid_b.shape)}")
        weights = _cells_all_valid(valid_b.to(desc_a.device), cell).flatten(1).to(desc_a.dtype)
    normalisation = weights.sum() * (hc * wc)
    return (loss * weights[:, None, :]).sum() / normalisation.clamp_min(1.0)


def _check_homographies(homographies: torch.Tensor) -> torch.Tensor:
    homographies = torch.as_tensor(homographies)
    if homographies.dim() == 2:
        homographies = homographies[None]
    if homographies.dim() != 3 or homographies.shape[1:] != (3, 3):
        raise Error(f"homographies must be (N, 3, 3), got {tuple(homographies.shape)}")
    if not torch.isfinite(homographies).all():
        raise Error("homographies contain non-finite values")
    return homographies


def _warp_image(image: torch.Tensor, homography: torch.Tensor, size: tuple[int, int],
                mode: str = "bilinear") -> torch.Tensor:
    """Warp (B, C, h, w) images by (B, 3, 3) homographies (source pixel -> destination pixel) into
    (B, C, size[0], size[1]): destination pixel y takes the source value at H^-1 y (zeros outside)."""
    batch, _, h_src, w_src = image.shape
    h_dst, w_dst = (int(v) for v in size)
    inverse = torch.linalg.inv(homography.to(torch.float64))
    ys, xs = torch.meshgrid(torch.arange(h_dst, device=image.device), torch.arange(w_dst, device=image.device),
                            indexing="ij")
    grid = torch.stack([xs, ys], dim=-1).reshape(-1, 2).to(torch.float64)
    source = _apply_homography(inverse.to(image.device), grid)  # (B, N, 2), inf behind the camera
    source = torch.nan_to_num(source, nan=-1e6, posinf=-1e6, neginf=-1e6)
    scale = torch.tensor([w_src, h_src], dtype=torch.float64, device=image.device)
    normalised = ((2 * source + 1) / scale - 1).clamp(-4.0, 4.0)  # far outside stays outside
    normalised = normalised.reshape(batch, h_dst, w_dst, 2).to(image.dtype)
    return F.grid_sample(image, normalised, mode=mode, padding_mode="zeros", align_corners=False)


def _erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary erosion of (B, 1, H, W) {0, 1} masks by a disc; outside the image counts as set."""
    if radius <= 0:
        return mask
    offsets = torch.arange(-radius, radius + 1, device=mask.device, dtype=mask.dtype)
    disc = ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2).to(mask.dtype)
    padded = F.pad(mask, [radius] * 4, mode="constant", value=1.0)
    hits = F.conv2d(padded, disc[None, None])
    return (hits >= disc.sum() - 0.5).to(mask.dtype)


def homographic_adaptation(
    heatmap_fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    homographies: torch.Tensor,
    aggregation: str = "mean",
    valid_margin: int = 3,
    batch_size: int = 16,
) -> torch.Tensor:
    """Aggregate a detector's heatmap over random warps of one image (SuperPoint Sec. 5).

    ``heatmap_fn``: (n, C, H, W) images -> (n, 1, H, W) or (n, H, W) heatmaps (e.g. the network's
    ``scores``); called on the identity and on every warp, ``batch_size`` warps at a time, under
    ``torch.no_grad``. ``image``: (1, C, H, W). ``homographies``: (N, 3, 3), original -> warped
    pixels. ``aggregation``: ``"mean"`` (rpautrat's ``"sum"``: the sum divided by how many warps saw
    each pixel, the identity included) or ``"max"``. ``valid_margin``: erosion radius (px) of the
    warps' valid areas. Returns (H, W) float.
    """
    image = _check_map("image", image, 4)
    if image.shape[0] != 1:
        raise Error(f"image must be (1, C, H, W), got {tuple(image.shape)}")
    if aggregation not in ("mean", "max"):
        raise Error(f"aggregation must be 'mean' or 'max', got {aggregation!r}")
    homographies = _check_homographies(homographies).to(image.device)
    _, channels, height, width = image.shape

    def run(batch: torch.Tensor) -> torch.Tensor:
        heat = heatmap_fn(batch)
        if heat.dim() == 3:
            heat = heat[:, None]
        if heat.shape != (batch.shape[0], 1, height, width):
            raise Error(f"heatmap_fn must return (n, 1, H, W) or (n, H, W) = {(batch.shape[0], height, width)}, "
                        f"got {tuple(heat.shape)}")
        return heat.to(image.dtype)

    with torch.no_grad():
        total = run(image)[0, 0]
        counts = torch.ones_like(total)
        for start in range(0, len(homographies), int(batch_size)):
            chunk = homographies[start : start + int(batch_size)]
            n = chunk.shape[0]
            inverse = torch.linalg.inv(chunk.to(torch.float64))
            ones = image.new_ones((n, 1, height, width))
            warped = _warp_image(image.expand(n, channels, height, width), chunk, (height, width))
            seen_in_warp = _erode(_warp_image(ones, chunk, (height, width), mode="nearest"), valid_margin)
            # counted where every pixel the bilinear warp back reads was valid, so the numerator
            # and the count agree
            seen_in_image = (_warp_image(seen_in_warp, inverse, (height, width)) > 1.0 - 1e-4).to(image.dtype)
            back = _warp_image(run(warped) * seen_in_warp, inverse, (height, width)) * seen_in_image
            if aggregation == "mean":
                total = total + back.sum(dim=(0, 1))
                counts = counts + seen_in_image.sum(dim=(0, 1))
            else:
                total = torch.maximum(total, back.amax(dim=(0, 1)))
    return total / counts if aggregation == "mean" else total


def pseudo_ground_truth(
    heatmap: torch.Tensor,
    nms_radius: int = 4,
    threshold: float = 0.015,
    top_k: int = -1,
    border: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints from an (H, W) (or (1, 1, H, W)) heatmap: window NMS of ``nms_radius`` px
    (``cvdeep.ops.nms``), score > ``threshold``, at least ``border`` px from the edge, the ``top_k``
    best (all when <= 0). Returns (N, 2) float32 (x, y) pixels and (N,) scores, best first."""
    heatmap = torch.as_tensor(heatmap)
    if heatmap.dim() == 2:
        heatmap = heatmap[None, None]
    if heatmap.dim() != 4 or heatmap.shape[:2] != (1, 1):
        raise Error(f"heatmap must be (H, W) or (1, 1, H, W), got {tuple(heatmap.shape)}")
    if int(nms_radius) < 0:
        raise Error(f"nms_radius must be >= 0, got {nms_radius}")
    keypoints, scores = ops.nms(heatmap.float(), int(nms_radius), float(threshold), int(top_k), int(border))
    return keypoints[0].to(torch.float32), scores[0]
