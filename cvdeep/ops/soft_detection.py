"""D2-Net's soft detection score (Dusmanu et al., CVPR 2019, eq. 3-5): differentiable, for training.

For a (B, C, H, W) feature map y >= 0 (negative values are clipped, as the network's ReLU does):

- soft local max  alpha^k_ij = exp(y^k_ij / m) / sum_{(i',j') in N(i,j)} exp(y^k_i'j' / m), with N the
  ``window`` x ``window`` neighbourhood (positions outside the map contribute exp(0) = 1, as in the
  reference code) and m the per-sample maximum of y, so every exponent lies in [0, 1];
- ratio to the channel max  beta^k_ij = y^k_ij / max_t y^t_ij;
- score s_ij = max_k alpha^k_ij beta^k_ij, normalised to sum 1 over the image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_TINY = 1e-12  # keeps an all-zero sample (or pixel) from dividing by zero


def soft_detection_score(features: torch.Tensor, window: int = 3) -> torch.Tensor:
    """(B, C, H, W) dense features -> (B, H, W) soft detection scores summing to 1 per image."""
    if features.dim() != 4:
        raise ValueError(f"features must be (B, C, H, W), got {tuple(features.shape)}")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd size, got {window}")
    batch = features.shape[0]
    features = F.relu(features)
    sample_max = features.reshape(batch, -1).max(dim=1).values.clamp_min(_TINY).view(batch, 1, 1, 1)
    exp = torch.exp(features / sample_max)
    half = window // 2
    # Sum of exp over the window; padding with 1 = exp(0) as the reference implementation does.
    window_sum = window * window * F.avg_pool2d(F.pad(exp, [half] * 4, mode="constant", value=1.0), window, stride=1)
    local_max_score = exp / window_sum
    channel_max_score = features / features.max(dim=1, keepdim=True).values.clamp_min(_TINY)
    score = (local_max_score * channel_max_score).max(dim=1).values
    return score / score.reshape(batch, -1).sum(dim=1).clamp_min(_TINY).view(batch, 1, 1)
