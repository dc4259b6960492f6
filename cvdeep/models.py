"""Model registry: a name carries its network builder, config, weights, license and input conventions.

Like timm's registry, but the entries are plain data: ``build_model(name)`` imports
the network module lazily, builds it from the entry's config dict, and loads the
entry's weights strictly through the weights hub.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import weights as hub
from .errors import Error


@dataclass(frozen=True)
class ModelSpec:
    """One registered model."""

    name: str  # "aliked-n16"
    family: str  # "aliked": the Feature2D class that serves it
    builder: str  # "cvdeep.nets.aliked:ALIKED", called as builder(**config)
    config: dict[str, Any] = field(default_factory=dict)  # network-construction config
    weights: str | None = None  # name of a hub.WeightSpec
    description: str = ""
    paper: str = ""

    @property
    def weight_spec(self) -> hub.WeightSpec | None:
        return hub.get_spec(self.weights) if self.weights else None


_MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in _MODELS:
        raise ValueError(f"model {spec.name!r} registered twice")
    _MODELS[spec.name] = spec
    return spec


def list_models(family: str | None = None) -> list[str]:
    """Names of the registered models, optionally of one family."""
    return sorted(name for name, spec in _MODELS.items() if family is None or spec.family == family)


def get_model_spec(name: str, family: str | None = None) -> ModelSpec:
    spec = _MODELS.get(name)
    if spec is None or (family is not None and spec.family != family):
        raise Error(f"unknown model {name!r}; accepted: {', '.join(list_models(family))}")
    return spec


def _import(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def build_model(name: str, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Build a registered network in eval mode with its pretrained weights loaded strictly.

    ``weights`` overrides the registered file with a local path.
    """
    spec = get_model_spec(name)
    network = _import(spec.builder)(**spec.config)
    weight_spec = spec.weight_spec
    if weights is not None or weight_spec is not None:
        network.load_pretrained(hub.load_checkpoint(weight_spec, weights))
    return network.eval().to(device)


def _weights(**kwargs: Any) -> str:
    return hub.register(hub.WeightSpec(**kwargs)).name


# --- registered weights and models -------------------------------------------------------
# Each network module's section below lists the files it can load and the models built on them.


# --- patch descriptors (cvdeep/nets/{deepdesc,tfeat,hardnet,sosnet,hynet,l2net}.py) ---
# Each network describes square patches cropped around any keypoints; its config holds
# the patch side in units of KeyPoint.size (``scale_factor``) that its authors used.
_NO_LICENSE = "none stated upstream (no LICENSE file in the official repository)"

for _split, _iteration, _trained_on, _sha in (
    (1, "072000", "Liberty + Yosemite", "e2e7d1b9b274510e4cd86ab0ce70228703c002f2142b26939c7d6335a2876267"),
    (2, "104000", "Liberty + Notre Dame", "bdf83f8d6bc05455eceb0d64036da8e9727826deb3fd2e444513e7d9e9f84017"),
    (3, "067000", "Yosemite + Notre Dame", "e34f186da5bb29563b11372b4eccf48d0d25595b45641a5e7a5fc9f39a245fd3"),
    (4, "073000", "a subset of Liberty, Yosemite and Notre Dame", "e89b84c2fe5c86e342684a0e67653f2dfafac00b92182ede4ef86e9279dfd36b"),
):
    _file = f"CNN3_p8_n8_split{_split}_{_iteration}.t7"
    register_model(ModelSpec(
        f"deepdesc-split{_split}", "deepdesc", "cvdeep.nets.deepdesc:DeepDesc", {},
        _weights(name=f"deepdesc-split{_split}", filename=f"deepdesc/{_file}", sha256=_sha,
                 license="CC-BY-NC-SA-4.0", noncommercial=True, reader="cvdeep.nets.deepdesc:read_checkpoint",
                 source=f"etrulls/deepdesc-release models/{_file}",
                 urls=(f"https://github.com/etrulls/deepdesc-release/raw/master/models/{_file}",)),
        f"DeepDesc CNN3 trained on {_trained_on}" + (" (the authors' recommended model)" if _split == 4 else ""),
        "Simo-Serra et al., Discriminative Learning of Deep Convolutional Feature Point Descriptors, ICCV 2015",
    ))

for _set, _sha in (
    ("liberty", "1f2e9516b03c45876161da006ce8047e0a66ef08cc91d3fbf96a75f1a80f445a"),
    ("notredame", "71b9fe3e2a5ec4b90eb5c92c9eb0565504fba8bd2b6a7fa3b7e79d9df6e146a6"),
    ("yosemite", "548d65103b9e4d7c1f9242d613df96df14a456a2b44565f2c7faed7cbd928e8d"),
):
    register_model(ModelSpec(
        f"tfeat-{_set}", "tfeat", "cvdeep.nets.tfeat:TFeat", {},
        _weights(name=f"tfeat-{_set}", filename=f"tfeat/tfeat-{_set}.params", sha256=_sha, license="MIT",
                 source=f"vbalnt/tfeat pretrained-models/tfeat-{_set}.params",
                 urls=(f"https://github.com/vbalnt/tfeat/raw/master/pretrained-models/tfeat-{_set}.params",)),
        f"TFeat trained on {_set}",
        "Balntas et al., Learning local feature descriptors with triplets and shallow CNNs, BMVC 2016",
    ))

