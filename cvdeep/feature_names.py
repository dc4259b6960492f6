"""Feature names: one vocabulary for every command (``match``, ``panorama``, ``extract``, ``bench``).

A name is one of

- an OpenCV baseline (``sift``, ``orb``, ``akaze``, ``brisk``), a cvdeep family (``aliked``,
  ``XFeat``) or a registered model (``aliked-n32``, ``hardnet++``) that detects and describes
  (patch descriptors detect with SIFT);
- any of these with parameters in brackets: ``xfeat[nms=soft,nfeatures=1024]``;
- ``DETECTOR+DESCRIPTOR``: keypoints of one described by another (``sift+hardnet``,
  ``keynet+hynet``; Key.Net, a detector only, works in this form).

``check_feature_name`` validates a name without building anything; ``create_feature`` builds
it through ``cvdeep.features.create``. Names that cannot describe (LightGlue models, a
detector alone) are refused with a message that says how to use them.
"""
from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from . import features as _features
from .errors import Error
from .features import create
from .models import families, get_model, list_models

_ALONE = ("opencv", "detector", "patch")  # kinds that detect and describe by themselves
_DESCRIBERS = ("opencv", "detector", "patch")  # kinds that can describe given keypoints
_DETECTORS = ("opencv", "detector", "detector-only", "patch")


def _opencv_baselines() -> tuple[str, ...]:
    """The OpenCV names ``cvdeep.features.create`` accepts: its own table (hidden from its typed stub)."""
    return tuple(getattr(_features, "_OPENCV_BASELINES"))  # noqa: B009


@cache
def _kinds() -> dict[str, str]:
    """Lower-case name (baseline, family, public class name, model) -> kind."""
    kinds = {name: "opencv" for name in _opencv_baselines()}
    for family in families().values():
        kinds[family.name] = kinds[family.public_name.lower()] = family.kind
    for model in list_models():
        kinds.setdefault(model, get_model(model)[0].kind)
    return kinds


def feature_names() -> list[str]:
    """Every name that works alone as a feature, sorted, each once: the baselines, the families and the
    models that detect and describe (``DETECTOR+DESCRIPTOR`` and ``name[param=value]`` forms aside)."""
    names = set(_opencv_baselines())
    names |= {f.name for f in families().values() if f.kind in _ALONE}
    names |= {m for m in list_models() if get_model(m)[0].kind in _ALONE}
    return sorted(names)


def _base(part: str) -> str | None:
    """The name without its ``[...]`` parameters; None when the brackets are malformed."""
    if "[" not in part:
        return None if "]" in part else part.strip()
    if not part.rstrip().endswith("]") or part.count("[") != 1:
        return None
    return part[: part.index("[")].strip()


def _kind(part: str) -> str | None:
    base = _base(part)
    return None if base is None else _kinds().get(base.lower())


def _top_level_pluses(name: str) -> list[int]:
    depth, found = 0, []
    for index, char in enumerate(name):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "+" and depth == 0:
            found.append(index)
    return found


def _accepted() -> str:
    return (f"accepted: {', '.join(feature_names())}; or DETECTOR+DESCRIPTOR (e.g. sift+hardnet, keynet+hynet); "
            "parameters in brackets: xfeat[nms=soft]")


def split_feature_name(name: str) -> tuple[str, str | None]:
    """``(detector, descriptor)`` parts of a valid name (``descriptor`` None for a single feature);
    ``cvdeep.Error`` saying what is wrong and what is accepted otherwise. Builds nothing."""
    if not isinstance(name, str) or not name.strip():
        raise Error(f"features: got {name!r}; expected a feature name ({_accepted()})")
    text = name.strip()
    kind = _kind(text)
    if kind is not None:
        if kind in _ALONE:
            return text, None
        base = _base(text)
        if kind == "matcher":
            model = str(base).lower()
            trained_on = sorted(f.name for f in families().values() if any(v.lightglue == model for v in f.variants))
            example = trained_on[0] if trained_on else "aliked"
            raise Error(f"{base!r} is a LightGlue matcher, not a feature: give the features it matches and the "
                        f"matcher, e.g. --features {example} --matcher lightglue")
        raise Error(f"{base!r} detects keypoints but computes no descriptors: give it a descriptor as "
                    f"DETECTOR+DESCRIPTOR, e.g. {base}+hynet, {base}+hardnet or {base}+sift")
    for plus in _top_level_pluses(text):
        detector, descriptor = text[:plus].strip(), text[plus + 1:].strip()
        detector_kind, descriptor_kind = _kind(detector), _kind(descriptor)
        if detector_kind is None or descriptor_kind is None:
            continue
        if detector_kind not in _DETECTORS:
            raise Error(f"{name!r}: {_base(detector)!r} cannot detect keypoints; {_accepted()}")
        if descriptor_kind not in _DESCRIBERS:
            raise Error(f"{name!r}: {_base(descriptor)!r} cannot describe keypoints "
                        f"({'a matcher' if descriptor_kind == 'matcher' else 'a detector only'}); {_accepted()}")
        return detector, descriptor
    if _base(text) is None and "[" in text and not _top_level_pluses(text):
        raise Error(f"feature {name!r}: expected NAME[key=value,...], e.g. 'xfeat[nms=soft]'")
    raise Error(f"unknown feature {name!r}; {_accepted()}")


