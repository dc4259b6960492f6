"""cvdeep: learned local features as drop-in OpenCV Feature2D objects.

    import cv2, cvdeep
    det = cvdeep.ALIKED_create(2048)   # was: cv2.SIFT_create(2048)
    kp, desc = det.detectAndCompute(img, None)

Without torch installed, ``import cvdeep`` still gives ``cvdeep.ONNXFeature2D`` and
``cvdeep.ONNXLightGlue``, which run files written by ``cvdeep export onnx`` with onnxruntime.
"""
from __future__ import annotations

from .errors import Error
from .onnx_feature2d import ONNXFeature2D, ONNXLightGlue

__version__ = "0.1.0"

try:
    import torch  # noqa: F401  (the networks need it; an ONNX-only install has none)
except ModuleNotFoundError as _missing:
    if _missing.name != "torch":
        raise
    __all__ = ["Error", "ONNXFeature2D", "ONNXLightGlue"]
else:
    from .feature2d import Feature2D
    from .features import *  # noqa: F401,F403  (the public classes and their <Name>_create factories)
    from .features import __all__ as _feature_names
    from .matching import BFMatcher, BFMatcher_create
    from .matching.lightglue import LightGlue, LightGlue_create
    from .models import list_models
    from .parallel import install_fork_guard
    from .weights import NonCommercialWeightsWarning

    install_fork_guard()  # a child forked after torch ran multi-threaded runs torch on 1 thread (cvdeep.parallel)

    __all__ = ["BFMatcher", "BFMatcher_create", "Error", "Feature2D", "LightGlue", "LightGlue_create",
               "NonCommercialWeightsWarning", "ONNXFeature2D", "ONNXLightGlue", "list_models", *_feature_names]
