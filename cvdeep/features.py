"""The public classes (``cvdeep.ALIKED``, ...) and ``<Name>_create`` factories, one per declared family.

Each is derived from its ``ModelFamily`` (``cvdeep/nets/<name>.py``): the OpenCV contract lives in
``cvdeep.feature2d``, the parameters, defaults, checks and models in the declaration. The classes
carry real signatures for ``help()`` and ``inspect.signature``; type checkers read
``cvdeep/features.pyi``, generated from the same declarations by ``python -m cvdeep.stubs`` (a test
fails when it is out of date).
"""
from __future__ import annotations

import inspect
from typing import Any

from .declaration import ModelFamily
from .errors import Error
from .feature2d import (
    DetectorOnlyFeature2D,
    Feature2D,
    PatchFeature2D,
    constructor_signature,
    parameter_docs,
)
from .models import families, get_model, list_models

_BASES: dict[str, type[Feature2D]] = {
    "detector": Feature2D,
    "detector-only": DetectorOnlyFeature2D,
    "patch": PatchFeature2D,
}

_DETECTOR_PARAMETER = inspect.Parameter(
    "detector", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="Any"
)


def signature_of(family: ModelFamily) -> inspect.Signature:
    """The public constructor's signature (patch descriptors also take ``detector=``)."""
    extra = (_DETECTOR_PARAMETER,) if family.kind == "patch" else ()
    return constructor_signature(family, extra)


def _public_class(family: ModelFamily) -> type[Feature2D]:
    base = _BASES[family.kind]
    doc = f"{family.summary}\n\n{family.paper}\n\n{parameter_docs(family)}"
    if family.kind == "patch":
        doc += "\n    detector = None (keyword only): what detect() uses; default cv2.SIFT_create()"
    cls = type(family.public_name, (base,), {"family": family, "__doc__": doc, "__module__": "cvdeep"})
    cls.__signature__ = signature_of(family)  # type: ignore[attr-defined]
    return cls


def _factory(cls: type[Feature2D]) -> Any:
    def create(*args: Any, **kwargs: Any) -> Feature2D:
        return cls(*args, **kwargs)

    create.__name__ = create.__qualname__ = f"{cls.__name__}_create"
    create.__module__ = "cvdeep"
    create.__doc__ = f"OpenCV-style factory of :class:`cvdeep.{cls.__name__}`.\n\n{cls.__doc__}"
    create.__signature__ = signature_of(cls.family)  # type: ignore[attr-defined]
    return create


__all__: list[str] = []
for _family in families().values():
    if _family.kind == "matcher":
        continue
    _cls = _public_class(_family)
    globals()[_family.public_name] = _cls
    globals()[f"{_family.public_name}_create"] = _factory(_cls)
    __all__ += [_family.public_name, f"{_family.public_name}_create"]


def public_classes() -> dict[str, type[Feature2D]]:
    """Family name -> public class, for every detector and descriptor."""
    return {family.name: globals()[family.public_name] for family in families().values() if family.kind != "matcher"}


_OPENCV_BASELINES = {"sift": "SIFT_create", "orb": "ORB_create", "akaze": "AKAZE_create", "brisk": "BRISK_create"}


def parse_feature_name(name: str) -> tuple[str, dict[str, Any]]:
    """``"xfeat[nms=soft,nfeatures=1024]"`` -> ``("xfeat", {"nms": "soft", "nfeatures": 1024})``.

    Values are read as integers, then numbers, then ``true``/``false``, else kept as strings
    (the feature's own checks then accept or refuse them).
    """
    base, bracket, rest = name.partition("[")
    if not bracket:
        return name, {}
    if not rest.endswith("]"):
        raise Error(f"feature {name!r}: expected NAME[key=value,...], e.g. 'xfeat[nms=soft]'")
    params: dict[str, Any] = {}
    for item in filter(None, rest[:-1].split(",")):
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise Error(f"feature {name!r}: {item!r} is not key=value")
        params[key.strip()] = _parse_value(value.strip())
    return base, params


def _parse_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def create(name: str, **params: Any) -> Any:
    """Any feature by name: a cvdeep family (``"aliked"``, ``"XFeat"``), a registered model name
    (``"aliked-n32"``) or an OpenCV baseline (``"sift"``, ``"orb"``, ``"akaze"``, ``"brisk"``),
    optionally with parameters in brackets: ``"xfeat[nms=soft,nfeatures=1024]"``,
    ``"sdgmnet[weights=run/weights.pt]"``.

    Used by the examples, the command line and the benchmarks so that every method runs
    through the same code path.
    """
    import cv2

    name, given = parse_feature_name(name)
    params = {**given, **params}
    key = name.lower()
    if key in _OPENCV_BASELINES:
        factory = getattr(cv2, _OPENCV_BASELINES[key], None)
        if factory is None:
            raise Error(f"this OpenCV build has no cv2.{_OPENCV_BASELINES[key]}")
        return factory(**params)
    classes = public_classes()
    for family_name, cls in classes.items():
        if key in (family_name, cls.__name__.lower()):
            return cls(**params)
    if key in list_models():
        family, variant = get_model(key)
        if family.name in classes:
            return classes[family.name](model=variant.name, **params)
    variants = {m for m in list_models() if get_model(m)[0].name in classes}
    accepted = sorted(set(_OPENCV_BASELINES) | set(classes) | variants)
    raise Error(f"unknown feature {name!r}; accepted: {', '.join(accepted)}")
