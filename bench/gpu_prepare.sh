#!/usr/bin/env bash
# Fill .carry/gpu (git-ignored) with what bench/gpu_check.sh needs on a GPU machine, where
# ../shared does not travel and nothing can be downloaded: the graf pair for the tests, the
# XFeat/ALIKED/DISK weights from the local cache, and a subset of the training photos
# (BSDS500 and SUN, about 47 MB) for `gpu_check.sh train`. Keep the total under ~60 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${CVDEEP_SHARED:-../shared}
CARRY=.carry/gpu
rm -rf "$CARRY"
mkdir -p "$CARRY/shared/data/oxford_affine/images/graf" "$CARRY/weights" "$CARRY/photos"
cp "$SHARED"/data/oxford_affine/images/graf/{img1.ppm,img2.ppm,H1to2p} "$CARRY/shared/data/oxford_affine/images/graf/"
for name in xfeat aliked-n16 disk; do
    cp "$(.venv/bin/cvdeep weights path "$name")" "$CARRY/weights/"
done
cp -r "$SHARED/train_images/bsds500" "$SHARED/train_images/sun_hays80" "$CARRY/photos/"
du -sh "$CARRY"
