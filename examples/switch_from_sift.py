#!/usr/bin/env python3
"""A typical OpenCV SIFT matching script, moved to a learned feature by changing one line.

    python examples/switch_from_sift.py --out matches.png              # offline demo
    python examples/switch_from_sift.py img1.jpg img2.jpg --out matches.png

The SIFT original is this very file with the detector line changed back:

    -detector = cvdeep.XFeat_create()
    +detector = cv2.SIFT_create()

With no images given, the first image is the Grace Hopper portrait that matplotlib ships
(public domain), the second is that image warped by a known homography, and the script
prints how far the recovered homography is from it.
"""
import argparse
import sys

import cv2
import numpy as np

import cvdeep


def load_images(paths):
    """Two images from the command line, or the sample photo and a synthetic view of it."""
    if paths:
        images = [cv2.imread(path) for path in paths]
        for path, image in zip(paths, images):
            if image is None:
                sys.exit(f"error: cannot read {path} as an image")
        return images[0], images[1], None
    try:
        from matplotlib import cbook
    except ImportError:
        sys.exit("error: give two image paths, or install matplotlib for the built-in sample photo")
    img1 = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    height, width = img1.shape[:2]
    true_h = np.array([[0.85, 0.15, 40.0], [-0.10, 0.90, 60.0], [-2e-4, 1e-4, 1.0]])
    img2 = cv2.warpPerspective(img1, true_h, (width, height))
    return img1, img2, true_h


parser = argparse.ArgumentParser(description="Match two images and estimate the homography between them.")
parser.add_argument("images", nargs="*", help="two images (none: a sample photo and a synthetic second view)")
parser.add_argument("--out", default="matches.png", help="where to draw the matches (default: matches.png)")
args = parser.parse_args()
if len(args.images) not in (0, 2):
    parser.error(f"give two images or none; got {len(args.images)}")
img1, img2, true_h = load_images(args.images)

detector = cvdeep.XFeat_create()
kp1, des1 = detector.detectAndCompute(img1, None)
kp2, des2 = detector.detectAndCompute(img2, None)
print(f"keypoints: {len(kp1)} and {len(kp2)}")

matcher = cv2.BFMatcher(cv2.NORM_L2)
knn_matches = matcher.knnMatch(des1, des2, k=2)
good = [pair[0] for pair in knn_matches if len(pair) == 2 and pair[0].distance < 0.8 * pair[1].distance]
print(f"matches after the ratio test: {len(good)}")
if len(good) < 4:
    sys.exit("error: fewer than 4 matches, no homography")

src_pts = np.float32([kp1[m.queryIdx].pt for m in good]).reshape(-1, 1, 2)
dst_pts = np.float32([kp2[m.trainIdx].pt for m in good]).reshape(-1, 1, 2)
H, inlier_mask = cv2.findHomography(src_pts, dst_pts, cv2.USAC_MAGSAC, 3.0)
if H is None:
    sys.exit("error: no homography found")
print(f"inliers: {int(inlier_mask.sum())} of {len(good)}")
print("H =\n" + np.array2string(H, precision=4, suppress_small=True))

inliers = [m for m, keep in zip(good, inlier_mask.ravel()) if keep]
shown = inliers[:: max(1, len(inliers) // 150)]  # about 150 lines keep the picture readable
drawing = cv2.drawMatches(img1, kp1, img2, kp2, shown, None, matchColor=(0, 255, 0),
                          flags=cv2.DrawMatchesFlags_NOT_DRAW_SINGLE_POINTS)
cv2.imwrite(args.out, drawing)
print(f"wrote {args.out}")

if true_h is not None:
    height, width = img1.shape[:2]
    corners = np.float32([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]]).reshape(-1, 1, 2)
    moved = cv2.perspectiveTransform(corners, H) - cv2.perspectiveTransform(corners, true_h)
    error = np.linalg.norm(moved, axis=2).mean()
    print(f"mean corner error of the recovered homography: {error:.2f} px")
