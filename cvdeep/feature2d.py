"""The OpenCV ``Feature2D`` contract, implemented once for every cvdeep model.

A subclass only declares which registry family it serves and its parameters; this
class does everything OpenCV users rely on: input checks, masks, list forms, empty
results, KeyPoint conversion, ``get*/set*`` accessors, ``write``/``read``, devices and
thread safety. It knows nothing of any particular network (see docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, cast

import cv2
import numpy as np
import torch

from . import batching
from . import image as imageio
from .declaration import Config, InputConvention, ModelFamily, describe_accepted, translate_renamed
from .errors import Error
from .keypoints import KeypointArrays, from_cv_keypoints, to_cv_keypoints
from .models import build_model, get_model, preferred_model
from .nets.bands import LARGE_IMAGE_PIXELS, extraction_allocation
from .nets.base import Extractor, Features, on_valid_pixels
from .precision import effective_precision, network_precision

_LOADING = ("model", "weights", "device")
"""Parameters that choose the network rather than configure it: changing one rebuilds it."""


def accessor_suffix(param: str) -> str:
    """``nfeatures`` -> ``NFeatures``, ``nms_radius`` -> ``NmsRadius`` (OpenCV's getter style)."""
    if param == "nfeatures":
        return "NFeatures"
    return "".join(part[:1].upper() + part[1:] for part in param.split("_"))


_OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "not enough memory", "insufficient memory",
                  "failed to allocate")
"""Words of the allocation failures of torch (CPU and CUDA), NumPy and OpenCV."""

ACCESSOR_ALIASES = {"MaxFeatures": "nfeatures"}
"""OpenCV names for the same parameter (``cv2.ORB``'s ``getMaxFeatures``/``setMaxFeatures``)."""


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


def _getter(name: str) -> Any:
    def get(self: Feature2D) -> Any:
        return self.getParams()[name]

    get.__doc__ = f"The ``{name}`` parameter."
    return get


def _setter(name: str) -> Any:
    def set_(self: Feature2D, value: Any) -> None:
        self.setParams(**{name: value})

    set_.__doc__ = f"Set the ``{name}`` parameter (``cvdeep.Error`` when out of range)."
    return set_


def constructor_signature(family: ModelFamily, extra: tuple[inspect.Parameter, ...] = ()) -> inspect.Signature:
    """``(nfeatures=..., ..., *, model=..., weights=None, device='auto')``: the config fields in
    declaration order (positional, as OpenCV's factories), then the keyword-only choices."""
    positional = [
        inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default,
                          annotation=type(f.default).__name__)
        for f in family.config.fields()
    ]
    keyword = [
        inspect.Parameter("model", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="str | None"),
        inspect.Parameter("weights", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation="str | os.PathLike | None"),
        inspect.Parameter("device", inspect.Parameter.KEYWORD_ONLY, default="auto", annotation="str | torch.device"),
        *extra,
    ]
    return inspect.Signature(positional + keyword)


def parameter_docs(family: ModelFamily) -> str:
    """The ``Parameters`` section of a public class's docstring, from the declaration."""
    lines = ["Parameters (positional in this order, as OpenCV's factories):"]
    for spec in family.config.fields():
        lines.append(f"    {spec.name} = {spec.default!r}: {spec.metadata.get('doc', '')} ({describe_accepted(spec)})")
    names = ", ".join(repr(v.name) for v in family.variants)
    lines.append(f"    model = None (keyword only): the registry name, one of {names}; None takes the first whose "
                 "weights are here (official first), else the one cvdeep trained and ships")
    lines.append("    weights = None (keyword only): a local checkpoint path instead of the model's registered file")
    lines.append("    device = 'auto' (keyword only): 'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'")
    for old, rename in family.config.renamed.items():
        lines.append(f"    {old}: deprecated name of {rename.new} (warns; removed in a later release)")
    return "\n".join(lines)


