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


class XFeat(Feature2D):
    """XFeat (Potje et al., CVPR 2024): a very light CNN, 64-D float descriptors.

    Defaults are the authors' ``detectAndCompute``: top 4096 keypoints, heatmap
    threshold 0.05, 5x5 NMS (radius 2).
    """

    _family, _name = "xfeat", "XFeat"
    _params = {"model": "xfeat", "nfeatures": 4096, "detection_threshold": 0.05, "nms_radius": 2, "weights": None}


__all__ += ["XFeat"]


class DISK(Feature2D):
    """DISK (Tyszkiewicz et al., NeurIPS 2020): a U-Net trained with policy gradient, 128-D descriptors.

    Defaults are the authors' ``detect.py``: every 5x5 NMS maximum (radius 2) whose
    logit is above 0, no keypoint limit (``nfeatures=0``, as ``cv2.SIFT``).
    """

    _family, _name = "disk", "DISK"
    _params = {"model": "disk", "nfeatures": 0, "detection_threshold": 0.0, "nms_radius": 2, "weights": None}


__all__ += ["DISK"]


class ALIKED(Feature2D):
    """ALIKED (Zhao et al., IEEE TIM 2023): light detector + deformable descriptor, sub-pixel keypoints.

    ``threshold > 0`` keeps the NMS maxima scoring above it (at most ``nfeatures``);
    ``threshold <= 0`` keeps the ``nfeatures`` best maxima. Defaults are the official ones
    (scores_th 0.2, n_limit 5000, radius 2).
    """

    _family, _name = "aliked", "ALIKED"
    _params = {"model": "aliked-n16", "nfeatures": 5000, "threshold": 0.2, "nms_radius": 2, "weights": None}


__all__ += ["ALIKED"]
