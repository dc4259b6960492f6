"""cvdeep's OpenCV contracts over exported ONNX files, run by onnxruntime: no torch needed.

    import cv2, cvdeep                           # works in an install without torch
    aliked = cvdeep.ONNXFeature2D("aliked.onnx")   # written by `cvdeep export onnx aliked-n16 aliked.onnx`
    kp, desc = aliked.detectAndCompute(cv2.imread("a.jpg"), None)

``ONNXFeature2D`` reads any detector file of ``cvdeep.export.to_onnx`` (its metadata says the
family, the input convention and the output layout) and gives ``detect``, ``compute``,
``detectAndCompute``, ``descriptorSize``, ``defaultNorm`` and ``empty`` with cvdeep's input
checks (``cvdeep.image``) and KeyPoint conversion (``cvdeep.keypoints``). ``compute`` needs the
family's describe graph (``cvdeep export onnx MODEL OUT.onnx --describe`` writes
``OUT.describe.onnx`` beside ``OUT.onnx``, found automatically). ``ONNXLightGlue`` runs a
LightGlue file with ``cvdeep.LightGlue``'s ``setPairInfo``/``match``.

This module imports neither torch nor any other part of cvdeep that does.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from . import image as imageio
from .errors import Error
from .keypoints import KeypointArrays, from_cv_keypoints, to_cv_keypoints

_UNIT_NORM_TOLERANCE = 1e-2


def _session(path: str | os.PathLike, providers: Sequence[str] | None, threads: int) -> Any:
    """An onnxruntime session of ``path`` (``Error`` when onnxruntime or the file is missing)."""
    try:
        import onnxruntime  # type: ignore[import-untyped]
    except ImportError:
        raise Error("ONNX files run with onnxruntime: pip install onnxruntime") from None
    if not Path(path).is_file():
        raise Error(f"{os.fspath(path)!r}: no such ONNX file; write one with `cvdeep export onnx MODEL OUT.onnx`")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    chosen = list(providers) if providers else ["CPUExecutionProvider"]
    try:
        return onnxruntime.InferenceSession(os.fspath(path), options, providers=chosen)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise Error(f"{os.fspath(path)!r}: onnxruntime cannot load it: {' '.join(str(exc).split())[:300]}") from exc


def _metadata(session: Any, path: str | os.PathLike, kinds: tuple[str, ...]) -> dict[str, Any]:
    """The ``cvdeep.*`` metadata of an exported file, JSON values decoded; ``Error`` when the file is
    not a cvdeep export of one of ``kinds``."""
    raw = session.get_modelmeta().custom_metadata_map
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        if key.startswith("cvdeep."):
            try:
                meta[key[len("cvdeep."):]] = json.loads(value)
            except json.JSONDecodeError:
                meta[key[len("cvdeep."):]] = value
    if meta.get("kind") not in kinds:
        found = f"a cvdeep {meta['kind']} file" if "kind" in meta else "not a file written by cvdeep.export.to_onnx"
        raise Error(f"{os.fspath(path)!r}: {found}; expected a {' or '.join(kinds)} file "
                    "(`cvdeep export onnx MODEL OUT.onnx`)")
    return meta


class ONNXFeature2D:
    """A ``cv2.Feature2D``-compatible detector/descriptor over a cvdeep ONNX file (onnxruntime, no torch).

    ``path``: a detector file of ``cvdeep.export.to_onnx``. ``describe``: its describe graph for
    ``compute`` (default: ``<stem>.describe.onnx`` beside ``path`` when present). ``nfeatures``:
    keep at most this many of the file's keypoints (0: all the file returns; the file's own limit
    is baked in at export). ``providers``: onnxruntime execution providers (default CPU).
    ``threads``: onnxruntime intra-op threads (0: its default).

    Masks: a file exported with ``mask_input=True`` applies the mask before non-maximum
    suppression and ``nfeatures``, as the torch model does; other files drop the keypoints outside
    the mask afterwards (near the mask's edge the torch model may then keep a keypoint that a
    masked-out neighbour suppressed here).
    """

    def __init__(self, path: str | os.PathLike, describe: str | os.PathLike | None = None, *, nfeatures: int = 0,
                 providers: Sequence[str] | None = None, threads: int = 0) -> None:
        if isinstance(nfeatures, bool) or not isinstance(nfeatures, (int, np.integer)) or nfeatures < 0:
            raise Error(f"ONNXFeature2D: nfeatures got {nfeatures!r}; expected an integer >= 0 (0 keeps all)")
        self._args = (os.fspath(path), None if describe is None else os.fspath(describe), int(nfeatures),
                      None if providers is None else tuple(providers), int(threads))
        self._open()

    def _open(self) -> None:
        path, describe, nfeatures, providers, threads = self._args
        self._nfeatures = nfeatures
        self._session = _session(path, providers, threads)
        self._meta = _metadata(self._session, path, ("detector",))
        inputs = {item.name: item for item in self._session.get_inputs()}
        self._has_mask = "mask" in inputs
        shape = inputs["image"].shape
        self._fixed = (shape[2], shape[3]) if all(isinstance(d, int) for d in shape[2:]) else None
        if describe is None:
            sibling = Path(path).with_suffix(".describe.onnx")
            describe = os.fspath(sibling) if sibling.is_file() else None
        self._describe = None
        if describe is not None:
            self._describe = _session(describe, providers, threads)
            other = _metadata(self._describe, describe, ("describer",))
            if other.get("model") != self._meta.get("model"):
                raise Error(f"{describe!r} describes with {other.get('model')!r}, but {path!r} detects with "
                            f"{self._meta.get('model')!r}; export both from the same model")

    # --- pickling: the file paths travel, the sessions are reopened ------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {"args": self._args}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._args = tuple(state["args"])
        self._open()

    # --- OpenCV's introspection ------------------------------------------------------------------

    @property
    def metadata(self) -> dict[str, Any]:
        """The file's ``cvdeep.*`` metadata: family, model, layout, baked detection parameters, ..."""
        return dict(self._meta)

    def descriptorSize(self) -> int:
        return int(self._meta["descriptor_size"])

    def descriptorType(self) -> int:
        return cv2.CV_32F

    def defaultNorm(self) -> int:
        return cv2.NORM_L2

    def empty(self) -> bool:
        return self._session is None

    def getDefaultName(self) -> str:
        return f"Feature2D.ONNX.{self._meta.get('class', 'model')}"

    def getNFeatures(self) -> int:
        return self._nfeatures

    def setNFeatures(self, nfeatures: int) -> None:
        """At most this many keypoints of those the file returns (0: all)."""
        if isinstance(nfeatures, bool) or not isinstance(nfeatures, (int, np.integer)) or nfeatures < 0:
            raise Error(f"setNFeatures: got {nfeatures!r}; expected an integer >= 0 (0 keeps all)")
        self._nfeatures = int(nfeatures)
        self._args = (self._args[0], self._args[1], self._nfeatures, *self._args[3:])

    def __repr__(self) -> str:
        return f"cvdeep.ONNXFeature2D({self._args[0]!r}, model={self._meta.get('model')!r})"

    # --- the Feature2D calls ---------------------------------------------------------------------

    def detect(self, image: Any, mask: Any = None) -> Any:
        """``detect(image[, mask]) -> keypoints``; a list of images gives a list of keypoint tuples."""
        if isinstance(image, (list, tuple)):
            masks = imageio.per_image(mask, len(image), "masks")
            return [self.detect(img, m) for img, m in zip(image, masks)]
        return self._detect(image, mask)[0]

    def compute(self, image: Any, keypoints: Any, descriptors: Any = None) -> tuple[Any, Any]:
        """``compute(image, keypoints) -> (keypoints, descriptors)``; list forms as in cv2."""
        return imageio.compute_contract(self.compute, self._compute_checked, image, keypoints)

    def _compute_checked(self, img: np.ndarray, kps: tuple[cv2.KeyPoint, ...]) -> tuple[Any, Any]:
        if self._describe is None:
            raise Error(f"compute: {self._args[0]!r} has no describe graph; export it with "
                        f"`cvdeep export onnx {self._meta.get('model')} OUT.onnx --describe` (writes OUT.describe.onnx "
                        "beside OUT.onnx) or pass describe=PATH")
        array = self._network_input(img)
        points = from_cv_keypoints(kps).xy.astype(np.float32)
        (desc,) = self._describe.run(None, {"image": array, "keypoints": points})
        return kps, np.ascontiguousarray(desc, dtype=np.float32)

    def detectAndCompute(self, image: Any, mask: Any = None, descriptors: Any = None,
                         useProvidedKeypoints: bool = False, keypoints: Any = None) -> tuple[Any, Any]:
        """``detectAndCompute(image, mask) -> (keypoints, descriptors)``; with
        ``useProvidedKeypoints=True`` the given ``keypoints=`` are described."""
        if useProvidedKeypoints:
            if keypoints is None:
                raise Error("detectAndCompute: useProvidedKeypoints=True needs keypoints=<sequence of cv2.KeyPoint>")
            return self.compute(image, keypoints)
        if isinstance(image, (list, tuple)):
            masks = imageio.per_image(mask, len(image), "masks")
            results = [self._detect(img, m) for img, m in zip(image, masks)]
            return [r[0] for r in results], [r[1] for r in results]
        return self._detect(image, mask)

    # --- internals -------------------------------------------------------------------------------

    def _network_input(self, img: np.ndarray) -> np.ndarray:
        if self._fixed is not None and img.shape[:2] != self._fixed:
            raise Error(f"image: got {img.shape[1]}x{img.shape[0]} pixels but {self._args[0]!r} was exported for "
                        f"{self._fixed[1]}x{self._fixed[0]} only; resize the image or export without input_size")
        return imageio.to_array(img, int(self._meta["channels"]), self._meta.get("gray", "luminance"))

    def _detect(self, image: Any, mask: Any) -> tuple[tuple[cv2.KeyPoint, ...], np.ndarray | None]:
        img = imageio.check_image(image)
        user_mask = imageio.check_mask(mask, img.shape)
        feed = {"image": self._network_input(img)}
        if self._has_mask:
            full = np.ones(img.shape[:2], np.uint8) if user_mask is None else user_mask.astype(np.uint8)
            feed["mask"] = full[None, None]
        outputs = dict(zip((o.name for o in self._session.get_outputs()), self._session.run(None, feed)))
        xy, scores, desc = _parse(outputs, self._meta["layout"], img.shape[1], img.shape[0])
        height, width = img.shape[:2]
        ij = np.rint(xy).astype(np.int64)
        keep = (ij[:, 0] >= 0) & (ij[:, 0] < width) & (ij[:, 1] >= 0) & (ij[:, 1] < height)
        if user_mask is not None:
            keep[keep] = user_mask[ij[keep, 1], ij[keep, 0]]
        if not keep.all():
            xy, scores, desc = xy[keep], scores[keep], desc[keep]
        if self._nfeatures and len(xy) > self._nfeatures:
            xy, scores, desc = xy[: self._nfeatures], scores[: self._nfeatures], desc[: self._nfeatures]
        if len(xy) == 0:
            return (), None
        count = len(xy)
        arrays = KeypointArrays(
            xy=np.ascontiguousarray(xy, np.float32),
            size=np.full(count, float(self._meta.get("keypoint_size", 1.0)), np.float32),
            angle=np.full(count, -1.0, np.float32),
            response=np.ascontiguousarray(scores, np.float32),
            octave=np.zeros(count, np.int32),
        )
        return to_cv_keypoints(arrays), np.ascontiguousarray(desc, np.float32)


