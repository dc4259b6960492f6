"""Model registry: a name carries its network builder, config, weights, license and input conventions.

Like timm's registry, but the entries are plain data: ``build_model(name)`` imports
the network module lazily, builds it from the entry's config dict, and loads the
entry's weights strictly through the weights hub.
"""
from __future__ import annotations

import argparse
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


# --- superpoint (cvdeep/nets/superpoint.py) ---
_SUPERPOINT_V1 = _weights(
    name="superpoint-v1", filename="superpoint/superpoint_v1.pth", sha256=None,
    license="Magic Leap SuperGlue/SuperPoint license (academic or non-profit, non-commercial use only)",
    source="magicleap/SuperGluePretrainedNetwork models/weights/superpoint_v1.pth",
    urls=("https://github.com/magicleap/SuperGluePretrainedNetwork/raw/master/models/weights/superpoint_v1.pth",),
    noncommercial=True)
_SUPERPOINT_OPEN = _weights(
    name="superpoint-open", filename="superpoint/superpoint_v6_from_tf.pth", sha256=None, license="MIT",
    source="rpautrat/SuperPoint weights/superpoint_v6_from_tf.pth",
    urls=("https://github.com/rpautrat/SuperPoint/raw/master/weights/superpoint_v6_from_tf.pth",))
register_model(ModelSpec("superpoint-v1", "superpoint", "cvdeep.nets.superpoint:SuperPointMagicLeap", {},
                         _SUPERPOINT_V1, "SuperPoint, Magic Leap's released model (non-commercial)",
                         "DeTone et al., SuperPoint, CVPRW 2018"))
register_model(ModelSpec("superpoint-open", "superpoint", "cvdeep.nets.superpoint:SuperPointOpen", {},
                         _SUPERPOINT_OPEN, "SuperPoint re-trained by R. Pautrat (TF v6 port, BatchNorm), MIT",
                         "DeTone et al., SuperPoint, CVPRW 2018"))

# --- d2net (cvdeep/nets/d2net.py) ---
# d2-net's train.py saves {"args": argparse.Namespace, "model", "optimizer", ...}: allow the Namespace.
_D2NET_TF = _weights(
    name="d2net-tf", filename="d2net/d2_tf.pth", sha256=None, license="Clear BSD",
    source="mihaidusmanu/d2-net (README: models/d2_tf.pth, hosted on the author's site)",
    urls=("https://dusmanu.com/files/d2-net/d2_tf.pth",), safe_globals=(argparse.Namespace,))
_D2NET_OTS = _weights(
    name="d2net-ots", filename="d2net/d2_ots.pth", sha256=None, license="Clear BSD",
    source="mihaidusmanu/d2-net (README: models/d2_ots.pth, hosted on the author's site)",
    urls=("https://dusmanu.com/files/d2-net/d2_ots.pth",), safe_globals=(argparse.Namespace,))
register_model(ModelSpec("d2net", "d2net", "cvdeep.nets.d2net:D2Net", {}, _D2NET_TF,
                         "D2-Net fine-tuned on MegaDepth (d2_tf.pth)", "Dusmanu et al., D2-Net, CVPR 2019"))
register_model(ModelSpec("d2net-ots", "d2net", "cvdeep.nets.d2net:D2Net", {}, _D2NET_OTS,
                         "D2-Net off-the-shelf ImageNet VGG16 weights (d2_ots.pth)", "Dusmanu et al., D2-Net, CVPR 2019"))

# --- r2d2 (cvdeep/nets/r2d2.py) ---
_R2D2_LICENSE = "CC BY-NC-SA 3.0 (non-commercial)"


def _defaultdict_as_dict(default_factory: Any = None, /, *args: Any, **kwargs: Any) -> dict:
    """Stand-in for collections.defaultdict when unpickling: torch's weights-only loader can
    fill only plain dicts, and the training-loss log that holds them is never used."""
    return dict(*args, **kwargs)


# faster2d2's file pickles its training losses as collections.defaultdict(list)
_FASTER2D2_SAFE_GLOBALS = ((_defaultdict_as_dict, "collections.defaultdict"), list)
_R2D2_FILES = {
    # model name: (file, sha256, network config)
    "r2d2": ("r2d2_WASF_N16.pt", "9ae90e02a9a133d100ca7aeaa32f4d4d7736a6dd222a530a25c8f7da5e508528", {}),
    "r2d2-waf-n16": ("r2d2_WAF_N16.pt", "27cebd6608317b35198a76f60f87492110dee3e88ca382586a729dadb1a16b90", {}),
    "r2d2-wasf-n8-big": ("r2d2_WASF_N8_big.pt", "597dc13998e211e827c550bdc8f76dbb4aca32747846f96962c9168586cec418", {"mchan": 6}),
    "faster2d2": ("faster2d2_WASF_N16.pt", "217daa3a166bfe9bf2b68c05c1607a09dd4d552ae1bbeda885479d504eefc14b", {"fast": True}),
}
for _name, (_file, _sha, _config) in _R2D2_FILES.items():
    _spec = _weights(
        name=_name, filename=f"r2d2/{_file}", sha256=_sha, license=_R2D2_LICENSE,
        source=f"naver/r2d2 models/{_file}", urls=(f"https://github.com/naver/r2d2/raw/master/models/{_file}",),
        noncommercial=True,
        safe_globals=_FASTER2D2_SAFE_GLOBALS if _config.get("fast") else ())
    register_model(ModelSpec(_name, "r2d2", "cvdeep.nets.r2d2:R2D2", _config, _spec,
                             f"R2D2 {_file} (non-commercial)", "Revaud et al., R2D2, NeurIPS 2019"))

# --- keynet (cvdeep/nets/keynet.py) ---
_KEYNET = _weights(
    name="keynet", filename="keynet/keynet_pytorch.pth",
    sha256="59d3a46d57b439513acf531877fdfaa95eb550ccd10ec462e23d7c1f7a86d52a", license="MIT",
    source="axelBarroso/Key.Net-Pytorch model/weights/keynet_pytorch.pth",
    urls=("https://github.com/axelBarroso/Key.Net-Pytorch/raw/main/model/weights/keynet_pytorch.pth",))
register_model(ModelSpec("keynet", "keynet", "cvdeep.nets.keynet:KeyNet", {}, _KEYNET,
                         "Key.Net multi-scale detector (detect only)", "Barroso-Laguna et al., Key.Net, ICCV 2019"))
