"""L2-Net (Tian et al., CVPR 2017) and its central-surround (CS) variant.

Seven convolutions on a 32x32 patch (3x3: 32, 32, 64 stride 2, 64, 128 stride 2, 128;
then 8x8 -> 128), each followed by a BatchNorm without affine parameters and, except
the last, a ReLU; the output is L2-normalised. HardNet and SOSNet reuse this body
(``l2net_layers``). Input as in the authors' MatConvNet code: 0..255 intensities, the
training set's per-pixel mean subtracted, then each patch standardised.
The CS variant runs a second tower on the central 32x32 of a 64x64 patch while the
first sees the whole patch at half resolution, and concatenates both (256-D).

The official weights are MatConvNet ``.mat`` files holding ``net``, ``netCen``, ``pixMean``
and ``pixMeanCen``; ``read_checkpoint`` converts them (``scipy`` needed) to this module's
keys (``tower.*``, ``center_tower.*``). Convolution biases and BatchNorm multipliers/biases
are folded exactly into the BatchNorm statistics, so the torch layers stay as in HardNet.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..declaration import DescriptorConfig, InputConvention, ModelFamily, Variant
from ..errors import Error
from ..weights import TRAINED_LICENSE, WeightSpec
from .matconvnet import load_mat, simplenn_layers, unwrap
from .patch_descriptor import SIFT_SCALE_FACTOR, PatchDescriptor

L2_EPS = 1e-10


def l2net_layers(dropout: float) -> list[nn.Module]:
    """The L2-Net body in the official module order (HardNet's ``features.N`` indices)."""
    layers: list[nn.Module] = []
    widths = [(1, 32, 1), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1)]
    for cin, cout, stride in widths:
        layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                   nn.BatchNorm2d(cout, affine=False), nn.ReLU()]
    layers += [nn.Dropout(dropout), nn.Conv2d(128, 128, 8, bias=False), nn.BatchNorm2d(128, affine=False)]
    return layers


def l2_normalize(descriptors: torch.Tensor) -> torch.Tensor:
    """Rows divided by sqrt(sum of squares + 1e-10), as the reference implementations do."""
    flat = descriptors.flatten(1)
    return flat / flat.pow(2).sum(dim=1, keepdim=True).add(L2_EPS).sqrt()


def standardize_patches(patches: torch.Tensor, eps: float) -> torch.Tensor:
    """Each patch to zero mean and unit (unbiased) standard deviation; ``eps`` added to the std."""
    std, mean = torch.std_mean(patches, dim=(1, 2, 3), keepdim=True)
    return (patches - mean) / (std + eps)


class L2NetTower(nn.Module):
    """One L2-Net tower on 32x32 patches in 0..255."""

    pixel_mean: torch.Tensor  # a buffer

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.zeros(1, 1, 32, 32))
        self.features = nn.Sequential(*l2net_layers(dropout=0.0))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        centred = standardize_patches(patches - self.pixel_mean, eps=1e-12)
        return l2_normalize(self.features(centred))


class L2Net(PatchDescriptor):
    """L2-Net descriptor: (N, 1, 32, 32) -> (N, 128), or CS: (N, 1, 64, 64) -> (N, 256)."""

    def __init__(self, central_surround: bool = False, scale_factor: float = SIFT_SCALE_FACTOR) -> None:
        super().__init__(scale_factor=scale_factor, intensity_scale=255.0)
        self.central_surround = central_surround
        self.tower = L2NetTower()
        if central_surround:
            self.center_tower = L2NetTower()
            self.patch_size, self.descriptor_size = 64, 256

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        if not self.central_surround:
            return self.tower(patches)
        surround = F.avg_pool2d(patches, 2)  # the whole 64x64 patch at 32x32
        center = patches[..., 16:48, 16:48]
        return torch.cat([self.tower(surround), self.center_tower(center)], dim=1)

    def load_pretrained(self, checkpoint: Any) -> None:
        """A converted file holds both towers; the plain model uses ``tower.*`` only."""
        if not self.central_surround:
            checkpoint = {k: v for k, v in checkpoint.items() if not k.startswith("center_tower.")}
        self.load_state_dict(checkpoint, strict=True)


_CONV_STRIDES = (1, 1, 2, 1, 2, 1, 1)
_CONV_INDICES = (0, 3, 6, 9, 12, 15, 19)  # positions in l2net_layers(); each BatchNorm follows at +1
_BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default


