"""LightGlue as an OpenCV-style matcher, in the spirit of OpenCV 5's ``cv2.LightGlueMatcher``.

LightGlue needs more than descriptors: each image's keypoint positions and size. OpenCV's
``DescriptorMatcher.match(query, train)`` carries only descriptors, so the pair's geometry
is given first with ``setPairInfo``::

    matcher = cvdeep.LightGlue_create(features="aliked")
    matcher.setPairInfo(kp1, kp2, (w1, h1), (w2, h2))
    matches = matcher.match(des1, des2)          # list of cv2.DMatch, best first

or in one call, without cv2 objects: ``matcher.match_features(kp1, des1, size1, kp2, des2, size2)``.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, cast

import cv2
import numpy as np
import torch

from ..errors import Error
from ..feature2d import resolve_device
from ..image import check_size, no_descriptors
from ..keypoints import keypoint_coordinates
from ..models import build_model, lightglue_pairings
from ..nets.lightglue import LightGlue as LightGlueNetwork
from ..onnx_feature2d import match_with_pair_info
from ..precision import PRECISIONS, effective_precision, network_precision

_UNIT_NORM_TOLERANCE = 1e-2
MAX_PAIR_BYTES = 4 << 30
"""Memory LightGlue may take for one pair's (N, M) matrices: 4 GiB, about 11,500 keypoints a side."""
# Peak bytes per keypoint pair, with headroom: the fused attention stores no (N, M) matrix; the final assignment
# keeps a few float32 maps (similarity, two log-softmaxes, their sum): 23 B measured at 4096 x 4096 (367 MiB).
_BYTES_PER_PAIR = 32


def _check_probability(name: str, value: float, can_disable: bool) -> float:
    """A confidence in (0, 1] (-1 disables it where ``can_disable``), or a threshold in [0, 1]."""
    accepted = "a number in (0, 1], or -1 to disable" if can_disable else "a number in [0, 1]"
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise Error(f"{name}: got {value!r}; expected {accepted}") from None
    valid = (value == -1 or 0.0 < value <= 1.0) if can_disable else 0.0 <= value <= 1.0
    if not valid:
        raise Error(f"{name}: got {value!r}; expected {accepted}")
    return value


def _points(keypoints: Any, name: str) -> np.ndarray:
    """cv2.KeyPoint sequence or (N, 2) array -> (N, 2) float32 array of (x, y)."""
    if isinstance(keypoints, np.ndarray) or isinstance(keypoints, torch.Tensor):
        points = np.asarray(keypoints.cpu() if isinstance(keypoints, torch.Tensor) else keypoints)
        if points.ndim != 2 or points.shape[1] != 2 or not np.issubdtype(points.dtype, np.number):
            raise Error(f"{name}: got an array of shape {points.shape} and dtype {points.dtype}; "
                        "expected a sequence of cv2.KeyPoint or an (N, 2) array of (x, y) pixels")
        return points.astype(np.float32)
    try:
        keypoints = tuple(keypoints)
    except TypeError:
        raise Error(f"{name}: got an object of type {type(keypoints).__name__}; "
                    "expected a sequence of cv2.KeyPoint or an (N, 2) array of (x, y) pixels") from None
    if not all(isinstance(kp, cv2.KeyPoint) for kp in keypoints):
        raise Error(f"{name}: expected a sequence of cv2.KeyPoint or an (N, 2) array of (x, y) pixels")
    return keypoint_coordinates(keypoints)


