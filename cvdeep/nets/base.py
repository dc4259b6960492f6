"""What every dense local-feature network offers the Feature2D layer.

An ``Extractor`` is a pure-torch ``nn.Module``: ``forward`` is the network (image ->
dense maps) and ``extract`` adds that method's published post-processing through
``cvdeep.ops``. It knows nothing of OpenCV; see docs/ARCHITECTURE.md for the contract.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

Features = dict[str, torch.Tensor]


class PretrainedNetwork(nn.Module):
    """A network whose official checkpoint loads with ``load_pretrained``."""

    def load_pretrained(self, checkpoint: Any) -> None:
        """Load a checkpoint as its authors saved it, strictly (every key, every shape).

        The default takes a plain state_dict; networks whose official files wrap it
        (``{"state_dict": ...}``, ``module.`` prefixes) override this.
        """
        self.load_state_dict(checkpoint, strict=True)


class Extractor(PretrainedNetwork):
    """Base of the dense detectors/descriptors (ALIKED, DISK, XFeat, SuperPoint, ...)."""

    input_channels: int = 1  # 1 = gray, 3 = RGB
    stride: int = 1  # the Feature2D layer pads H and W to a multiple of this
    descriptor_size: int = 0  # 0 for detectors that do not describe
    keypoint_size: float = 0.0  # KeyPoint.size (diameter, px) when extract() returns no "sizes"
    default_config: dict[str, Any] = {}

    def extract(self, image: torch.Tensor, valid: torch.Tensor, **config: Any) -> Features:
        """Detect and describe on one (1, C, H, W) image in [0, 1]; see the module docstring."""
        raise NotImplementedError

    def describe(
        self,
        image: torch.Tensor,
        keypoints: torch.Tensor,
        sizes: torch.Tensor | None = None,
        angles: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Descriptors (N, D) at given keypoints (N, 2) in pixels of ``image``."""
        raise NotImplementedError


def mask_scores(scores: torch.Tensor, valid: torch.Tensor, fill: float = float("-inf")) -> torch.Tensor:
    """Scores with invalid pixels (padding, outside the user's mask) set to ``fill``."""
    if valid.shape[-2:] != scores.shape[-2:]:
        raise ValueError(f"valid mask {tuple(valid.shape)} does not match score map {tuple(scores.shape)}")
    return scores.masked_fill(~valid, fill)