def _parse(outputs: dict[str, np.ndarray], layout: str, width: int, height: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keypoints (N, 2) float32 pixels, scores (N,), descriptors (N, D)) from a detector file's outputs."""
    keypoints, scores, descriptors = outputs["keypoints"], outputs["scores"], outputs["descriptors"]
    if layout == "opencv-disk":  # (1, N, 2) int64 pixels, (1, N), (1, N, D)
        return keypoints[0].astype(np.float32), scores.reshape(-1), descriptors[0]
    if layout == "opencv-aliked":  # (N, 2) in [-1, 1]: u = (x + 1) / 2 * W, as cv2.ALIKED reads it
        size = np.array([width, height], np.float32)
        return (keypoints + np.float32(1.0)) * np.float32(0.5) * size, scores.reshape(-1), descriptors
    if layout == "pixels":
        return keypoints.astype(np.float32), scores.reshape(-1), descriptors
    raise Error(f"unknown cvdeep ONNX layout {layout!r}; this cvdeep reads opencv-aliked, opencv-disk and pixels")


# --- LightGlue ---------------------------------------------------------------------------------


def _points(keypoints: Any, name: str) -> np.ndarray:
    """cv2.KeyPoint sequence or (N, 2) array -> (N, 2) float32 (x, y)."""
    if isinstance(keypoints, np.ndarray):
        if keypoints.ndim != 2 or keypoints.shape[1] != 2 or not np.issubdtype(keypoints.dtype, np.number):
            raise Error(f"{name}: got an array of shape {keypoints.shape} and dtype {keypoints.dtype}; expected a "
                        "sequence of cv2.KeyPoint or an (N, 2) array of (x, y) pixels")
        return keypoints.astype(np.float32)
    kps = imageio.check_keypoints(keypoints, name)
    return from_cv_keypoints(kps).xy.astype(np.float32)


