#!/usr/bin/env python3
"""Estimate the homography between two photos with any feature and draw the result.

    python examples/homography.py img1.jpg img2.jpg --features aliked --matcher mutual --out viz.png

Prints H, the inlier count and the time of each stage; the visualisation shows the
matches (inliers green, outliers red) and image 2 warped onto image 1. The same as
``cvdeep match``; the work is done in ``cvdeep/apps/homography.py``.
"""
import argparse
import sys

from cvdeep.apps import homography
from cvdeep.cli import run_reporting_errors

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    homography.add_arguments(parser)
    sys.exit(run_reporting_errors(parser.prog, homography.run, parser.parse_args()))