def check_feature_name(name: str) -> str:
    """``name`` when it names a feature (see the module's docstring), else ``cvdeep.Error``."""
    split_feature_name(name)
    return name


class DetectThenDescribe:
    """``DETECTOR+DESCRIPTOR``: the keypoints of one feature described by another, behind the
    ``detectAndCompute`` / ``detect`` / ``compute`` contract of ``cv2.Feature2D``."""

    def __init__(self, detector: Any, descriptor: Any, name: str | None = None) -> None:
        self.detector, self.descriptor = detector, descriptor
        self.name = name

    def detect(self, image: np.ndarray, mask: np.ndarray | None = None) -> Any:
        return self.detector.detect(image, mask)

    def compute(self, image: np.ndarray, keypoints: Any, descriptors: Any = None) -> tuple[Any, Any]:
        return self.descriptor.compute(image, keypoints)

    def detectAndCompute(self, image: np.ndarray, mask: np.ndarray | None = None,
                         descriptors: Any = None, useProvidedKeypoints: bool = False) -> tuple[Any, Any]:
        keypoints = self.detector.detect(image, mask)
        if len(keypoints) == 0:
            return (), None
        return self.descriptor.compute(image, keypoints)

    def defaultNorm(self) -> int:
        return int(self.descriptor.defaultNorm())

    def descriptorSize(self) -> int:
        return int(self.descriptor.descriptorSize())

    def descriptorType(self) -> int:
        return int(self.descriptor.descriptorType())

    def getDefaultName(self) -> str:
        return self.name or f"{self.detector.getDefaultName()}+{self.descriptor.getDefaultName()}"

    def __repr__(self) -> str:
        return f"DetectThenDescribe({self.detector!r}, {self.descriptor!r})"


def _create_one(part: str, nfeatures: int | None, device: str | None) -> Any:
    base = str(_base(part))
    given = part[len(part.split("[", 1)[0]):]  # "[...]" or ""
    params: dict[str, Any] = {}
    kind = _kinds().get(base.lower())
    if nfeatures is not None and kind == "patch" and "detector" not in given:
        import cv2  # a patch descriptor describes SIFT keypoints: the cap goes to its SIFT

        params["detector"] = cv2.SIFT.create(nfeatures=nfeatures)
    elif nfeatures is not None and "nfeatures" not in given:  # a bracket's own nfeatures wins
        params["nfeatures"] = nfeatures
    if device is not None and kind != "opencv":
        params["device"] = device
    try:
        return create(part, **params)
    except TypeError:  # an OpenCV factory without that parameter (AKAZE, BRISK)
        raise Error(f"features {base!r} take no nfeatures parameter") from None


def create_feature(name: str, nfeatures: int | None = None, device: str | None = None) -> Any:
    """Build the feature ``name`` names (``check_feature_name``'s vocabulary). ``nfeatures`` caps the
    detector (the detector part of ``DETECTOR+DESCRIPTOR``); ``device`` applies to cvdeep features.

    Weights are resolved now: a missing file raises ``cvdeep.Error`` naming the file and where it was looked for.
    """
    detector, descriptor = split_feature_name(name)
    if descriptor is None:
        return _create_one(detector, nfeatures, device)
    return DetectThenDescribe(_create_one(detector, nfeatures, device), _create_one(descriptor, None, device),
                              name.strip())
