"""The public detector/descriptor classes: each names its registry family and its parameters.

Everything else (the cv2 contract) lives in feature2d.Feature2D; the network and its
post-processing live in nets/. Parameter order is the positional order of ``create``.
"""
from __future__ import annotations

from .feature2d import Feature2D

__all__: list[str] = []


_OPENCV_BASELINES = {"sift": "SIFT_create", "orb": "ORB_create", "akaze": "AKAZE_create", "brisk": "BRISK_create"}


def create(name: str, **params: object) -> object:
    """Any feature by name: a cvdeep class (``"aliked"``, ``"XFeat"``), a registered model
    name (``"aliked-n32"``) or an OpenCV baseline (``"sift"``, ``"orb"``, ``"akaze"``, ``"brisk"``).

    Used by the examples, the command line and the benchmarks so that every method runs
    through the same code path.
    """
    import cv2

    from .errors import Error
    from .models import get_model_spec, list_models

    key = name.lower()
    if key in _OPENCV_BASELINES:
        factory = getattr(cv2, _OPENCV_BASELINES[key], None)
        if factory is None:
            raise Error(f"this OpenCV build has no cv2.{_OPENCV_BASELINES[key]}")
        return factory(**params)
    classes = {cls.lower(): globals()[cls] for cls in __all__}
    if key in classes:
        return classes[key](**params)
    if key in list_models():
        family = get_model_spec(key).family
        for cls in classes.values():
            if cls._family == family:
                return cls(model=key, **params)
    accepted = sorted(list(_OPENCV_BASELINES) + list(classes) + list_models())
    raise Error(f"unknown feature {name!r}; accepted: {', '.join(accepted)}")


# --- patch descriptors: compute() on any keypoints, detect() through detector= (default SIFT) ---
from .feature2d import PatchFeature2D  # noqa: E402


class DeepDesc(PatchFeature2D):
    """DeepDesc (Simo-Serra et al., ICCV 2015): CNN3 on 64x64 patches, 128-D.
    Weights CC BY-NC-SA 4.0 (non-commercial; a warning is emitted)."""

    _family, _name = "deepdesc", "DeepDesc"
    _params = {"model": "deepdesc-split4", "weights": None}


class TFeat(PatchFeature2D):
    """TFeat (Balntas et al., BMVC 2016): shallow triplet network on 32x32 patches, 128-D (MIT)."""

    _family, _name = "tfeat", "TFeat"
    _params = {"model": "tfeat-liberty", "weights": None}


class HardNet(PatchFeature2D):
    """HardNet (Mishchuk et al., NeurIPS 2017): L2-Net body, hardest-negative loss, 128-D (MIT)."""

    _family, _name = "hardnet", "HardNet"
    _params = {"model": "hardnet-liberty-aug", "weights": None}


class SOSNet(PatchFeature2D):
    """SOSNet (Tian et al., CVPR 2019): L2-Net body with second-order similarity, 128-D
    (no license stated upstream)."""

    _family, _name = "sosnet", "SOSNet"
    _params = {"model": "sosnet-liberty", "weights": None}


class HyNet(PatchFeature2D):
    """HyNet (Tian et al., NeurIPS 2020): FRN/TLU network with hybrid similarity loss, 128-D (MIT)."""

    _family, _name = "hynet", "HyNet"
    _params = {"model": "hynet-liberty", "weights": None}


class SDGMNet(PatchFeature2D):
    """SDGMNet (Deng et al., 2022): HyNet architecture on 0..1 patches, 128-D (no license stated upstream)."""

    _family, _name = "sdgmnet", "SDGMNet"
    _params = {"model": "sdgmnet-liberty", "weights": None}


class L2Net(PatchFeature2D):
    """L2-Net (Tian et al., CVPR 2017): 128-D, or 256-D central-surround with model="l2net-cs"
    (no license stated upstream)."""

    _family, _name = "l2net", "L2Net"
    _params = {"model": "l2net", "weights": None}


__all__ += ["DeepDesc", "TFeat", "HardNet", "SOSNet", "HyNet", "SDGMNet", "L2Net"]