class LightGlue:
    """LightGlue matcher for ALIKED or DISK features, or LighterGlue for XFeat features.

    ``depth_confidence`` (early exit), ``width_confidence`` (point pruning) and ``filter_threshold``
    (minimum match probability) default to the published values of each model; pass -1 to switch
    adaptive depth or width off. ``weights`` overrides the registered weight file with a local path.
    ``precision`` (``cvdeep.precision``): ``"fp32"`` (default, the published arithmetic); ``"bf16"``
    runs the transformer layers' matrix products in bfloat16 where the device has it natively (1.1-1.3x
    faster than fp32 on an AVX512-BF16 CPU; positions, confidences and the assignment stay float32;
    a few matches differ, MMA unchanged on the shared pairs: docs/RESULTS.md); ``"auto"``: bf16 where
    native, else fp32 silently.

    Instances pickle and deep-copy by their parameters; the network is rebuilt on first use on
    the other side (``multiprocessing``, ``joblib``).
    """

    def __init__(
        self,
        features: str = "aliked",
        depth_confidence: float | None = None,
        width_confidence: float | None = None,
        filter_threshold: float | None = None,
        weights: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
    ) -> None:
        key = str(features).lower()
        pairings = lightglue_pairings()
        if key not in pairings:
            raise Error(f"features: got {features!r}; accepted: {', '.join(map(repr, sorted(pairings)))}")
        self._features = key
        self._family, self.model = pairings[key]
        self._device = resolve_device(device)
        self._weights = None if weights is None else os.fspath(weights)
        if precision not in PRECISIONS:
            raise Error(f"precision: got {precision!r}; accepted: {', '.join(map(repr, PRECISIONS))}")
        self._precision = precision
        given = {"depth_confidence": (depth_confidence, True), "width_confidence": (width_confidence, True),
                 "filter_threshold": (filter_threshold, False)}
        self._settings = {name: _check_probability(name, value, can_disable)
                          for name, (value, can_disable) in given.items() if value is not None}
        self._lock = threading.Lock()
        self._network: LightGlueNetwork | None = None
        self._load()  # missing or wrong weights fail here, not at the first match
        self._pair: tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[int, int]] | None = None
        self.last_layers = 0  # layers the last match ran (< n_layers when it exited early)

    def _load(self) -> LightGlueNetwork:
        """The network, built on first use (after unpickling: in the process that uses it)."""
        network = self._network
        if network is None:
            with self._lock:
                if self._network is None:
                    built = cast(LightGlueNetwork, build_model(self.model, self._weights, self._device))
                    for name, value in self._settings.items():
                        setattr(built, name, value)
                    self._network = built
                network = self._network
        return network

    # --- pickling: the parameters travel, the network is rebuilt on first use ---------------

    def __getstate__(self) -> dict[str, Any]:
        return {"features": self._features, "weights": self._weights, "device": str(self._device),
                "precision": self._precision, "settings": dict(self._settings), "pair": self._pair}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._features = state["features"]
        self._family, self.model = lightglue_pairings()[self._features]
        self._weights, self._device = state["weights"], resolve_device(state["device"])
        self._precision = state["precision"]
        self._settings, self._pair = dict(state["settings"]), state["pair"]
        self._lock = threading.Lock()
        self._network = None
        self.last_layers = 0

    # --- parameters -----------------------------------------------------------------------
    def getDefaultName(self) -> str:
        return f"cvdeep.LightGlue.{self._features}"

    @property
    def features(self) -> str:
        return self._features

    @property
    def descriptor_size(self) -> int:
        return self._load().input_dim

    def getDepthConfidence(self) -> float:
        return self._load().depth_confidence

    def getWidthConfidence(self) -> float:
        return self._load().width_confidence

    def getFilterThreshold(self) -> float:
        return self._load().filter_threshold

    def getPrecision(self) -> str:
        """The ``precision`` asked for: ``"fp32"``, ``"bf16"`` or ``"auto"``."""
        return self._precision

    def effectivePrecision(self) -> str:
        """What runs here: ``"bf16"`` only where asked for and native on this device, else ``"fp32"``."""
        return effective_precision(self._precision, self._device)

    # --- matching ---------------------------------------------------------------------------
    def setPairInfo(self, kpts0: Any, kpts1: Any, size0: Sequence[int], size1: Sequence[int]) -> None:
        """Keypoints (cv2.KeyPoint sequences or (N, 2) arrays) and (width, height) of the two images
        whose descriptors the next ``match`` call receives, query image first."""
        points0, points1 = _points(kpts0, "kpts0"), _points(kpts1, "kpts1")
        size0, size1 = check_size(size0, "size0"), check_size(size1, "size1")
        self._check_inside(points0, size0, "kpts0", "size0")
        self._check_inside(points1, size1, "kpts1", "size1")
        self._pair = (points0, points1, size0, size1)

    def match(self, queryDescriptors: np.ndarray | None, trainDescriptors: np.ndarray | None) -> list[cv2.DMatch]:
        """cv2.DMatch list (best first) for the pair set with ``setPairInfo``; ``distance`` is
        1 - match probability, so sorting by distance keeps OpenCV's smaller-is-better order.
        ``None`` or empty descriptors on either side (an image without keypoints) give no matches."""
        return match_with_pair_info(self._pair, self.match_features, queryDescriptors, trainDescriptors)

    def match_features(
        self, kp0: Any, d0: np.ndarray | None, size0: Sequence[int], kp1: Any, d1: np.ndarray | None,
        size1: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Match two images' features directly.

        Returns ``(pairs, confidences)``: (K, 2) int64 indices (into kp0, kp1) and (K,) float32 match
        probabilities, in the order of the first image's keypoints. ``None`` or empty descriptors on
        either side (``detectAndCompute`` of an image without keypoints) give no matches.
        """
        size0, size1 = check_size(size0, "size0"), check_size(size1, "size1")
        if no_descriptors(d0) or no_descriptors(d1):
            return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
        points0, points1 = _points(kp0, "kp0"), _points(kp1, "kp1")
        self._check_inside(points0, size0, "kp0", "size0")
        self._check_inside(points1, size1, "kp1", "size1")
        desc0 = self._check_descriptors(d0, len(points0), "d0")
        desc1 = self._check_descriptors(d1, len(points1), "d1")
        self._check_memory(len(points0), len(points1))
        as_tensor = lambda array: torch.from_numpy(np.ascontiguousarray(array)).to(self._device)  # noqa: E731
        network = self._load()
        with network_precision(self._precision, self._device):
            result = network(as_tensor(points0), as_tensor(desc0), torch.tensor(size0, device=self._device),
                             as_tensor(points1), as_tensor(desc1), torch.tensor(size1, device=self._device))
        self.last_layers = result["layers"]
        return result["matches"].cpu().numpy().astype(np.int64), result["scores"].cpu().numpy().astype(np.float32)

    # --- input checks ------------------------------------------------------------------------
    def _check_memory(self, count0: int, count1: int) -> None:
        """Refuse a pair whose (N, M) attention and assignment matrices would not fit ``MAX_PAIR_BYTES``."""
        needed = count0 * count1 * _BYTES_PER_PAIR
        if needed > MAX_PAIR_BYTES:
            largest = int((MAX_PAIR_BYTES / _BYTES_PER_PAIR) ** 0.5)
            raise Error(f"LightGlue on {count0} x {count1} keypoints would need about {needed / 2**30:.1f} GiB for "
                        f"its (N, M) attention and assignment matrices (limit {MAX_PAIR_BYTES / 2**30:.0f} GiB); "
                        f"keep at most about {largest} keypoints per image (e.g. nfeatures=4096, or --nfeatures "
                        "in the CLI); LightGlue was trained with 2048")

    @staticmethod
    def _check_inside(points: np.ndarray, size: tuple[int, int], name: str, size_name: str) -> None:
        """LightGlue's position encoding is trained on keypoints inside the image."""
        if len(points) and (not np.isfinite(points).all() or points.min() < 0
                            or (points[:, 0] > size[0]).any() or (points[:, 1] > size[1]).any()):
            raise Error(f"{name}: keypoints span x in [{points[:, 0].min():g}, {points[:, 0].max():g}], "
                        f"y in [{points[:, 1].min():g}, {points[:, 1].max():g}], outside the image of "
                        f"{size_name}=(width={size[0]}, height={size[1]}); give the size of the image the "
                        "keypoints were detected on, in (width, height) order")

    def _check_descriptors(self, descriptors: Any, count: int, name: str) -> np.ndarray:
        """The matcher's own model's descriptors: float, right dimension, one per keypoint, unit L2 norm."""
        model = self._family.public_name
        expected = f"{model}'s float32 (N, {self.descriptor_size}) L2-normalised descriptors, one row per keypoint"
        if isinstance(descriptors, torch.Tensor):
            descriptors = descriptors.detach().cpu().numpy()
        if not isinstance(descriptors, np.ndarray):
            raise Error(f"{name}: got an object of type {type(descriptors).__name__}; expected {expected}")
        if descriptors.ndim != 2 or not np.issubdtype(descriptors.dtype, np.floating):
            raise Error(f"{name}: got an array of shape {descriptors.shape} and dtype {descriptors.dtype}; "
                        f"expected {expected} (binary or uint8 descriptors come from another detector)")
        if descriptors.shape[1] != self.descriptor_size:
            raise Error(f"{name}: got {descriptors.shape[1]}-dimensional descriptors; LightGlue(features="
                        f"{self._features!r}) takes {expected}; create LightGlue with the features that made them")
        if descriptors.shape[0] != count:
            raise Error(f"{name}: got {descriptors.shape[0]} descriptors for {count} keypoints; expected {expected}")
        norms = np.linalg.norm(descriptors.astype(np.float64), axis=1)
        if count and (not np.isfinite(norms).all() or np.abs(norms - 1.0).max() > _UNIT_NORM_TOLERANCE):
            raise Error(f"{name}: descriptor norms range from {norms.min():.3g} to {norms.max():.3g}; expected "
                        f"{expected} (e.g. SIFT's are not normalised): these come from another model")
        return descriptors.astype(np.float32, copy=False)


def LightGlue_create(*args: Any, **kwargs: Any) -> LightGlue:
    """OpenCV-style factory for :class:`cvdeep.LightGlue` (same parameters)."""
    return LightGlue(*args, **kwargs)
