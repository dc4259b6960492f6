"""Which pixels LF-Net's statistics should leave out, judged on training photos (not the evaluation pairs).

Mean correct-match ratio (mutual NN, 3 px, 500 keypoints of lfnet-cvdeep) of 12 training photos against
their JPEG at quality 20 and 10, against themselves pasted on a black canvas, and turned by 30 degrees,
for three rules: every pixel (the release), every flat pixel left out, the canvas (flat runs from the
image edge, ``cvdeep.nets.lfnet.content_weights``) left out. Output: canvas_rules.txt beside this file.

    OMP_NUM_THREADS=1 python docs/models/runs/lfnet-cvdeep/canvas_rules.py 12
"""
import glob
import random
import sys

import cv2
import numpy as np
import torch
import torch.nn.functional as F

import cvdeep
import cvdeep.nets.lfnet as L
from cvdeep.eval.rotation import rotate

torch.set_num_threads(1)
canvas_runs = L.content_weights

def every_pixel(image, radius=2):
    return torch.ones_like(image)

def every_flat_pixel(image, radius=2):
    """0 on every flat pixel (one value in its 5 x 5 window) and the 2 px around it."""
    window = 2 * radius + 1
    hi = F.max_pool2d(image, window, stride=1, padding=radius)
    lo = -F.max_pool2d(-image, window, stride=1, padding=radius)
    return 1.0 - F.max_pool2d((hi == lo).to(image.dtype), window, stride=1, padding=radius)

RULES = {"every pixel": every_pixel, "no flat pixel": every_flat_pixel, "no canvas": canvas_runs}
paths = sorted(p for p in glob.glob("../shared/train_images/**/*.jp*g", recursive=True))
random.seed(1)
paths = random.sample(paths, int(sys.argv[1]) if len(sys.argv) > 1 else 12)

def correct_ratio(det, a, b, to_b):
    ka, da = det.detectAndCompute(a, None)
    kb, db = det.detectAndCompute(b, None)
    if da is None or db is None:
        return 0.0
    m = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(da, db)
    pa = np.array([ka[x.queryIdx].pt for x in m])
    pb = np.array([kb[x.trainIdx].pt for x in m])
    mapped = pa @ to_b[:, :2].T + to_b[:, 2]
    return float((np.linalg.norm(mapped - pb, axis=1) < 3).mean()) if len(m) else 0.0

for name, rule in RULES.items():
    L.content_weights = rule
    det = cvdeep.LFNet_create(500, device="cpu")
    scores = {"jpeg20": [], "jpeg10": [], "canvas": [], "turn30": []}
    for p in paths:
        img = cv2.imread(p, cv2.IMREAD_GRAYSCALE)
        eye = np.array([[1.0, 0, 0], [0, 1.0, 0]])
        for q in (20, 10):
            jpg = cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1], 0)
            scores[f"jpeg{q}"].append(correct_ratio(det, img, jpg, eye))
        h, w = img.shape
        canvas = np.zeros((h + h // 2, w + w // 2), np.uint8)
        canvas[h // 4: h // 4 + h, w // 4: w // 4 + w] = img
        scores["canvas"].append(correct_ratio(det, img, canvas, np.array([[1.0, 0, w // 4], [0, 1.0, h // 4]])))
        turned, matrix = rotate(img, 30.0)
        scores["turn30"].append(correct_ratio(det, img, turned, matrix))
    print(name, {k: round(100 * float(np.mean(v)), 1) for k, v in scores.items()}, flush=True)