class Feature2D:
    """Base of every cvdeep detector/descriptor; behaves like ``cv2.Feature2D``.

    A public subclass is derived from one ``ModelFamily`` declaration (see
    ``cvdeep.features``): its typed config gives the constructor's parameters, accessors
    and checks; the family's variants the accepted ``model`` names. The network gets the
    config object itself (``Extractor.extract(image, valid, config)``).

    Instances pickle and deep-copy by their parameters: the network is rebuilt (weights
    reloaded) lazily on first use on the other side.
    """

    family: ClassVar[ModelFamily]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        family = cls.__dict__.get("family")
        if family is None:
            return
        names = [*family.config.names(), *_LOADING]
        for name in names:
            suffix = accessor_suffix(name)
            if f"get{suffix}" not in cls.__dict__:
                setattr(cls, f"get{suffix}", _getter(name))
            if f"set{suffix}" not in cls.__dict__:
                setattr(cls, f"set{suffix}", _setter(name))
        for alias, name in ACCESSOR_ALIASES.items():
            if name in names:
                setattr(cls, f"get{alias}", _getter(name))
                setattr(cls, f"set{alias}", _setter(name))

    def __init__(self, *args: Any, model: str | None = None, weights: str | os.PathLike | None = None,
                 device: str | torch.device = "auto", **params: Any) -> None:
        owner = f"{self.family.public_name}_create"
        names = self.family.config.names()
        if len(args) > len(names):
            raise Error(f"{owner} takes at most {len(names)} positional arguments ({', '.join(names)}); "
                        "model, weights and device are keyword-only")
        for name, value in zip(names, args):
            if name in params:
                raise Error(f"{owner}: {name!r} given twice")
            params[name] = value
        self._config: Config = self.family.config()
        self._values: dict[str, Any] = {"model": None, "weights": None, "device": "auto"}
        self._lock = threading.Lock()
        self._extractor: Extractor | None = None
        self._batch_size, self._mixed_sizes = 1, "group"  # list inputs: see setBatchSize
        self.setParams(model=model or preferred_model(self.family, weights), weights=weights, device=device, **params)
        self._load()

    # --- construction and parameters --------------------------------------------------

    @classmethod
    def create(cls, *args: Any, **kwargs: Any) -> Feature2D:
        """OpenCV-style factory: ``cvdeep.ALIKED.create(nfeatures=2048)``."""
        return cls(*args, **kwargs)

    @property
    def config(self) -> Config:
        """The typed parameters the network receives (a copy: change them with ``setParams``)."""
        return dataclasses.replace(self._config)

    def getParams(self) -> dict[str, Any]:
        """All parameters as a plain dict: the config fields, then model, weights and device."""
        return {**dataclasses.asdict(self._config), **self._values}

    def setParams(self, **params: Any) -> None:
        """Set parameters by name (``cvdeep.Error`` for unknown names or values out of range);
        the network is rebuilt when model, weights or device change."""
        owner = self.family.public_name
        params = translate_renamed(self.family.config, owner, params)
        loading = {name: params.pop(name) for name in _LOADING if name in params}
        if isinstance(loading.get("weights"), str) and loading["weights"] in self._model_names():
            loading["model"], loading["weights"] = loading["weights"], None  # weights="superpoint-open": a model name
        if "model" in loading:
            model = loading["model"]
            if not isinstance(model, str):
                raise Error(f"{owner}: model got {model!r}; expected one of {', '.join(self._model_names())}")
            get_model(model, self.family.name)
        if "device" in loading:
            resolve_device(loading["device"])
        if loading.get("weights") is not None and not isinstance(loading["weights"], (str, os.PathLike)):
            raise Error(f"{owner}: weights got {loading['weights']!r}; expected None or a file path")
        config = self._config.replace(owner, **params)  # validates before anything changes
        reload = any(self._values.get(name) != value for name, value in loading.items())
        self._values.update(loading)
        self._config = config
        if self._requested_precision != "fp32" and ("precision" in params or "device" in loading):
            self.effectivePrecision()  # warns now, not at the first image, when bf16 will not run here
        if reload and self._extractor is not None:
            with self._lock:
                self._extractor = None

    def _model_names(self) -> list[str]:
        return [variant.name for variant in self.family.variants]

    def _load(self) -> Extractor:
        extractor = self._extractor
        if extractor is None:
            with self._lock:
                if self._extractor is None:
                    self._extractor = cast(Extractor, build_model(
                        self._values["model"], self._values["weights"], resolve_device(self._values["device"])
                    ))
                extractor = self._extractor
        return extractor

    # --- pickling: parameters travel, the network is rebuilt on first use ----------------

    def __getstate__(self) -> dict[str, Any]:
        return {"values": dict(self._values), "config": dataclasses.asdict(self._config),
                "batch": (self._batch_size, self._mixed_sizes)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._values = dict(state["values"])
        self._config = self.family.config(**state["config"])
        self._batch_size, self._mixed_sizes = state.get("batch", (1, "group"))
        self._lock = threading.Lock()
        self._extractor = None

    # --- OpenCV's introspection -------------------------------------------------------

    def descriptorSize(self) -> int:
        return int(self._load().output_size(self._config))

    def descriptorType(self) -> int:
        return cv2.CV_32F

    def defaultNorm(self) -> int:
        return cv2.NORM_L2

    def getDefaultName(self) -> str:
        return f"Feature2D.{self.family.public_name}"

    def empty(self) -> bool:
        return self._extractor is None

    @property
    def device(self) -> torch.device:
        return next(self._load().parameters()).device

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.getParams().items())
        return f"cvdeep.{self.family.public_name}({shown})"

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
        for key, value in self.getParams().items():
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
        flags = {spec.name for spec in self.family.config.fields() if isinstance(spec.default, bool)}
        for key in [*self.family.config.names(), *_LOADING]:
            child = node.getNode(key)
            if child.empty():
                continue
            values[key] = child.string() if child.isString() else child.real()
            if key in flags and values[key] in (0, 1):  # written as 0/1, as OpenCV writes its flags
                values[key] = bool(values[key])
        self.setParams(**values)

    # --- the Feature2D calls ----------------------------------------------------------

    def detect(self, image: Any, mask: Any = None) -> Any:
        """``detect(image[, mask]) -> keypoints``; a list of images gives a list of keypoint tuples."""
        if isinstance(image, (list, tuple)):
            masks = imageio.per_image(mask, len(image), "masks")
            return [kps for kps, _ in self._detect_and_compute_list(image, masks, describe=False)]
        return self._detect_and_compute(image, mask, describe=False)[0]

    def compute(self, image: Any, keypoints: Any, descriptors: Any = None) -> tuple[Any, Any]:
        """``compute(image, keypoints) -> (keypoints, descriptors)``; list forms as in cv2."""
        return imageio.compute_contract(self.compute, self._compute_checked, image, keypoints)

    def _compute_checked(self, img: np.ndarray, kps: tuple[cv2.KeyPoint, ...]) -> tuple[Any, Any]:
        minimum = self._input().min_size
        if min(img.shape[:2]) < minimum:
            raise Error(f"{self.family.public_name}.compute: the image is {img.shape[1]}x{img.shape[0]} pixels; the "
                        f"network needs at least {minimum}x{minimum} to describe anything")
        extractor = self._load()
        arrays = from_cv_keypoints(kps)
        with self._memory_guard(img.shape):
            tensor = self._network_input(img)
            as_tensor = lambda a: torch.from_numpy(a).to(tensor.device)  # noqa: E731
            with torch.inference_mode(), self._precision(tensor.device):
                desc, used = extractor.describe_keypoints(
                    tensor, as_tensor(arrays.xy), as_tensor(arrays.size), as_tensor(arrays.angle),
                    as_tensor(arrays.octave), self._config)
        if used is not None:  # keypoints given without an angle (-1) come back with the one estimated
            angles = used.float().cpu().numpy()
            kps = tuple(kp if kp.angle != -1 else cv2.KeyPoint(kp.pt[0], kp.pt[1], kp.size, float(angle), kp.response,
                                                                kp.octave, kp.class_id)
                        for kp, angle in zip(kps, angles))
        return kps, np.ascontiguousarray(desc.float().cpu().numpy())

    def detectAndCompute(
        self,
        image: Any,
        mask: Any = None,
        descriptors: Any = None,
        useProvidedKeypoints: bool = False,
        keypoints: Any = None,
    ) -> tuple[Any, Any]:
        """``detectAndCompute(image, mask) -> (keypoints, descriptors)``.

        A list of images (and None or a list of masks) gives a list of keypoint tuples and a list of
        descriptor arrays, the network run on batches of ``getBatchSize()`` images.
        With ``useProvidedKeypoints=True`` the given ``keypoints=`` are described
        (OpenCV's Python binding cannot pass them; cvdeep can).
        """
        if useProvidedKeypoints:
            if keypoints is None:
                raise Error("detectAndCompute: useProvidedKeypoints=True needs keypoints=<sequence of cv2.KeyPoint>")
            return self.compute(image, keypoints)
        if isinstance(image, (list, tuple)):
            results = self._detect_and_compute_list(image, imageio.per_image(mask, len(image), "masks"), describe=True)
            return [r[0] for r in results], [r[1] for r in results]
        return self._detect_and_compute(image, mask, describe=True)

    # --- batched inference over lists of images (cvdeep/batching.py) -----------------------

    def setBatchSize(self, batch_size: int, mixed_sizes: str = "group") -> None:
        """Run the network on up to ``batch_size`` images at once for list inputs of ``detect`` and
        ``detectAndCompute`` (1, the default: one at a time). ``mixed_sizes="group"`` batches only
        images of one (padded) size, with the one-by-one results; ``"pad"`` also batches different sizes,
        padded to the largest of the batch (the networks then see the padded canvas: results differ a
        little from one by one)."""
        self._batch_size, self._mixed_sizes = batching.check_batch_size(batch_size, mixed_sizes)

    def getBatchSize(self) -> int:
        return self._batch_size

    def _detect_and_compute_list(self, images: Sequence[Any], masks: Sequence[Any], describe: bool) -> list[Any]:
        if type(self)._detect_and_compute is not Feature2D._detect_and_compute:  # patch descriptors: their own path
            return [self._detect_and_compute(img, m, describe) for img, m in zip(images, masks)]
        return batching.detect_and_compute_list(self, images, masks, describe)

    # --- internals --------------------------------------------------------------------

    def _input(self) -> InputConvention:
        """The input convention of the loaded model (its variant's, else its family's)."""
        return self.family.input_of(self._values["model"])

    def _precision(self, device: torch.device) -> contextlib.AbstractContextManager[str]:
        """Where the network runs: the config's ``precision`` on ``device`` (``cvdeep.precision``), the
        one place it is applied, around ``extract``, ``extract_batch`` and ``describe_keypoints``."""
        return network_precision(self._requested_precision, device)

    def effectivePrecision(self) -> str:
        """The precision the network runs in here: ``getPrecision()``, except ``"fp32"`` where bf16 was
        asked for and this device has no native bf16 (``cvdeep.precision.effective_precision``)."""
        return effective_precision(self._requested_precision, resolve_device(self._values["device"]))

    @property
    def _requested_precision(self) -> str:
        return str(getattr(self._config, "precision", "fp32"))  # every detector and descriptor config has one

    def _network_input(self, image: np.ndarray) -> torch.Tensor:
        """The image as the declared input convention says: (1, C, H', W') float in [0, 1], padded."""
        convention = self._input()
        tensor = imageio.to_tensor(image, convention.channels, self.device, gray=convention.gray)
        return imageio.pad_to_multiple(tensor, convention.stride)

    def _valid_pixels(self, image: np.ndarray, user_mask: np.ndarray | None) -> np.ndarray:
        """(H, W) bool of the real image: inside the user's mask, at least ``border`` pixels from
        the image edge (when the config has one) and, unless ``keep_flat``, not flat (see
        ``cvdeep.image.flat_pixels``)."""
        height, width = image.shape[:2]
        valid = np.ones((height, width), bool) if user_mask is None else user_mask.copy()
        border = int(getattr(self._config, "border", 0))
        if border > 0:
            inner = np.zeros_like(valid)
            inner[border : height - border, border : width - border] = True
            valid &= inner
        if not getattr(self._config, "keep_flat", True) and valid.any():
            valid &= ~imageio.flat_pixels(image)
        return valid

    def _valid_mask(self, valid_pixels: np.ndarray, padded: tuple[int, int]) -> torch.Tensor:
        """(1, 1, H', W') bool on the padded network input: the valid pixels, False in the padding."""
        height, width = valid_pixels.shape
        valid = torch.zeros((1, 1, *padded), dtype=torch.bool, device=self.device)
        valid[0, 0, :height, :width] = torch.from_numpy(valid_pixels).to(self.device)
        return valid

    @contextlib.contextmanager
    def _memory_guard(self, shape: tuple[int, ...]) -> Iterator[None]:
        """Turn an allocation failure of torch, NumPy or OpenCV into ``cvdeep.Error`` saying what to do;
        the work runs under ``nets.bands.extraction_allocation`` (how glibc serves its buffers)."""
        try:
            large = getattr(self.family.network, "large_image_pixels", LARGE_IMAGE_PIXELS)  # patch nets: the default
            with extraction_allocation(shape[0] * shape[1], large):
                yield
        except (RuntimeError, MemoryError, cv2.error) as exc:
            text = " ".join(str(exc).split())
            if not isinstance(exc, MemoryError) and not any(sign in text.lower() for sign in _OUT_OF_MEMORY):
                raise
            raise Error(
                f"{self.family.public_name}: not enough memory on {resolve_device(self._values['device'])} for a "
                f"{shape[1]}x{shape[0]} image "
                f"({text[:200]}); resize the image (cv2.resize) or free memory"
            ) from exc

    def _detect_and_compute(self, image: Any, mask: Any,
                            describe: bool) -> tuple[tuple[cv2.KeyPoint, ...], np.ndarray | None]:
        img = imageio.check_image(image)
        user_mask = imageio.check_mask(mask, img.shape)
        if min(img.shape[:2]) < self._input().min_size:
            return (), None  # smaller than the network can take: no feature fits, as cv2.SIFT on a tiny image
        with self._memory_guard(img.shape):
            valid_pixels = self._valid_pixels(img, user_mask)
        if not valid_pixels.any():
            return (), None  # nothing can be found: the network need not run
        extractor = self._load()
        with self._memory_guard(img.shape):
            tensor = self._network_input(img)
            valid = self._valid_mask(valid_pixels, (tensor.shape[-2], tensor.shape[-1]))
            with torch.inference_mode(), self._precision(tensor.device):
                features = extractor.extract(tensor, valid, self._config)
        arrays, desc = self._to_arrays(features, extractor, valid[0, 0])
        if len(arrays) == 0:
            return (), None
        keypoints = to_cv_keypoints(arrays)
        return keypoints, (desc if describe else None)

    @staticmethod
    def _to_arrays(features: Features, extractor: Extractor,
                   valid: torch.Tensor) -> tuple[KeypointArrays, np.ndarray | None]:
        xy = features["keypoints"].float()
        # Safety net for the contract: nothing in the padding or outside the mask (the extractors
        # already drop those before choosing nfeatures; tests/test_robustness.py checks it).
        keep = on_valid_pixels(xy, valid)
        count = int(keep.sum())

        def column(key: str, fill: float, dtype: type[np.generic]) -> np.ndarray:
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
        self._default_detector = detector is None
        if detector is None:
            detector = cv2.SIFT.create()
        if not callable(getattr(detector, "detect", None)):
            raise Error(f"detector: got an object of type {type(detector).__name__}; expected None or a "
                        "cv2/cvdeep Feature2D with detect(image, mask), e.g. cv2.SIFT_create()")
        self._detector = detector

    def __getstate__(self) -> dict[str, Any]:
        """cv2 objects do not pickle: the default SIFT detector travels as None (rebuilt on the other
        side); a cvdeep detector travels by its parameters; another cv2 detector cannot travel."""
        state = super().__getstate__()
        if self._default_detector:
            state["detector"] = None
        elif isinstance(self._detector, Feature2D):
            state["detector"] = self._detector
        else:
            raise Error(
                f"{self.family.public_name}: its detector {type(self._detector).__name__} (an OpenCV object) cannot be "
                "pickled; pass detector=None (cv2.SIFT with default parameters is rebuilt on the other side) or a "
                "cvdeep detector"
            )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.setDetector(state["detector"])

    def _detect_and_compute(self, image: Any, mask: Any,
                            describe: bool) -> tuple[tuple[cv2.KeyPoint, ...], np.ndarray | None]:
        img = imageio.check_image(image)
        user_mask = imageio.check_mask(mask, img.shape)
        detector_mask = None if user_mask is None else user_mask.astype(np.uint8) * 255
        keypoints = tuple(self._detector.detect(img, detector_mask))
        if not describe:
            return keypoints, None
        return self.compute(img, keypoints)


class DetectorOnlyFeature2D(Feature2D):
    """Feature2D of a detector that computes no descriptors (Key.Net): ``compute`` and
    ``detectAndCompute`` raise ``cvdeep.Error`` saying how to describe its keypoints."""

    def compute(self, image: Any, keypoints: Any, descriptors: Any = None) -> tuple[Any, Any]:
        raise Error(
            f"{self.family.public_name} is a detector only: it computes no descriptors. Describe its keypoints "
            "with a patch descriptor (e.g. cvdeep.HyNet_create() or cvdeep.HardNet_create()): "
            "descriptor.compute(image, detector.detect(image))"
        )

    def detectAndCompute(self, image: Any, mask: Any = None, descriptors: Any = None,
                         useProvidedKeypoints: bool = False, keypoints: Any = None) -> tuple[Any, Any]:
        return self.compute(image, keypoints)

    def descriptorSize(self) -> int:
        return 0
