"""Agreement and speed of exported ONNX files against the torch models, per runtime, on real images.

For each detector: the file is run by onnxruntime, by OpenCV's DNN (cv2.dnn.readNet) and, for
ALIKED and DISK, by OpenCV 5's own class (cv2.ALIKED / cv2.DISK with the image's own size as
input size), and compared with cvdeep's torch model on the same image: the share of torch
keypoints found within 1e-3 px, the largest score and descriptor differences over those, and
the time per image (median, one thread). LightGlue files are compared by their matches
(intersection over union) with cvdeep.LightGlue at full depth, and with its default adaptive
depth/width. The OpenCV classes run in a subprocess that never imports torch.

    PYTHONPATH=. python bench/bench_onnx.py [--size 640x480] [--rounds 3] [--precision fp32|fp16]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cvdeep  # noqa: E402
from cvdeep import image as imageio  # noqa: E402
from cvdeep.export import to_onnx  # noqa: E402
from cvdeep.onnx_feature2d import normalize_keypoints  # noqa: E402

PAIR = ("lightglue_assets/assets/DSC_0410.JPG", "lightglue_assets/assets/DSC_0411.JPG")
DETECTORS = (("XFeat", "xfeat"), ("DISK", "disk"), ("ALIKED", "aliked-n16"), ("ALIKED", "aliked-t16"))

OPENCV_CLASSES = """
import json, sys, time, numpy as np, cv2
z = np.load(sys.argv[1]); out = {}
image = z["image"]
def timed(run, rounds):
    times = []
    for _ in range(rounds):
        start = time.perf_counter(); result = run(); times.append(time.perf_counter() - start)
    return result, float(np.median(times))
for name, path in json.loads(sys.argv[2]).items():
    if name.startswith("aliked"):
        params = cv2.ALIKED_Params(); params.inputSize = (image.shape[1], image.shape[0])
        feature = cv2.ALIKED_create(path, params)
    else:
        feature = cv2.DISK_create(path); feature.setImageSize((image.shape[1], image.shape[0]))
    (kps, desc), seconds = timed(lambda: feature.detectAndCompute(image, None), int(sys.argv[3]))
    out[name] = dict(xy=cv2.KeyPoint_convert(kps).reshape(-1, 2).tolist(), scores=[k.response for k in kps],
                     desc=desc.tolist(), seconds=seconds)
