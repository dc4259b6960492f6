"""Matchers with OpenCV's DescriptorMatcher interface."""
from .lightglue import LightGlue, LightGlue_create

__all__ = ["LightGlue", "LightGlue_create"]