def _tower_state(net: Any, pixel_mean: Any, prefix: str) -> dict[str, torch.Tensor]:
    layers = simplenn_layers(net)
    convs = [(w, layer) for kind, w, layer in layers if kind == "conv"]
    norms = [w for kind, w, _ in layers if kind == "bnorm"]
    if len(convs) != 7 or len(norms) != 7:
        raise Error(f"not an L2-Net tower: {len(convs)} conv and {len(norms)} bnorm layers, expected 7 and 7")
    reference = L2NetTower().state_dict()
    state = {f"{prefix}pixel_mean": torch.from_numpy(np.asarray(pixel_mean, np.float32).reshape(1, 1, 32, 32))}
    conv_layers = zip(convs, norms, _CONV_INDICES, _CONV_STRIDES)
    for (weights, layer), (multipliers, bn_bias, moments), index, stride in conv_layers:
        if hasattr(layer, "stride") and int(np.asarray(unwrap(layer.stride)).flat[0]) != stride:
            raise Error(f"L2-Net conv layer {index}: stride {unwrap(layer.stride)}, expected {stride}")
        shape = tuple(reference[f"features.{index}.weight"].shape)  # (out, in, kH, kW)
        filters = weights[0].reshape(shape[2], shape[3], shape[1], shape[0]).transpose(3, 2, 0, 1)
        conv_bias = weights[1].reshape(-1) if len(weights) > 1 and weights[1].size else np.zeros(shape[0])
        moments = moments.reshape(shape[0], 2)
        scale = multipliers.reshape(-1)
        if (scale <= 0).any():
            raise Error("L2-Net BatchNorm multipliers must be positive to be folded into the statistics")
        # mult * (conv + b - mu) / sigma + beta == (conv - mean) / sqrt(var + eps)
        sigma = moments[:, 1] / scale
        mean = moments[:, 0] - conv_bias - bn_bias.reshape(-1) * sigma
        state[f"{prefix}features.{index}.weight"] = torch.from_numpy(filters.astype(np.float32))
        state[f"{prefix}features.{index + 1}.running_mean"] = torch.from_numpy(mean.astype(np.float32))
        state[f"{prefix}features.{index + 1}.running_var"] = torch.from_numpy((sigma**2 - _BN_EPS).astype(np.float32))
        state[f"{prefix}features.{index + 1}.num_batches_tracked"] = torch.tensor(0)
    return state


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """An official ``L2Net-*.mat`` as a state_dict for ``L2Net`` (the weights hub's reader)."""
    variables = load_mat(path)
    missing = {"net", "pixMean"} - set(variables)
    if missing:
        raise Error(f"{os.fspath(path)}: not an L2-Net file (missing {sorted(missing)})")
    state = _tower_state(variables["net"], variables["pixMean"], "tower.")
    if "netCen" in variables and "pixMeanCen" in variables:
        state.update(_tower_state(variables["netCen"], variables["pixMeanCen"], "center_tower."))
    return state


# One official file holds both towers: "l2net" uses the first, "l2net-cs" both.
_L2NET_WEIGHTS = WeightSpec(
    name="l2net-lib-aug", filename="l2net/L2Net-LIB+.mat",
    license="none stated upstream (no LICENSE file in the official repository)",
    reader="cvdeep.nets.l2net:read_checkpoint",
    source="yuruntian/L2-Net matlab/L2Net-LIB+.mat (MatConvNet; trained on Liberty with augmentation)",
    urls=("https://github.com/yuruntian/L2-Net/raw/master/matlab/L2Net-LIB+.mat",),
)

FAMILIES = (
    ModelFamily(
        name="l2net",
        public_name="L2Net",
        kind="patch",
        network=L2Net,
        config=DescriptorConfig,
        # the authors' code takes gray patches only (MATLAB); cv2's ITU-R 601 luminance, as rgb2gray, for images
        input=InputConvention(channels=1),
        paper="Tian et al., L2-Net: Deep Learning of Discriminative Patch Descriptor in Euclidean Space, CVPR 2017",
        summary="L2-Net: 128-D on 32x32 patches, or 256-D central-surround on 64x64 with model='l2net-cs' "
        "(no licence stated upstream).",
        variants=(
            Variant("l2net", "L2-Net, 128-D on 32x32 patches (official, Liberty with augmentation)", _L2NET_WEIGHTS),
            Variant("l2net-cs", "L2-Net central-surround, 256-D on 64x64 patches (official)", _L2NET_WEIGHTS,
                    network_args={"central_surround": True}),
            Variant(
                "l2net-cvdeep",
                "L2-Net (128-D) trained by cvdeep with L2-Net's own loss on homography-labelled patches of unlabeled "
                "photos (docs/models/l2net-cvdeep.md)",
                WeightSpec(name="l2net-cvdeep", filename="l2net-cvdeep.pt", license=TRAINED_LICENSE,
                           sha256="238c1e9ae7d0a37a478bda8882673dadc608175fefc3c9a6098d983c1bbac8aa",
                           source="trained by cvdeep: docs/models/l2net-cvdeep.md", packaged=True,
                           noncommercial=True),
                trained_by_cvdeep=True,
            ),
        ),
    ),
)