matcher = cv2.LightGlueMatcher_create(sys.argv[4], 0.0)
matcher.setPairInfo(z["n0"], z["n1"])
matches, seconds = timed(lambda: matcher.match(z["d0"], z["d1"]), 1)
out["lightglue"] = dict(pairs=[(m.queryIdx, m.trainIdx) for m in matches], seconds=seconds)
assert "torch" not in sys.modules
print(json.dumps(out))
"""


def agreement(xy, scores, desc, ref_xy, ref_scores, ref_desc) -> tuple[float, float, float]:
    distance = np.linalg.norm(ref_xy[:, None] - xy[None], axis=2)
    nearest = distance.argmin(1)
    found = distance[np.arange(len(ref_xy)), nearest] <= 1e-3
    i, j = np.nonzero(found)[0], nearest[found]
    score_error = np.abs(scores[j] - ref_scores[i]) / np.maximum(1, np.abs(ref_scores[i]))
    return float(found.mean()), float(np.max(score_error)), float(np.max(np.abs(desc[j] - ref_desc[i])))


def timed(run, rounds: int):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def parse(outputs: dict[str, np.ndarray], layout: str, width: int, height: int):
    keypoints, scores, desc = outputs["keypoints"], outputs["scores"].reshape(-1), outputs["descriptors"]
    if layout == "opencv-disk":
        return keypoints[0].astype(np.float32), scores, desc[0]
    if layout == "opencv-aliked":
        return (keypoints + 1) * 0.5 * np.float32([width, height]), scores, desc
    return keypoints, scores, desc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    import onnxruntime

    torch.set_num_threads(1)
    width, height = (int(v) for v in args.size.lower().split("x"))
    pair = [cv2.imread(str(args.data / name)) for name in PAIR]
    image = np.ascontiguousarray(pair[0][:height, :width])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    folder = Path(tempfile.mkdtemp(prefix="cvdeep-onnx-"))
    print(f"{width}x{height} crop of {PAIR[0]}, one thread, {args.precision}, median of {args.rounds}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'model':<11} {'runtime':<14} {'keypoints':>9} {'found':>7} {'max|dscore|':>11} {'max|ddesc|':>10} "
          f"{'s/image':>8}")
    files, references = {}, {}
    for cls, model in DETECTORS:
        detector = getattr(cvdeep, cls)(model=model, device="cpu")
        (kps, desc), seconds = timed(lambda detector=detector: detector.detectAndCompute(image, None), args.rounds)
        ref = (cv2.KeyPoint_convert(kps).reshape(-1, 2), np.float32([k.response for k in kps]), desc)
        references[model] = ref
        print(f"{model:<11} {'torch':<14} {len(kps):>9} {'':>7} {'':>11} {'':>10} {seconds:>8.3f}")
        path = files[model] = to_onnx(model, folder / f"{model}.onnx", precision=args.precision)
        convention = detector.family.input
        array = imageio.to_array(image, convention.channels, convention.gray)
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        layout = session.get_modelmeta().custom_metadata_map["cvdeep.layout"]
        raw, seconds = timed(lambda session=session, array=array: session.run(None, {"image": array}), args.rounds)
        got = parse(dict(zip(names, raw)), layout, width, height)
        print(f"{model:<11} {'onnxruntime':<14} {len(got[0]):>9} {agreement(*got, *ref)[0]:>7.4f} "
              f"{agreement(*got, *ref)[1]:>11.2e} {agreement(*got, *ref)[2]:>10.2e} {seconds:>8.3f}")
        net = cv2.dnn.readNet(str(path))

        def forward(net=net, array=array, names=names):
            net.setInput(array, "image")
            return net.forward(names)

        raw, seconds = timed(forward, args.rounds)
        got = parse(dict(zip(names, raw)), layout, width, height)
        found, score_error, desc_error = agreement(*got, *ref)
        print(f"{model:<11} {'cv2.dnn':<14} {len(got[0]):>9} {found:>7.4f} {score_error:>11.2e} {desc_error:>10.2e} "
              f"{seconds:>8.3f}")
    # LightGlue: ALIKED features of the pair (2048 each)
    extractor = cvdeep.ALIKED(2048, model="aliked-n16", device="cpu")
    feats = [extractor.detectAndCompute(im, None) for im in pair]
    xy = [cv2.KeyPoint_convert(k).reshape(-1, 2) for k, _ in feats]
    sizes = [np.float32(im.shape[1::-1]) for im in pair]
    full = cvdeep.LightGlue("aliked", depth_confidence=-1, width_confidence=-1)
    (pairs, _), seconds_full = timed(
        lambda: full.match_features(xy[0], feats[0][1], sizes[0], xy[1], feats[1][1], sizes[1]), 1)
    adaptive = cvdeep.LightGlue("aliked")
    (pairs_adaptive, _), seconds_adaptive = timed(
        lambda: adaptive.match_features(xy[0], feats[0][1], sizes[0], xy[1], feats[1][1], sizes[1]), 1)
    lightglue = to_onnx("lightglue-aliked", folder / "lightglue.onnx", precision=args.precision)
    onnx_matcher = cvdeep.ONNXLightGlue(lightglue, threads=1)
    (got, _), seconds_onnx = timed(
        lambda: onnx_matcher.match_features(xy[0], feats[0][1], sizes[0], xy[1], feats[1][1], sizes[1]), 1)
    iou = lambda a, b: len(set(map(tuple, np.asarray(a).tolist())) & set(map(tuple, np.asarray(b).tolist()))) / max(  # noqa: E731
        1, len(set(map(tuple, np.asarray(a).tolist())) | set(map(tuple, np.asarray(b).tolist()))))
    print(f"\nLightGlue (ALIKED, {len(xy[0])} x {len(xy[1])} keypoints, full size pair)")
    print(f"  torch full depth      {len(pairs):>5} matches {seconds_full:>7.2f} s")
    print(f"  torch adaptive        {len(pairs_adaptive):>5} matches {seconds_adaptive:>7.2f} s  "
          f"IoU vs full depth {iou(pairs_adaptive, pairs):.4f}")
    print(f"  onnxruntime           {len(got):>5} matches {seconds_onnx:>7.2f} s  "
          f"IoU vs full depth {iou(got, pairs):.4f}")
    if all(hasattr(cv2, n) for n in ("ALIKED_create", "DISK_create", "LightGlueMatcher_create")):
        np.savez(folder / "inputs.npz", image=image, n0=normalize_keypoints(xy[0], sizes[0]),
                 n1=normalize_keypoints(xy[1], sizes[1]), d0=feats[0][1], d1=feats[1][1])
        classes = {m: str(files[m]) for m in ("aliked-n16", "aliked-t16", "disk")}
        done = subprocess.run([sys.executable, "-c", OPENCV_CLASSES, str(folder / "inputs.npz"), json.dumps(classes),
                               str(args.rounds), str(lightglue)], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode:
            raise SystemExit(done.stderr[-2000:])
        out = json.loads(done.stdout.strip().splitlines()[-1])
        print("\nOpenCV 5 classes (subprocess without torch)")
        for model in classes:
            got = (np.float32(out[model]["xy"]), np.float32(out[model]["scores"]), np.float32(out[model]["desc"]))
            found, score_error, desc_error = agreement(*got, *references[model])
            name = "cv2.ALIKED" if model.startswith("aliked") else "cv2.DISK"
            print(f"{model:<11} {name:<14} {len(got[0]):>9} {found:>7.4f} {score_error:>11.2e} {desc_error:>10.2e} "
                  f"{out[model]['seconds']:>8.3f}")
        print(f"  cv2.LightGlueMatcher  {len(out['lightglue']['pairs']):>5} matches "
              f"{out['lightglue']['seconds']:>7.2f} s  IoU vs full depth {iou(out['lightglue']['pairs'], pairs):.4f}")


if __name__ == "__main__":
    main()
