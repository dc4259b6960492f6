"""The OpenCV ``Feature2D`` contract, implemented once for every cvdeep model.

A subclass only declares which registry family it serves and its parameters; this
class does everything OpenCV users rely on: input checks, masks, list forms, empty
results, KeyPoint conversion, ``get*/set*`` accessors, ``write``/``read``, devices and
thread safety. It knows nothing of any particular network (see docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import os
import threading
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from . import image as imageio
from .errors import Error
from .keypoints import KeypointArrays, from_cv_keypoints, to_cv_keypoints
from .models import build_model, get_model_spec
from .nets.base import Extractor, Features

_RELOADING_PARAMS = ("model", "weights", "device")


def _accessor_suffix(param: str) -> str:
    """``nfeatures`` -> ``NFeatures``, ``nms_radius`` -> ``NmsRadius`` (OpenCV's getter style)."""
    if param == "nfeatures":
        return "NFeatures"
    return "".join(part[:1].upper() + part[1:] for part in param.split("_"))


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as torch understands it."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise Error(f"device: got {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise Error(f"device: got {device!r} but this torch build sees no CUDA device; use 'auto' or 'cpu'")
    return resolved


class Feature2D:
    """Base of every cvdeep detector/descriptor; behaves like ``cv2.Feature2D``.

    Subclasses set ``_family`` (registry family), ``_name`` (OpenCV-style name) and
    ``_params`` (ordered name -> default; the order is the positional order of
    ``create``). Parameters named in the extractor's config are passed to it, with
    ``nfeatures`` passed as ``max_keypoints`` (``<= 0`` meaning no limit).
    """

    _family: str = ""
    _name: str = ""
    _params: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for param in cls._params:
            suffix = _accessor_suffix(param)
            if not hasattr(cls, f"get{suffix}"):
                setattr(cls, f"get{suffix}", lambda self, _p=param: self._values[_p])
            if not hasattr(cls, f"set{suffix}"):
                setattr(cls, f"set{suffix}", lambda self, value, _p=param: self.setParams(**{_p: value}))

    def __init__(self, *args: Any, device: str | torch.device = "auto", **params: Any) -> None:
        names = list(self._params)
        if len(args) > len(names):
            raise Error(f"{self._name}_create takes at most {len(names)} positional arguments ({', '.join(names)})")
        for name, value in zip(names, args):
            if name in params:
                raise Error(f"{self._name}_create: {name!r} given twice")
            params[name] = value
        self._values: dict[str, Any] = dict(self._params)
        self._values["device"] = device
        self._lock = threading.Lock()
        self._extractor: Extractor | None = None
        self.setParams(**params)
        self._load()

    # --- construction and parameters --------------------------------------------------

    @classmethod
    def create(cls, *args: Any, **kwargs: Any) -> "Feature2D":
        """OpenCV-style factory: ``cvdeep.ALIKED.create(nfeatures=2048)``."""
        return cls(*args, **kwargs)

    def getParams(self) -> dict[str, Any]:
        """All parameters as a plain dict (device included)."""
        return dict(self._values)

    def setParams(self, **params: Any) -> None:
        """Set parameters by name; the network is rebuilt when model, weights or device change."""
        accepted = list(self._params) + ["device"]
        reload = False
        for name, value in params.items():
            if name not in accepted:
                raise Error(f"{self._name}: unknown parameter {name!r}; accepted: {', '.join(accepted)}")
            value = self._coerce(name, value)
            if name == "model":
                get_model_spec(value, self._family)
            if name == "device":
                resolve_device(value)
            if name in _RELOADING_PARAMS and self._values.get(name) != value:
                reload = True
            self._values[name] = value
        if reload and self._extractor is not None:
            with self._lock:
                self._extractor = None

    def _coerce(self, name: str, value: Any) -> Any:
        """Value converted to the type of the parameter's default, or ``Error``."""
        default = self._params.get(name)
        number = isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))
        if isinstance(default, bool) and isinstance(value, (bool, np.bool_, int, np.integer)):
            return bool(value)
        if isinstance(default, int) and not isinstance(default, bool) and number and float(value).is_integer():
            return int(value)
        if isinstance(default, float) and number:
            return float(value)
        if isinstance(default, str) and isinstance(value, str):
            return value
        if default is None or name == "device":
            return value
        raise Error(f"{self._name}: parameter {name!r} got {value!r}; expected a {type(default).__name__}")

    def _load(self) -> Extractor:
        extractor = self._extractor
        if extractor is None:
            with self._lock:
                if self._extractor is None:
                    self._extractor = build_model(
                        self._values["model"], self._values.get("weights"), resolve_device(self._values["device"])
                    )
                extractor = self._extractor
        return extractor

    def _config(self, extractor: Extractor) -> dict[str, Any]:
        config = {}
        for name, value in self._values.items():
            if name in _RELOADING_PARAMS:
                continue
            if name == "nfeatures":
                config["max_keypoints"] = value if value > 0 else -1
            else:
                config[name] = value
        unknown = set(config) - set(extractor.default_config)
        if unknown:
            raise RuntimeError(f"{type(extractor).__name__} does not take {sorted(unknown)}")
        return config

    # --- OpenCV's introspection -------------------------------------------------------

    def descriptorSize(self) -> int:
        return int(self._load().descriptor_size)

    def descriptorType(self) -> int:
        return cv2.CV_32F

    def defaultNorm(self) -> int:
        return cv2.NORM_L2

    def getDefaultName(self) -> str:
        return f"Feature2D.{self._name}"

    def empty(self) -> bool:
        return self._extractor is None

    @property
    def device(self) -> torch.device:
        return next(self._load().parameters()).device

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"cvdeep.{self._name}({shown})"

    # --- persistence ------------------------------------------------------------------

    def write(self, fs: cv2.FileStorage | str | os.PathLike, name: str | None = None) -> None:
        """Write the parameters to a file path or an open ``cv2.FileStorage``."""
        if isinstance(fs, (str, os.PathLike)):
            storage = cv2.FileStorage(os.fspath(fs), cv2.FILE_STORAGE_WRITE)
            try:
                self._write_params(storage)
            finally:
                storage.release()
            return
        if name:
            fs.startWriteStruct(name, cv2.FileNode_MAP)
            self._write_params(fs)
            fs.endWriteStruct()
        else:
            self._write_params(fs)

    def _write_params(self, fs: cv2.FileStorage) -> None:
        fs.write("name", self.getDefaultName())
        for key, value in self._values.items():
            if value is None:
                continue
            if isinstance(value, bool):
                value = int(value)
            elif not isinstance(value, (int, float, str)):
                value = str(value)
            fs.write(key, value)

    def read(self, fn: cv2.FileNode | str | os.PathLike) -> None:
        """Read parameters written by ``write`` (a path or a ``cv2.FileNode``)."""
        if isinstance(fn, (str, os.PathLike)):
            storage = cv2.FileStorage(os.fspath(fn), cv2.FILE_STORAGE_READ)
            if not storage.isOpened():
                raise Error(f"read: cannot open {os.fspath(fn)!r} as a cv2.FileStorage")
            try:
                self._read_params(storage.root())
            finally:
                storage.release()
        else:
            self._read_params(fn)

    def _read_params(self, node: cv2.FileNode) -> None:
        name = node.getNode("name")
        if not name.empty() and name.string() != self.getDefaultName():
            raise Error(f"read: the file holds {name.string()!r}, not {self.getDefaultName()!r}")
        values = {}
        for key in list(self._params) + ["device"]:
            child = node.getNode(key)
            if child.empty():
                continue
            values[key] = child.string() if child.isString() else child.real()
        self.setParams(**values)

    # --- the Feature2D calls ----------------------------------------------------------

    def detect(self, image: Any, mask: Any = None) -> Any:
        """``detect(image[, mask]) -> keypoints``; a list of images gives a list of keypoint tuples."""
        if isinstance(image, (list, tuple)):
            masks = self._per_image(mask, len(image), "masks")
            return [self.detect(img, m) for img, m in zip(image, masks)]
        return self._detect_and_compute(image, mask, describe=False)[0]

    def compute(self, image: Any, keypoints: Any, descriptors: Any = None) -> tuple[Any, Any]:
        """``compute(image, keypoints) -> (keypoints, descriptors)``; list forms as in cv2."""
        if isinstance(image, (list, tuple)):
            if not isinstance(keypoints, (list, tuple)) or len(keypoints) != len(image):
                raise Error("compute: with a list of images, keypoints must be a list of the same length")
            results = [self.compute(img, kps) for img, kps in zip(image, keypoints)]
            return [r[0] for r in results], [r[1] for r in results]
        img = imageio.check_image(image)
        kps = imageio.check_keypoints(keypoints)
        if not kps:
            return (), None
        extractor = self._load()
        arrays = from_cv_keypoints(kps)
        tensor = imageio.to_tensor(img, extractor.input_channels, self.device)
        tensor = imageio.pad_to_multiple(tensor, extractor.stride)
        as_tensor = lambda a: torch.from_numpy(a).to(tensor.device)  # noqa: E731
        with torch.inference_mode():
            desc = extractor.describe(tensor, as_tensor(arrays.xy), as_tensor(arrays.size), as_tensor(arrays.angle))
        return kps, np.ascontiguousarray(desc.float().cpu().numpy())

    def detectAndCompute(
        self,
        image: Any,
        mask: Any = None,
        descriptors: Any = None,
        useProvidedKeypoints: bool = False,
        keypoints: Any = None,
    ) -> tuple[tuple[cv2.KeyPoint, ...], np.ndarray | None]:
        """``detectAndCompute(image, mask) -> (keypoints, descriptors)``.

        With ``useProvidedKeypoints=True`` the given ``keypoints=`` are described
        (OpenCV's Python binding cannot pass them; cvdeep can).
        """
        if useProvidedKeypoints:
            if keypoints is None:
                raise Error("detectAndCompute: useProvidedKeypoints=True needs keypoints=<sequence of cv2.KeyPoint>")
            return self.compute(image, keypoints)
        return self._detect_and_compute(image, mask, describe=True)

    # --- internals --------------------------------------------------------------------

    @staticmethod
    def _per_image(values: Any, count: int, what: str) -> Sequence[Any]:
        if values is None:
            return [None] * count
        if not isinstance(values, (list, tuple)) or len(values) != count:
            raise Error(f"{what}: with a list of {count} images, give None or a list of {count} {what}")
        return values

    def _detect_and_compute(self, image: Any, mask: Any, describe: bool) -> tuple[tuple[cv2.KeyPoint, ...], np.ndarray | None]:
        img = imageio.check_image(image)
        user_mask = imageio.check_mask(mask, img.shape)
        extractor = self._load()
        device = self.device
        tensor = imageio.pad_to_multiple(imageio.to_tensor(img, extractor.input_channels, device), extractor.stride)
        valid = torch.zeros((1, 1, *tensor.shape[-2:]), dtype=torch.bool, device=device)
        height, width = img.shape[:2]
        if user_mask is None:
            valid[..., :height, :width] = True
        else:
            valid[0, 0, :height, :width] = torch.from_numpy(user_mask).to(device)
        with torch.inference_mode():
            features = extractor.extract(tensor, valid, **self._config(extractor))
        arrays, desc = self._to_arrays(features, extractor, valid[0, 0])
        if len(arrays) == 0:
            return (), None
        keypoints = to_cv_keypoints(arrays)
        return keypoints, (desc if describe else None)

    @staticmethod
    def _to_arrays(features: Features, extractor: Extractor, valid: torch.Tensor) -> tuple[KeypointArrays, np.ndarray | None]:
        xy = features["keypoints"].float()
        # Safety net for the contract: nothing in the padding or outside the mask.
        height, width = valid.shape
        ij = xy.round().long()
        inside = (ij[:, 0] >= 0) & (ij[:, 0] < width) & (ij[:, 1] >= 0) & (ij[:, 1] < height)
        keep = inside.clone()
        keep[inside] = valid[ij[inside, 1], ij[inside, 0]]
        count = int(keep.sum())

        def column(key: str, fill: float, dtype: np.dtype) -> np.ndarray:
            if key in features:
                return features[key][keep].cpu().numpy().astype(dtype, copy=False)
            return np.full(count, fill, dtype)

        arrays = KeypointArrays(
            xy=xy[keep].cpu().numpy(),
            size=column("sizes", extractor.keypoint_size, np.float32),
            angle=column("angles", -1.0, np.float32),
            response=column("scores", 0.0, np.float32),
            octave=column("octaves", 0, np.int32),
        )
        desc = features.get("descriptors")
        desc_np = None if desc is None else np.ascontiguousarray(desc[keep].float().cpu().numpy())
        return arrays, desc_np