def _size(size: Any, name: str) -> np.ndarray:
    """(width, height), two positive integers (cv2.Size order) -> float32 array."""
    return np.array(imageio.check_size(size, name), np.float32)


def normalize_keypoints(points: np.ndarray, size: np.ndarray) -> np.ndarray:
    """LightGlue's normalisation of (N, 2) pixels of an image of ``size`` (width, height): centred on
    the image, divided by half its longer side; what an exported LightGlue file takes as ``kpts``."""
    return ((points - size / 2) / (size.max() / 2)).astype(np.float32)


def match_with_pair_info(pair: tuple[Any, Any, Any, Any] | None, match_features: Callable[..., Any],
                         query: Any, train: Any) -> list[cv2.DMatch]:
    """OpenCV's ``match(query, train)`` of a LightGlue matcher: ``pair`` (kpts0, kpts1, size0, size1)
    is what ``setPairInfo`` stored, ``match_features`` the matcher's; no descriptors on either side
    give no matches. Shared by ``ONNXLightGlue`` and the torch ``cvdeep.LightGlue``; here, as this
    module imports no torch."""
    if imageio.no_descriptors(query) or imageio.no_descriptors(train):
        return []
    if pair is None:
        raise Error("match: call setPairInfo(kpts0, kpts1, size0, size1) first; LightGlue needs the keypoints "
                    "and image sizes beside the descriptors")
    points0, points1, size0, size1 = pair
    pairs, confidences = match_features(points0, query, size0, points1, train, size1)
    order = np.argsort(-confidences, kind="stable")
    return [cv2.DMatch(int(i), int(j), float(1.0 - c)) for (i, j), c in zip(pairs[order], confidences[order])]


