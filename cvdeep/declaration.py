"""How a model is declared: once, beside its network, as plain data.

Each network module in ``cvdeep/nets/`` ends with one ``ModelFamily``: its public class
name, the typed parameters users set (a dataclass whose fields carry defaults, ranges
and a one-line doc), the registry names it serves (``Variant``: weights with provenance
and licence, network arguments, LightGlue pairing) and its input convention. Everything
else is derived from it: the registry (``cvdeep.models``), the public ``Feature2D``
classes and ``<Name>_create`` factories (``cvdeep.features``, typed in
``cvdeep/features.pyi``), the command line and the documentation tables.

This module knows nothing of OpenCV or of any particular network.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .errors import Error
from .precision import PRECISIONS
from .weights import WeightSpec

# --- parameters ----------------------------------------------------------------------------


def param(
    default: Any,
    doc: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A user-visible parameter: its default, a one-line doc, and the accepted range.

    ``low``/``high`` are inclusive bounds for numbers; ``choices`` lists the accepted values.
    """
    return field(default=default, metadata={"doc": doc, "low": low, "high": high, "choices": choices})


@dataclass(frozen=True)
class Renamed:
    """An old parameter name that still works for one release, with a ``DeprecationWarning``."""

    new: str
    convert: Callable[[Any], Any] | None = None  # old value -> new value (e.g. a window size -> a radius)
    since: str = "0.2"


@dataclass
class Config:
    """Base of every model's parameters. Subclasses are dataclasses whose fields are ``param``s.

    The field order is the positional order of the public constructor, as in OpenCV
    (``nfeatures`` first for detectors).
    """

    renamed: ClassVar[Mapping[str, Renamed]] = {}

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in cls.fields())

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {f.name: f.default for f in cls.fields()}

    def replace(self, owner: str, **changes: Any) -> Config:
        """A validated copy with ``changes`` applied; old names are translated with a warning."""
        changes = translate_renamed(type(self), owner, changes)
        unknown = [name for name in changes if name not in self.names()]
        if unknown:
            raise Error(f"{owner}: unknown parameter {unknown[0]!r}; accepted: {', '.join(self.names())}")
        values = dataclasses.asdict(self)
        for name, value in changes.items():
            values[name] = coerce(owner, _field(type(self), name), value)
        return type(self)(**values)


def translate_renamed(config: type[Config], owner: str, values: dict[str, Any]) -> dict[str, Any]:
    """Map deprecated names to their new ones (``DeprecationWarning``); both at once is an error."""
    if not any(name in config.renamed for name in values):
        return values
    translated = dict(values)
    for old, rename in config.renamed.items():
        if old not in translated:
            continue
        if rename.new in translated:
            raise Error(f"{owner}: {old!r} is the old name of {rename.new!r}; give only {rename.new!r}")
        value = translated.pop(old)
        warnings.warn(
            f"{owner}: parameter {old!r} is deprecated since cvdeep {rename.since}; use {rename.new!r}",
            DeprecationWarning,
            stacklevel=4,
        )
        translated[rename.new] = rename.convert(value) if rename.convert else value
    return translated


def _field(config: type[Config], name: str) -> dataclasses.Field:
    for item in dataclasses.fields(config):
        if item.name == name:
            return item
    raise KeyError(name)


def _type_name(kind: type) -> str:
    return {int: "an integer", float: "a number", bool: "True or False", str: "a string"}.get(kind, kind.__name__)