class PatchFeature2D(Feature2D):
    """Feature2D of a patch descriptor: ``compute`` describes any keypoints; ``detect`` and
    ``detectAndCompute`` use a separate detector (``detector=``, default ``cv2.SIFT_create()``).

    The detector is any object with OpenCV's ``detect(image, mask)`` (a cv2 or cvdeep
    Feature2D). Its keypoints are described exactly as returned, in the same order, so
    SIFT's keypoints duplicated for several orientations each get their own descriptor.
    """

    def __init__(self, *args: Any, detector: Any = None, **params: Any) -> None:
        self.setDetector(detector)
        super().__init__(*args, **params)

    def getDetector(self) -> Any:
        return self._detector

    def setDetector(self, detector: Any) -> None:
        """``None`` restores the default ``cv2.SIFT_create()``."""
        if detector is None:
            detector = cv2.SIFT_create()
        if not callable(getattr(detector, "detect", None)):
            raise Error(f"detector: got an object of type {type(detector).__name__}; expected None or a "
                        "cv2/cvdeep Feature2D with detect(image, mask), e.g. cv2.SIFT_create()")
        self._detector = detector

    def _detect_and_compute(self, image: Any, mask: Any, describe: bool) -> tuple[tuple[cv2.KeyPoint, ...], np.ndarray | None]:
        img = imageio.check_image(image)
        user_mask = imageio.check_mask(mask, img.shape)
        detector_mask = None if user_mask is None else user_mask.astype(np.uint8) * 255
        keypoints = tuple(self._detector.detect(img, detector_mask))
        if not describe:
            return keypoints, None
        return self.compute(img, keypoints)
