"""The public detector/descriptor classes: each names its registry family and its parameters.

Everything else (the cv2 contract) lives in feature2d.Feature2D; the network and its
post-processing live in nets/. Parameter order is the positional order of ``create``.
"""
from __future__ import annotations

from .feature2d import Feature2D, PatchFeature2D

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


class SuperPoint(Feature2D):
    """SuperPoint (DeTone et al., CVPRW 2018): self-supervised interest points and 256-D descriptors.

    ``weights`` picks the file: ``"superpoint-v1"`` (Magic Leap's release, non-commercial),
    ``"superpoint-open"`` (R. Pautrat's MIT re-training) or a path to a checkpoint. A model
    name given as ``weights`` is stored as ``model`` (so ``getWeights()`` is then None); a
    path keeps the current ``model``, which names the file's layout (``model="superpoint-open"``
    for a file in the re-trained layout).
    """

    _family, _name = "superpoint", "SuperPoint"
    _params = {"model": "superpoint-v1", "nfeatures": -1, "detection_threshold": 0.005, "nms_radius": 4,
               "remove_borders": 4, "weights": None}

    def setParams(self, **params: object) -> None:
        from .models import list_models

        weights = params.get("weights")
        if isinstance(weights, str) and weights in list_models(self._family):
            params["model"], params["weights"] = weights, None
        super().setParams(**params)


class D2Net(Feature2D):
    """D2-Net (Dusmanu et al., CVPR 2019): describe-and-detect on VGG16 conv4_3 features.

    ``multiscale=True`` runs the paper's [0.5, 1, 2] pyramid with accumulated feature maps.
    """

    _family, _name = "d2net", "D2Net"
    _params = {"model": "d2net", "multiscale": False, "nfeatures": -1, "max_edge": 1600, "max_sum_edges": 2800,
               "weights": None}


class R2D2(Feature2D):
    """R2D2 (Revaud et al., NeurIPS 2019): repeatable and reliable multi-scale detector/descriptor.

    ``model``: ``"r2d2"`` (WASF N16, the default), ``"r2d2-waf-n16"``, ``"r2d2-wasf-n8-big"``
    or ``"faster2d2"``. All official weights are CC BY-NC-SA 3.0 (non-commercial).
    """

    _family, _name = "r2d2", "R2D2"
    _params = {"model": "r2d2", "nfeatures": 5000, "reliability_threshold": 0.7, "repeatability_threshold": 0.7,
               "min_size": 256, "max_size": 1024, "weights": None}


class KeyNet(Feature2D):
    """Key.Net (Barroso-Laguna et al., ICCV 2019): a multi-scale keypoint detector only.

    ``detect`` works as with any OpenCV detector; to describe its keypoints, pass them to a
    patch descriptor (HardNet, HyNet: ``desc.compute(image, keynet.detect(image))``), the
    pairing of the paper.
    """

    _family, _name = "keynet", "KeyNet"
    _params = {"model": "keynet", "nfeatures": 5000, "nms_size": 15, "pyramid_levels": 4, "up_levels": 1,
               "weights": None}

    def compute(self, image: object, keypoints: object, descriptors: object = None) -> tuple[object, object]:
        from .errors import Error

        raise Error(
            "KeyNet is a detector only: it computes no descriptors. Describe its keypoints with a patch "
            "descriptor (HyNet, the paper's pairing, or HardNet): descriptor.compute(image, keynet.detect(image))"
        )

    def detectAndCompute(self, image: object, mask: object = None, descriptors: object = None,
                         useProvidedKeypoints: bool = False, keypoints: object = None) -> tuple[object, object]:
        return self.compute(image, keypoints)


__all__ += ["SuperPoint", "D2Net", "R2D2", "KeyNet"]


# --- patch descriptors: compute() on any keypoints, detect() through detector= (default SIFT) ---


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
