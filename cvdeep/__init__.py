"""cvdeep: learned local features as drop-in OpenCV Feature2D objects.

    import cv2, cvdeep
    det = cvdeep.ALIKED_create(nfeatures=2048)   # was: cv2.SIFT_create(nfeatures=2048)
    kp, desc = det.detectAndCompute(img, None)
"""
from __future__ import annotations

from .errors import Error
from .feature2d import Feature2D
from .features import *  # noqa: F401,F403  (the public classes)
from .features import __all__ as _feature_names
from .matching import BFMatcher, BFMatcher_create
from .matching.lightglue import LightGlue, LightGlue_create
from .models import list_models
from .weights import NonCommercialWeightsWarning

__version__ = "0.1.0"


def _factory(cls: type) -> object:
    def create(*args: object, **kwargs: object) -> Feature2D:
        return cls(*args, **kwargs)

    create.__name__ = f"{cls.__name__}_create"
    create.__qualname__ = create.__name__
    create.__doc__ = f"OpenCV-style factory for :class:`cvdeep.{cls.__name__}`.\n\n{cls.__doc__ or ''}"
    return create


for _name in _feature_names:
    globals()[f"{_name}_create"] = _factory(globals()[_name])

__all__ = ["BFMatcher", "BFMatcher_create", "Error", "Feature2D", "NonCommercialWeightsWarning", "list_models", *_feature_names,
           *(f"{n}_create" for n in _feature_names), "LightGlue", "LightGlue_create"]
