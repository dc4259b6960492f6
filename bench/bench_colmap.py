"""COLMAP reconstructions of the same images: COLMAP's own SIFT pipeline vs cvdeep features and matches.

    python bench/bench_colmap.py ../shared/data/hpatches_subset/vbalnt_tfeat/imgs/v_churchill \
        --features aliked --nfeatures 2048 --matcher lightglue

cvdeep's side is the command-line pipeline (``cvdeep extract``, exhaustive ``cvdeep pairs``,
``cvdeep match --pairs``) imported into a COLMAP database (``cvdeep.apps.colmap``), verified by
COLMAP and reconstructed by its incremental mapper; COLMAP's side extracts and matches with its
own SIFT. Both use the same images, camera model (``CameraMode.AUTO``) and mapper options.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cvdeep.apps.colmap import colmap_sift_reconstruction, import_into_colmap, reconstruct, verify_pairs
from cvdeep.apps.extract import extract_to_h5, list_images
from cvdeep.apps.match_pairs import exhaustive_pairs, match_to_h5, write_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", help="a folder of overlapping photos")
    parser.add_argument("--features", default="aliked")
    parser.add_argument("--nfeatures", type=int, default=2048)
    parser.add_argument("--matcher", default="lightglue")
    parser.add_argument("--max-size", type=int, default=None)
    args = parser.parse_args()

    images = Path(args.images)
    names = [name for name, _ in list_images(images)]
    rows = []
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        start = time.perf_counter()
        rows.append(("COLMAP SIFT (its own pipeline)", colmap_sift_reconstruction(images, names, work),
                     time.perf_counter() - start))
        start = time.perf_counter()
        features, pairs, matches = work / "features.h5", work / "pairs.txt", work / "matches.h5"
        extract_to_h5(images, features, args.features, args.nfeatures, args.max_size, progress=False)
        write_pairs(exhaustive_pairs(names), pairs)
        match_to_h5(pairs, features, matches, args.matcher, progress=False)
        database = work / "cvdeep.db"
        import_into_colmap(database, images, features, pairs, matches)
        verified = verify_pairs(database, pairs)
        summary = reconstruct(database, images, work / "cvdeep")
        rows.append((f"cvdeep {args.features}[nfeatures={args.nfeatures}] + {args.matcher} "
                     f"({verified} verified pairs)", summary, time.perf_counter() - start))
    print(f"images: {images} ({len(names)}: {', '.join(names)})")
    print("| pipeline | registered | 3D points | mean reprojection error (px) | time (s) |")
    print("| --- | --- | --- | --- | --- |")
    for label, result, seconds in rows:
        print(f"| {label} | {result.registered} / {result.images} | {result.points} | "
              f"{result.reprojection_error:.3f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
