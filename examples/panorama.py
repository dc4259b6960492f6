#!/usr/bin/env python3
"""Stitch overlapping photos, in any order, into one panorama.

    python examples/panorama.py a.jpg b.jpg c.jpg --features aliked --out pano.jpg

Every pair is matched; images that overlap no other are refused and named. The same
as ``cvdeep panorama``; the work is done in ``cvdeep/apps/panorama.py``.
"""
import argparse
import sys

from cvdeep.apps import panorama
from cvdeep.cli import run_reporting_errors

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    panorama.add_arguments(parser)
    sys.exit(run_reporting_errors(parser.prog, panorama.run, parser.parse_args()))