def coerce(owner: str, spec: dataclasses.Field, value: Any) -> Any:
    """``value`` converted to the parameter's type and checked against its range, or ``Error``."""
    default = spec.default
    meta = spec.metadata
    accepted = describe_accepted(spec)
    kind = type(default)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # NumPy / torch scalars
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is bool:
        if not isinstance(value, (bool, int)) or (isinstance(value, int) and value not in (0, 1)):
            raise Error(f"{owner}: parameter {spec.name!r} got {value!r}; expected {accepted}")
        value = bool(value)
    elif kind is int:
        if not number or not math.isfinite(float(value)) or not float(value).is_integer():
            raise Error(f"{owner}: parameter {spec.name!r} got {value!r}; expected {accepted}")
        value = int(value)
    elif kind is float:
        if not number or math.isnan(float(value)):
            raise Error(f"{owner}: parameter {spec.name!r} got {value!r}; expected {accepted}")
        value = float(value)
    elif kind is str:
        if not isinstance(value, str):
            raise Error(f"{owner}: parameter {spec.name!r} got {value!r}; expected {accepted}")
    choices, low, high = meta.get("choices"), meta.get("low"), meta.get("high")
    if choices is not None and value not in choices:
        raise Error(f"{owner}: parameter {spec.name!r} got {value!r}; expected {accepted}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise Error(f"{owner}: parameter {spec.name!r} got {value!r}; expected {accepted}")
    return value


def describe_accepted(spec: dataclasses.Field) -> str:
    """'an integer >= 0', 'one of 'hard', 'soft'', ... for error messages and docs."""
    meta = spec.metadata
    if meta.get("choices") is not None:
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    text = _type_name(type(spec.default))
    low, high = meta.get("low"), meta.get("high")
    if low is not None and high is not None:
        return f"{text} in [{low}, {high}]"
    if low is not None:
        return f"{text} >= {low}"
    if high is not None:
        return f"{text} <= {high}"
    return text


# --- the common vocabulary -----------------------------------------------------------------


def precision_param(default: str = "fp32") -> Any:
    """The ``precision`` of every detector and descriptor (``cvdeep.precision``), read by the Feature2D
    layer around the network's calls, never by the network; a model whose bf16 accuracy was measured
    to hold declares ``precision_param("auto")``."""
    return param(default, "arithmetic of the network: 'fp32'; 'bf16': convolutions and matrix products in "
                 "bfloat16 where the CPU (AVX512-BF16, AMX-BF16) or GPU has it natively, else fp32 with a "
                 "warning; 'auto': bf16 where native, else fp32 silently; maps, NMS, refinement and "
                 "descriptors stay float32", choices=PRECISIONS)


@dataclass
class DetectorConfig(Config):
    """What every detector accepts, with OpenCV's names where OpenCV has one.

    A model overrides the defaults (a subclass redefining a field keeps its position) and
    adds fields only for what its method truly has.

    ``keep_flat=False`` (the default) leaves no keypoint where the image is flat: a pixel whose
    5x5 neighbourhood holds a single value (in every channel) is not valid for detection, like
    the padding and the user's mask. A network's score map is not flat there (zero padding,
    biases and float noise make maxima on a uniform frame, a black border or a saturated sky),
    but those maxima are not features of the image; ``keep_flat=True`` keeps them, as the
    published code does.

    ``precision`` (last, so the fields before keep their positions) is how the network's
    arithmetic runs (``cvdeep.precision``); the Feature2D layer applies it, the network never sees it.
    """

    nfeatures: int = param(0, "keep at most this many keypoints, the strongest; 0 keeps all (as cv2.SIFT)", low=0)
    detection_threshold: float = param(0.0, "minimum detection score of a keypoint, in the model's score units")
    nms_radius: int = param(2, "non-maximum suppression radius in pixels: a keypoint is the maximum of its "
                            "(2r+1)x(2r+1) window", low=0)
    border: int = param(0, "no keypoint within this many pixels of the image edge", low=0)
    nms: str = param("hard", "'hard': exact window NMS, as published; 'soft': greedy Gaussian soft-NMS "
                     "(Bodla et al. 2017) over the 3x3 local maxima", choices=("hard", "soft"))
    soft_nms_sigma: float = param(4.0, "soft-NMS Gaussian sigma in pixels (nms='soft' only)", low=0.5, high=64.0)
    keep_flat: bool = param(False, "keep keypoints where the image is flat (its 5x5 neighbourhood holds one "
                            "value: no maximum of the image, only of the network's padding and biases), as the "
                            "authors' code does; False finds none there, as cv2.SIFT")
    precision: str = precision_param()


@dataclass
class DescriptorConfig(Config):
    """Patch descriptors take no detection parameters: keypoints come from their ``detector``."""

    precision: str = precision_param()


# --- declarations --------------------------------------------------------------------------


@dataclass(frozen=True)
class InputConvention:
    """What a network is fed; the Feature2D layer converts any cv2 image to this.

    ``channels``: 1 (gray) or 3 (RGB order, not BGR). ``gray``: how a colour image becomes
    gray for a 1-channel network, as its authors do it: ``"luminance"`` (cv2.COLOR_BGR2GRAY,
    ITU-R 601 rounded to uint8: what ``cv2.imread(path, 0)`` and ``cvtColor`` give),
    ``"luminance_float"`` (0.299 R + 0.587 G + 0.114 B on the float image, not rounded: Lua
    torch's ``image.rgb2y``, rpautrat's SuperPoint) or ``"mean"`` (the float average of the
    three channels). ``stride``: the image is padded (bottom/right, replicated) so both sides
    are multiples of it. ``min_size``: the smallest side (pixels) the network can take; a
    smaller image gives no keypoints (``((), None)``), and ``compute`` on it raises
    ``cvdeep.Error``.
    """

    channels: Literal[1, 3] = 1
    gray: Literal["luminance", "luminance_float", "mean"] = "luminance"
    stride: int = 1
    min_size: int = 1


@dataclass(frozen=True)
class Variant:
    """One registry name: a network built with ``network_args`` and loaded with ``weights``."""

    name: str
    description: str
    weights: WeightSpec | None = None
    network_args: Mapping[str, Any] = field(default_factory=dict)
    lightglue: str | None = None  # registry name of the LightGlue matcher trained on these features
    network: type | None = None  # a network class other than the family's (another checkpoint layout)
    trained_by_cvdeep: bool = False  # weights trained by this project (see the model card in docs/)
    input: InputConvention | None = None  # the family's, unless these weights were trained on another conversion


Kind = Literal["detector", "detector-only", "patch", "matcher"]


@dataclass(frozen=True)
class ModelFamily:
    """Everything cvdeep needs to know about one method; ``variants[0]`` is the default model.

    ``kind``: ``"detector"`` (detects and describes), ``"detector-only"`` (Key.Net),
    ``"patch"`` (describes patches around given keypoints), ``"matcher"`` (LightGlue).
    ``network`` is the ``nn.Module`` class, built as ``network(**variant.network_args)``.
    """

    name: str
    public_name: str
    kind: Kind
    network: type
    config: type[Config]
    variants: tuple[Variant, ...]
    paper: str
    summary: str
    input: InputConvention = InputConvention()

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError(f"model family {self.name!r} declares no variant")
        if self.kind in ("detector", "detector-only") and not issubclass(self.config, DetectorConfig):
            raise ValueError(f"{self.name}: a detector's config must extend DetectorConfig")

    @property
    def default_model(self) -> str:
        return self.variants[0].name

    def input_of(self, model: str) -> InputConvention:
        """The input convention of one of this family's models: its variant's, else the family's."""
        for variant in self.variants:
            if variant.name == model and variant.input is not None:
                return variant.input
        return self.input