class ONNXLightGlue:
    """``cvdeep.LightGlue``'s ``setPairInfo``/``match``/``match_features`` over a LightGlue ONNX file
    (onnxruntime, no torch). The file runs every layer on every point (no early exit, no pruning)
    and keeps mutual best matches above the ``filter_threshold`` baked in at export."""

    def __init__(self, path: str | os.PathLike, *, providers: Sequence[str] | None = None, threads: int = 0) -> None:
        self._path = os.fspath(path)
        self._args = (self._path, None if providers is None else tuple(providers), int(threads))
        self._open()
        self._pair: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def _open(self) -> None:
        path, providers, threads = self._args
        self._session = _session(path, providers, threads)
        self._meta = _metadata(self._session, path, ("matcher",))

    # --- pickling: the file path travels, the session is reopened ------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {"args": self._args, "pair": self._pair}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._args = tuple(state["args"])
        self._path = self._args[0]
        self._pair = state["pair"]
        self._open()

    @property
    def descriptor_size(self) -> int:
        return int(self._meta["descriptor_size"])

    def getDefaultName(self) -> str:
        return f"cvdeep.ONNXLightGlue.{self._meta.get('model')}"

    def setPairInfo(self, kpts0: Any, kpts1: Any, size0: Sequence[int], size1: Sequence[int]) -> None:
        """Keypoints and (width, height) of the two images whose descriptors ``match`` receives next."""
        self._pair = (_points(kpts0, "kpts0"), _points(kpts1, "kpts1"), _size(size0, "size0"), _size(size1, "size1"))

    def match(self, queryDescriptors: np.ndarray | None, trainDescriptors: np.ndarray | None) -> list[cv2.DMatch]:
        """cv2.DMatch list, best first; ``distance`` is 1 - match probability; ``None`` or empty
        descriptors on either side give no matches."""
        return match_with_pair_info(self._pair, self.match_features, queryDescriptors, trainDescriptors)

    def match_features(self, kp0: Any, d0: np.ndarray | None, size0: Sequence[int] | np.ndarray, kp1: Any,
                       d1: np.ndarray | None, size1: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pairs (K, 2) int64, confidences (K,) float32) in the order of the first image's keypoints."""
        wh0, wh1 = _size(size0, "size0"), _size(size1, "size1")
        if imageio.no_descriptors(d0) or imageio.no_descriptors(d1):  # an image without keypoints: no matches
            return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
        points0, points1 = _points(kp0, "kp0"), _points(kp1, "kp1")
        desc0 = self._check_descriptors(d0, len(points0), "d0")
        desc1 = self._check_descriptors(d1, len(points1), "d1")
        if len(points0) == 0 or len(points1) == 0:
            return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
        feed = {"kpts0": normalize_keypoints(points0, wh0)[None], "kpts1": normalize_keypoints(points1, wh1)[None],
                "desc0": desc0[None], "desc1": desc1[None]}
        matches, scores = self._session.run(["matches0", "mscores0"], feed)
        return matches.astype(np.int64), scores.astype(np.float32)

    def _check_descriptors(self, descriptors: Any, count: int, name: str) -> np.ndarray:
        expected = f"float32 (N, {self.descriptor_size}) L2-normalised descriptors, one row per keypoint"
        if (not isinstance(descriptors, np.ndarray) or descriptors.ndim != 2
                or not np.issubdtype(descriptors.dtype, np.floating)):
            what = (f"an array of shape {descriptors.shape} and dtype {descriptors.dtype}"
                    if isinstance(descriptors, np.ndarray) else f"an object of type {type(descriptors).__name__}")
            raise Error(f"{name}: got {what}; expected {expected}")
        if descriptors.shape != (count, self.descriptor_size):
            raise Error(f"{name}: got shape {descriptors.shape} for {count} keypoints; expected {expected} "
                        f"({self._meta.get('model')})")
        norms = np.linalg.norm(descriptors.astype(np.float64), axis=1)
        if count and (not np.isfinite(norms).all() or np.abs(norms - 1.0).max() > _UNIT_NORM_TOLERANCE):
            raise Error(f"{name}: descriptor norms range from {norms.min():.3g} to {norms.max():.3g}; "
                        f"expected {expected}")
        return np.ascontiguousarray(descriptors, np.float32)


__all__ = ["ONNXFeature2D", "ONNXLightGlue", "normalize_keypoints"]