_HARDNET_PAPER = "Mishchuk et al., Working hard to know your neighbor's margins, NeurIPS 2017"
register_model(ModelSpec(
    "hardnet-liberty-aug", "hardnet", "cvdeep.nets.hardnet:HardNet", {},
    _weights(name="hardnet-liberty-aug", filename="hardnet/checkpoint_liberty_with_aug.pth", license="MIT",
             source="DagnyT/hardnet pretrained/train_liberty_with_aug/checkpoint_liberty_with_aug.pth",
             urls=("https://github.com/DagnyT/hardnet/raw/master/pretrained/train_liberty_with_aug/"
                   "checkpoint_liberty_with_aug.pth",)),
    "HardNet trained on Liberty with augmentation", _HARDNET_PAPER,
))
register_model(ModelSpec(
    "hardnet++", "hardnet", "cvdeep.nets.hardnet:HardNet", {},
    _weights(name="hardnet++", filename="hardnet/HardNet++.pth", license="MIT",
             source="DagnyT/hardnet pretrained/pretrained_all_datasets/HardNet++.pth",
             urls=("https://github.com/DagnyT/hardnet/raw/master/pretrained/pretrained_all_datasets/HardNet++.pth",)),
    "HardNet++ trained on Brown and HPatches", _HARDNET_PAPER,
))

register_model(ModelSpec(
    "sosnet-liberty", "sosnet", "cvdeep.nets.sosnet:SOSNet", {},
    _weights(name="sosnet-liberty", filename="sosnet/sosnet_32x32_liberty.pth", license=_NO_LICENSE,
             source="scape-research/SOSNet sosnet-weights/sosnet_32x32_liberty.pth",
             urls=("https://github.com/scape-research/SOSNet/raw/master/sosnet-weights/sosnet_32x32_liberty.pth",
                   "https://github.com/yuruntian/SOSNet/raw/master/sosnet-weights/sosnet_32x32_liberty.pth")),
    "SOSNet trained on Liberty",
    "Tian et al., SOSNet: Second Order Similarity Regularization for Local Descriptor Learning, CVPR 2019",
))

for _set, _file in (("liberty", "HyNet_LIB.pth"), ("notredame", "HyNet_ND.pth"), ("yosemite", "HyNet_YOS.pth")):
    register_model(ModelSpec(
        f"hynet-{_set}", "hynet", "cvdeep.nets.hynet:HyNet", {"intensity_scale": 255.0},
        _weights(name=f"hynet-{_set}", filename=f"hynet/{_file}", license="MIT",
                 source=f"axelBarroso/Key.Net-Pytorch model/HyNet/weights/{_file} (HyNet authors' release)",
                 urls=(f"https://github.com/axelBarroso/Key.Net-Pytorch/raw/main/model/HyNet/weights/{_file}",)),
        f"HyNet trained on {_set}, fed 0..255 patches",
        "Tian et al., HyNet: Learning Local Descriptor with Hybrid Similarity Measure and Triplet Loss, NeurIPS 2020",
    ))

for _set, _tag in (("liberty", "li"), ("notredame", "no"), ("yosemite", "yo")):
    register_model(ModelSpec(
        f"sdgmnet-{_set}", "sdgmnet", "cvdeep.nets.hynet:HyNet", {"intensity_scale": 1.0},
        _weights(name=f"sdgmnet-{_set}", filename=f"sdgmnet/model_{_tag}.pt", license=_NO_LICENSE,
                 source=f"ACuOoOoO/SDGMNet pretrained/models/model_{_tag}.pt",
                 urls=(f"https://github.com/ACuOoOoO/SDGMNet/raw/main/pretrained/models/model_{_tag}.pt",)),
        f"SDGMNet (HyNet architecture) trained on {_set}, fed 0..1 patches",
        "Deng et al., SDGMNet: Statistic-based Dynamic Gradient Modulation for Local Descriptor Learning, 2022",
    ))

for _name, _cs in (("l2net", False), ("l2net-cs", True)):
    # One official file holds both towers: "l2net" uses the first, "l2net-cs" both.
    register_model(ModelSpec(
        _name, "l2net", "cvdeep.nets.l2net:L2Net", {"central_surround": _cs},
        _weights(name="l2net-lib-aug", filename="l2net/L2Net-LIB+.mat", license=_NO_LICENSE,
                 reader="cvdeep.nets.l2net:read_checkpoint",
                 source="yuruntian/L2-Net matlab/L2Net-LIB+.mat (MatConvNet; trained on Liberty with augmentation)",
                 urls=("https://github.com/yuruntian/L2-Net/raw/master/matlab/L2Net-LIB+.mat",)),
        "L2-Net" + (" central-surround, 256-D on 64x64 patches" if _cs else ", 128-D on 32x32 patches"),
        "Tian et al., L2-Net: Deep Learning of Discriminative Patch Descriptor in Euclidean Space, CVPR 2017",
    ))
