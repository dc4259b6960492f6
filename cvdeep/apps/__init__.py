"""Ready-made applications built on the cv2 contract: pairwise homography, panoramas, batch extraction.

The example scripts in ``examples/`` and the ``cvdeep`` command are thin fronts over
these modules, so the logic exists once and is tested once.
"""
