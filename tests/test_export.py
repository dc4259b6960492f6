"""ONNX export (cvdeep.export.to_onnx, `cvdeep export onnx`) and the torch-free ONNXFeature2D / ONNXLightGlue.

Every exported file is compared with the torch model it came from on real images: in onnxruntime,
in OpenCV's DNN (cv2.dnn.readNet), and through OpenCV 5's own classes (cv2.ALIKED, cv2.DISK,
cv2.LightGlueMatcher) when this cv2 has them. OpenCV and the torch-free runtime run in
subprocesses in which torch cannot be imported (and is checked absent from sys.modules).

Agreement asserted (fp32): at least 99.5 % of the torch model's keypoints found within 1e-3 px,
scores within 1e-3 (relative to max(1, |score|)), descriptors within 1e-4 (max abs); LightGlue
matches with an intersection-over-union >= 0.99 and probabilities within 1e-3.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import cvdeep
from cvdeep import image as imageio
from cvdeep.cli import main as cli_main
from cvdeep.export import to_onnx
from cvdeep.onnx_feature2d import normalize_keypoints

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

NO_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    class _NoTorch(importlib.abc.MetaPathFinder):
        # an install without torch: importing it fails as it would there
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, _NoTorch())
""")
HAS_CV2_CLASSES = all(hasattr(cv2, name) for name in ("ALIKED_create", "DISK_create", "LightGlueMatcher_create"))


def run_without_torch(script: str, tmp_path: Path, **arrays: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``script`` in a fresh interpreter where torch cannot be imported; it reads ``inputs.npz``
    and writes ``outputs.npz`` in its working directory. Asserts torch stayed out of sys.modules."""
    np.savez(tmp_path / "inputs.npz", **arrays)
    code = NO_TORCH + textwrap.dedent(script) + "\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                               "PYTHONPATH": str(Path(cvdeep.__file__).parents[1])})
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(tmp_path / "outputs.npz") as out:
        return dict(out)


def agreement(xy: np.ndarray, scores: np.ndarray, desc: np.ndarray, ref_xy: np.ndarray, ref_scores: np.ndarray,
              ref_desc: np.ndarray, tolerance: float = 1e-3) -> tuple[float, float, float]:
    """(fraction of the reference keypoints found within ``tolerance`` px, max score difference relative to
    max(1, |score|), max descriptor difference) over the found ones."""
    if len(ref_xy) == 0:
        return 1.0, 0.0, 0.0
    distance = np.linalg.norm(ref_xy[:, None] - xy[None], axis=2) if len(xy) else np.full((len(ref_xy), 1), np.inf)
    nearest = distance.argmin(1)
    found = distance[np.arange(len(ref_xy)), nearest] <= tolerance
    i, j = np.nonzero(found)[0], nearest[found]
    score_error = np.max(np.abs(scores[j] - ref_scores[i]) / np.maximum(1.0, np.abs(ref_scores[i])), initial=0.0)
    desc_error = np.max(np.abs(desc[j] - ref_desc[i]), initial=0.0)
    return float(found.mean()), float(score_error), float(desc_error)


def assert_agrees(xy, scores, desc, ref_xy, ref_scores, ref_desc, what: str, found_min: float = 0.995,
                  score_tol: float = 1e-3, desc_tol: float = 1e-4) -> None:
    found, score_error, desc_error = agreement(xy, scores, desc, ref_xy, ref_scores, ref_desc)
    assert abs(len(xy) - len(ref_xy)) <= 0.005 * len(ref_xy) + 1, f"{what}: {len(xy)} keypoints, torch {len(ref_xy)}"
    assert found >= found_min, f"{what}: only {found:.4f} of the torch keypoints found"
    assert score_error <= score_tol, f"{what}: scores differ by {score_error:.2e}"
    assert desc_error <= desc_tol, f"{what}: descriptors differ by {desc_error:.2e}"


@pytest.fixture(scope="module")
def pair(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Two real views (BGR): full size (1024 x 682) for the crops, halved for matching."""
    folder = data_dir / "lightglue_assets" / "assets"
    return cv2.imread(str(folder / "DSC_0410.JPG")), cv2.imread(str(folder / "DSC_0411.JPG"))


@pytest.fixture(scope="module")
def small_pair(pair: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return tuple(cv2.resize(image, (512, 341), interpolation=cv2.INTER_AREA) for image in pair)


@pytest.fixture(scope="module")
def aliked_pair(small_pair: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """cvdeep ALIKED-N16 features (512) of both views and LightGlue's reference matches (full depth)."""
    extractor = cvdeep.ALIKED(512, model="aliked-n16", device="cpu", precision="fp32")
    (xy0, _, d0), (xy1, _, d1) = (torch_features(extractor, image) for image in small_pair)
    s0, s1 = (np.array(image.shape[1::-1], np.float32) for image in small_pair)
    full_depth = cvdeep.LightGlue("aliked", depth_confidence=-1, width_confidence=-1)
    pairs, confidence = full_depth.match_features(xy0, d0, s0, xy1, d1, s1)
    return dict(xy0=xy0, d0=d0, s0=s0, xy1=xy1, d1=d1, s1=s1, pairs=pairs, confidence=confidence)


@pytest.fixture(scope="module")
def crop(pair: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """320 x 240 of the first view: a multiple of 32 (no padding question for cv2.DISK's input size)."""
    return np.ascontiguousarray(pair[0][220:460, 352:672])


@pytest.fixture(scope="module")
def odd_crop(pair: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """An odd size (301 x 229): exercises the in-graph padding to each family's stride."""
    return np.ascontiguousarray(pair[1][200:429, 400:701])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The exported files shared by the tests (the XFeat pair through the command line)."""
    folder = tmp_path_factory.mktemp("onnx")
    assert cli_main(["export", "onnx", "xfeat", str(folder / "xfeat.onnx"), "--describe", "--mask-input",
                     "--set", "nfeatures=1024"]) == 0
    out = {"xfeat": folder / "xfeat.onnx", "xfeat.describe": folder / "xfeat.describe.onnx"}
    out["aliked-n16"] = to_onnx("aliked-n16", folder / "aliked-n16.onnx", nfeatures=1024)
    # not named <stem>.describe.onnx: ONNXFeature2D takes it only when given describe=
    out["aliked-describe"] = to_onnx("aliked-n16", folder / "aliked-describe.onnx", graph="describe")
    out["disk"] = to_onnx("disk", folder / "disk.onnx", nfeatures=1024)
    out["lightglue-aliked"] = to_onnx("lightglue-aliked", folder / "lightglue-aliked.onnx")
    return out


def torch_features(detector: cvdeep.Feature2D, image: np.ndarray, mask: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keypoints, desc = detector.detectAndCompute(image, mask)
    return (cv2.KeyPoint_convert(keypoints).reshape(-1, 2), np.array([k.response for k in keypoints], np.float32),
            desc if desc is not None else np.zeros((0, detector.descriptorSize()), np.float32))


def onnxruntime_features(path: Path, image: np.ndarray, channels: int, gray: str = "luminance"
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw session outputs -> (pixels (N, 2), scores, descriptors), reading each layout by hand."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feed = {"image": imageio.to_array(image, channels, gray)}
    if "mask" in [i.name for i in session.get_inputs()]:
        feed["mask"] = np.ones((1, 1, *image.shape[:2]), np.uint8)
    out = dict(zip(names, session.run(None, feed)))
    layout = session.get_modelmeta().custom_metadata_map["cvdeep.layout"]
    if layout == "opencv-disk":
        assert out["keypoints"].dtype == np.int64 and out["keypoints"].ndim == 3
        return out["keypoints"][0].astype(np.float32), out["scores"][0], out["descriptors"][0]
    if layout == "opencv-aliked":
        size = np.array(image.shape[1::-1], np.float32)
        assert np.abs(out["keypoints"]).max() <= 1.0
        return (out["keypoints"] + 1) * 0.5 * size, out["scores"], out["descriptors"]
    return out["keypoints"], out["scores"], out["descriptors"]


# --- onnxruntime and cv2.dnn against torch ------------------------------------------------------


@pytest.mark.parametrize("name", ["xfeat", "disk", "aliked-n16"])
def test_detector_files_match_torch_in_onnxruntime_and_cv2_dnn(files, crop, odd_crop, name):
    family = {"xfeat": "XFeat", "disk": "DISK", "aliked-n16": "ALIKED"}[name]
    detector = getattr(cvdeep, family)(1024, model=name, device="cpu", precision="fp32")  # the files are fp32
    convention = detector.family.input
    for image in (crop, odd_crop):
        ref = torch_features(detector, image)
        got = onnxruntime_features(files[name], image, convention.channels, convention.gray)
        assert_agrees(*got, *ref, what=f"{name} onnxruntime {image.shape}")
    # OpenCV's DNN engine on the same file (the raw graph, no class around it)
    net = cv2.dnn.readNet(str(files[name]))
    net.setInput(imageio.to_array(crop, convention.channels, convention.gray), "image")
    if name == "xfeat":  # exported with --mask-input
        net.setInput(np.ones((1, 1, *crop.shape[:2]), np.uint8), "mask")
    session = ort.InferenceSession(str(files[name]), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, net.forward(names)))
    ref = onnxruntime_features(files[name], crop, convention.channels, convention.gray)
    keypoints = out["keypoints"]
    if keypoints.ndim == 3:
        got = keypoints[0].astype(np.float32), out["scores"].reshape(-1), out["descriptors"][0]
    elif name == "aliked-n16":
        got = ((keypoints + 1) * 0.5 * np.array(crop.shape[1::-1], np.float32), out["scores"].reshape(-1),
               out["descriptors"])
    else:
        got = keypoints, out["scores"].reshape(-1), out["descriptors"]
    assert_agrees(*got, *ref, what=f"{name} cv2.dnn")


def test_aliked_variants(tmp_path, odd_crop):
    """Every ALIKED variant exports (t16's 64-D descriptors, n32's 32 samples, n16rot) and agrees."""
    small = np.ascontiguousarray(odd_crop[:120, :160])
    for name in ("aliked-t16", "aliked-n16rot", "aliked-n32"):
        path = to_onnx(name, tmp_path / f"{name}.onnx", nfeatures=200, input_size=(160, 120))
        detector = cvdeep.ALIKED(200, model=name, device="cpu", precision="fp32")
        assert_agrees(*onnxruntime_features(path, small, 3), *torch_features(detector, small), what=name)


@pytest.mark.filterwarnings("ignore::cvdeep.NonCommercialWeightsWarning")  # superpoint-v1 layout, random weights
def test_superpoint_both_layouts(tmp_path, crop):
    """SuperPoint (no official weights here: seeded random ones, saved and loaded through the hub)."""
    from cvdeep.nets.superpoint import SuperPointMagicLeap, SuperPointOpen

    torch.manual_seed(0)
    for model, network in (("superpoint-open", SuperPointOpen()), ("superpoint-v1", SuperPointMagicLeap())):
        with torch.no_grad():
            for module in network.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.1, 0.1)
                    module.running_var.uniform_(0.5, 2.0)
        weights = tmp_path / f"{model}.pth"
        torch.save(network.state_dict(), weights)
        path = to_onnx(model, tmp_path / f"{model}.onnx", weights=weights, nfeatures=500)
        detector = cvdeep.SuperPoint(500, model=model, weights=weights, device="cpu")
        # random weights give many near-equal scores, whose order float rounding may swap at the cut
        assert_agrees(*onnxruntime_features(path, crop, 1), *torch_features(detector, crop), what=model, found_min=0.99)


def test_fp16_and_opsets(tmp_path, crop):
    detector = cvdeep.XFeat(1024, device="cpu", precision="fp32")
    ref = torch_features(detector, crop)
    for opset in (13,):
        path = to_onnx("xfeat", tmp_path / f"xfeat-{opset}.onnx", opset=opset, nfeatures=1024)
        assert onnx.load(str(path)).opset_import[0].version == opset
        assert_agrees(*onnxruntime_features(path, crop, 1, "mean"), *ref, what=f"opset {opset}")
    half = to_onnx("xfeat", tmp_path / "xfeat-fp16.onnx", precision="fp16", nfeatures=1024)
    weights = [t for t in onnx.load(str(half)).graph.initializer if t.dims and np.prod(t.dims) > 1000]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    # float16 convolutions: a few keypoints move between near-equal maxima; descriptors to fp16 precision
    assert_agrees(*onnxruntime_features(half, crop, 1, "mean"), *ref, what="fp16", found_min=0.98,
                  score_tol=1e-2, desc_tol=2e-2)


def test_lightglue_matches_torch(files, aliked_pair, small_pair, tmp_path):
    f = aliked_pair
    matcher = cvdeep.ONNXLightGlue(files["lightglue-aliked"])
    got, got_confidence = matcher.match_features(f["xy0"], f["d0"], f["s0"], f["xy1"], f["d1"], f["s1"])
    reference = {tuple(p): c for p, c in zip(f["pairs"].tolist(), f["confidence"])}
    found = {tuple(p): c for p, c in zip(got.tolist(), got_confidence)}
    iou = len(reference.keys() & found.keys()) / len(reference.keys() | found.keys())
    assert len(reference) > 100 and iou >= 0.99, f"{len(found)} vs {len(reference)} matches, IoU {iou:.4f}"
    assert max(abs(reference[p] - found[p]) for p in reference.keys() & found.keys()) <= 1e-3
    with pytest.raises(cvdeep.Error, match="setPairInfo"):
        matcher.match(f["d0"], f["d1"])
    matcher.setPairInfo(f["xy0"], f["xy1"], f["s0"], f["s1"])
    dmatches = matcher.match(f["d0"], f["d1"])
    assert len(dmatches) == len(found) and dmatches[0].distance <= dmatches[-1].distance
    with pytest.raises(cvdeep.Error, match="descriptors"):
        matcher.match_features(f["xy0"], f["d0"][:, :64], f["s0"], f["xy1"], f["d1"], f["s1"])
    # LighterGlue (XFeat): 96 channels, one head, 6 layers
    light = to_onnx("lighterglue-xfeat", tmp_path / "lighterglue.onnx")
    xfeat = cvdeep.XFeat(512, device="cpu", precision="fp32")
    (xy0, _, d0), (xy1, _, d1) = (torch_features(xfeat, image) for image in small_pair)
    pairs, _ = cvdeep.LightGlue("xfeat", width_confidence=-1).match_features(xy0, d0, f["s0"], xy1, d1, f["s1"])
    got, _ = cvdeep.ONNXLightGlue(light).match_features(xy0, d0, f["s0"], xy1, d1, f["s1"])
    a, b = set(map(tuple, pairs.tolist())), set(map(tuple, got.tolist()))
    assert len(a) > 50 and len(a & b) / len(a | b) >= 0.99


# --- OpenCV 5's own classes, in a process without torch ------------------------------------------


@pytest.mark.skipif(not HAS_CV2_CLASSES, reason="this cv2 has no ALIKED/DISK/LightGlueMatcher (OpenCV < 5)")
def test_opencv5_classes_read_the_files(files, crop, aliked_pair, tmp_path):
    aliked = cvdeep.ALIKED(1024, model="aliked-n16", device="cpu", precision="fp32")
    disk = cvdeep.DISK(1024, device="cpu", precision="fp32")  # the files are fp32
    f = aliked_pair
    out = run_without_torch(f"""
        import cv2, numpy as np
        z = np.load("inputs.npz")
        image = z["image"]
        params = cv2.ALIKED_Params()
        params.inputSize = (image.shape[1], image.shape[0])   # no resize: the network sees the image as cvdeep does
        aliked = cv2.ALIKED_create({str(files["aliked-n16"])!r}, params)
        ka, da = aliked.detectAndCompute(image, None)
        disk = cv2.DISK_create({str(files["disk"])!r})
        disk.setImageSize((image.shape[1], image.shape[0]))
        kd, dd = disk.detectAndCompute(image, None)
        matcher = cv2.LightGlueMatcher_create({str(files["lightglue-aliked"])!r}, 0.0)
        # keypoints normalised as LightGlue does, no sizes: cv2 passes them through unchanged
        matcher.setPairInfo(z["n0"], z["n1"])
        matches = matcher.match(z["d0"], z["d1"])
        as_xy = lambda kps: cv2.KeyPoint_convert(kps).reshape(-1, 2)
        np.savez("outputs.npz", ka=as_xy(ka), ra=np.float32([k.response for k in ka]), da=da,
                 sa=np.float32([k.size for k in ka]), kd=as_xy(kd), rd=np.float32([k.response for k in kd]), dd=dd,
                 m=np.int64([(m.queryIdx, m.trainIdx) for m in matches]),
                 c=np.float32([1 - m.distance for m in matches]))
    """, tmp_path, image=crop, n0=normalize_keypoints(f["xy0"], f["s0"]), n1=normalize_keypoints(f["xy1"], f["s1"]),
        d0=f["d0"], d1=f["d1"])
    assert_agrees(out["ka"], out["ra"], out["da"], *torch_features(aliked, crop), what="cv2.ALIKED")
    assert (out["sa"] == 1.0).all()  # cv2.ALIKED sets KeyPoint.size 1 (cvdeep: 5, the NMS window)
    assert_agrees(out["kd"], out["rd"], out["dd"], *torch_features(disk, crop), what="cv2.DISK")
    a, b = set(map(tuple, f["pairs"].tolist())), set(map(tuple, out["m"].tolist()))
    assert len(a) > 100 and len(a & b) / len(a | b) >= 0.99


# --- ONNXFeature2D without torch ----------------------------------------------------------------


def test_onnx_feature2d_without_torch(files, crop, odd_crop, tmp_path):
    xfeat = cvdeep.XFeat(1024, device="cpu", precision="fp32")
    aliked = cvdeep.ALIKED(1024, model="aliked-n16", device="cpu", precision="fp32")
    mask = np.zeros(crop.shape[:2], np.uint8)
    mask[40:200, 60:260] = 255
    kps = xfeat.detect(odd_crop)[:200]
    out = run_without_torch(f"""
        import cv2, numpy as np, pickle, cvdeep
        assert not hasattr(cvdeep, "XFeat")  # the torch models are absent, the ONNX classes are there
        z = np.load("inputs.npz")
        xfeat = cvdeep.ONNXFeature2D({str(files["xfeat"])!r})    # finds xfeat.describe.onnx beside it
        aliked = cvdeep.ONNXFeature2D({str(files["aliked-n16"])!r})
        result = {{}}
        for name, f in (("x", xfeat), ("a", aliked)):
            k, d = f.detectAndCompute(z["crop"], None)
            result[name + "k"] = cv2.KeyPoint_convert(k).reshape(-1, 2)
            result[name + "r"] = np.float32([p.response for p in k])
            result[name + "d"] = d; result[name + "s"] = np.float32([p.size for p in k])
        k, d = xfeat.detectAndCompute(z["crop"], z["mask"])      # a file with a mask input
        result["mk"], result["mr"], result["md"] = (cv2.KeyPoint_convert(k).reshape(-1, 2),
                                                    np.float32([p.response for p in k]), d)
        k = aliked.detect(z["crop"], z["mask"])                   # a file without one
        result["pk"] = cv2.KeyPoint_convert(k).reshape(-1, 2)
        given = [cv2.KeyPoint(float(x), float(y), 8.0) for x, y in z["given"]]
        _, result["cd"] = xfeat.compute(z["odd"], given)
        aliked_describe = cvdeep.ONNXFeature2D({str(files["aliked-n16"])!r}, {str(files["aliked-describe"])!r})
        _, result["acd"] = aliked_describe.compute(z["odd"], given)
        lists = xfeat.detectAndCompute([z["crop"], z["odd"]], None)
        result["lists"] = np.int64([len(k) for k in lists[0]])
        result["info"] = np.array([xfeat.descriptorSize(), xfeat.defaultNorm() == cv2.NORM_L2,
                                   xfeat.descriptorType() == cv2.CV_32F, xfeat.empty(), aliked.descriptorSize()])
        errors = []
        for call in (lambda: xfeat.detect(None), lambda: xfeat.detect(z["crop"].astype(np.float32)),
                     lambda: xfeat.detect(z["crop"], np.ones((3, 3), np.uint8)),
                     lambda: aliked.compute(z["crop"], given),
                     lambda: xfeat.compute(z["crop"], [1, 2]), lambda: cvdeep.ONNXFeature2D("missing.onnx"),
                     lambda: cvdeep.ONNXLightGlue({str(files["xfeat"])!r})):
            try:
                call()
                errors.append("no error")
            except cvdeep.Error as e:
                errors.append(str(e))
        result["errors"] = np.array(errors)
        clone = pickle.loads(pickle.dumps(xfeat))
        result["clone"] = cv2.KeyPoint_convert(clone.detect(z["crop"])).reshape(-1, 2)
        np.savez("outputs.npz", **result)
    """, tmp_path, crop=crop, odd=odd_crop, mask=mask, given=cv2.KeyPoint_convert(kps))
    assert_agrees(out["xk"], out["xr"], out["xd"], *torch_features(xfeat, crop), what="ONNXFeature2D(XFeat)")
    assert_agrees(out["ak"], out["ar"], out["ad"], *torch_features(aliked, crop), what="ONNXFeature2D(ALIKED)")
    assert (out["xs"] == xfeat.detect(crop)[0].size).all() and (out["as"] == 5.0).all()  # KeyPoint.size as cvdeep
    # a file with a mask input applies it before NMS and nfeatures: as the torch model
    assert_agrees(out["mk"], out["mr"], out["md"], *torch_features(xfeat, crop, mask), what="mask input")
    # without one, the keypoints outside the mask are dropped afterwards: the unmasked ones inside it
    inside = mask[np.rint(out["ak"][:, 1]).astype(int), np.rint(out["ak"][:, 0]).astype(int)] > 0
    assert len(out["pk"]) > 100 and np.array_equal(out["pk"], out["ak"][inside])
    _, ref_desc = xfeat.compute(odd_crop, kps)
    assert np.abs(out["cd"] - ref_desc).max() <= 1e-4
    _, ref_desc = aliked.compute(odd_crop, kps)
    assert np.abs(out["acd"] - ref_desc).max() <= 1e-4
    assert out["lists"].tolist() == [len(xfeat.detect(crop)), len(xfeat.detect(odd_crop))]
    assert out["info"].tolist() == [64, 1, 1, 0, 128]
    errors = out["errors"].tolist()
    assert "no error" not in errors, errors
    assert "cv2.imread returns None" in errors[0] and "8-bit" in errors[1] and "mask" in errors[2]
    assert "describe" in errors[3] and "cv2.KeyPoint" in errors[4] and "no such ONNX file" in errors[5]
    assert "detector file" in errors[6] and "matcher" in errors[6]
    assert np.array_equal(out["clone"], out["xk"][: len(out["clone"])]) and len(out["clone"]) == len(out["xk"])


# --- parameters and errors ----------------------------------------------------------------------


def test_baked_parameters_and_metadata(tmp_path, crop):
    path = to_onnx("disk", tmp_path / "disk.onnx", nfeatures=300, detection_threshold=1.0, border=8,
                   input_size=(320, 240))
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["cvdeep.layout"] == "opencv-disk" and meta["cvdeep.input_size"] == "320x240"
    assert json.loads(meta["cvdeep.config"])["nfeatures"] == 300
    detector = cvdeep.DISK(300, 1.0, border=8, device="cpu", precision="fp32")
    feature = cvdeep.ONNXFeature2D(path)
    xy, scores, desc = torch_features(detector, crop)
    keypoints, got = feature.detectAndCompute(crop, None)
    assert len(keypoints) == 300 and min(k.response for k in keypoints) > 1.0
    pts = cv2.KeyPoint_convert(keypoints)
    assert pts.min() >= 8 and (pts[:, 0] < 320 - 8).all() and (pts[:, 1] < 240 - 8).all()
    assert_agrees(pts, np.float32([k.response for k in keypoints]), got, xy, scores, desc, what="baked")
    with pytest.raises(cvdeep.Error, match="320x240"):
        feature.detect(crop[:200])
    # a Feature2D exports with its own parameters, a cvdeep.LightGlue with its filter threshold
    xfeat = to_onnx(cvdeep.XFeat(300, 0.1, device="cpu", precision="fp32"), tmp_path / "xfeat.onnx")
    config = json.loads({p.key: p.value for p in onnx.load(str(xfeat)).metadata_props}["cvdeep.config"])
    assert (config["nfeatures"], config["detection_threshold"]) == (300, 0.1)
    torch_xfeat = cvdeep.XFeat(300, 0.1, device="cpu", precision="fp32")
    assert len(cvdeep.ONNXFeature2D(xfeat).detect(crop)) == len(torch_xfeat.detect(crop))


@pytest.mark.parametrize("call, message", [
    (lambda p: to_onnx("hardnet++", p), "no ONNX export"),
    (lambda p: to_onnx("xfeat", p, opset=11), "opset"),
    (lambda p: to_onnx("xfeat", p, precision="int8"), "precision"),
    (lambda p: to_onnx("xfeat", p, nms="soft"), "not exportable"),
    (lambda p: to_onnx("xfeat", p, nfeatures=-1), "nfeatures"),
    (lambda p: to_onnx("xfeat", p, input_size=(0, 10)), "input_size"),
    (lambda p: to_onnx("xfeat", p, graph="dense"), "graph"),
    (lambda p: to_onnx("lightglue-disk", p, input_size=(64, 64)), "LightGlue"),
    (lambda p: to_onnx("lightglue-disk", p, filter_threshold=2.0), "filter_threshold"),
    (lambda p: to_onnx(42, p), "registry name"),
    (lambda p: to_onnx(cvdeep.LightGlue("disk"), p, filter_threshold="high"), "filter_threshold"),
    (lambda p: to_onnx(cvdeep.LightGlue("disk"), p, nfeatures=10), "only filter_threshold"),
])
def test_export_errors(tmp_path, call, message):
    with pytest.raises(cvdeep.Error, match=message):
        call(tmp_path / "out.onnx")


def test_cli_reports_errors(tmp_path, capsys):
    assert cli_main(["export", "onnx", "xfeat", str(tmp_path / "x.onnx"), "--set", "nfeatures"]) == 1
    assert cli_main(["export", "onnx", "xfeat", str(tmp_path / "x.onnx"), "--input-size", "640"]) == 1
    err = capsys.readouterr().err
    assert "NAME=VALUE" in err and "WIDTHxHEIGHT" in err


def test_onnx_lightglue_pickles_by_path_and_takes_none_descriptors(shared: Path, tmp_path: Path) -> None:
    """Like cvdeep.LightGlue (which exports after unpickling too): the file path travels (the session is
    reopened), an image without keypoints (``detectAndCompute`` -> ``((), None)``) gives no matches."""
    import copy
    import pickle

    unpickled = pickle.loads(pickle.dumps(cvdeep.LightGlue("xfeat")))  # exported before its first match
    matcher = cvdeep.ONNXLightGlue(to_onnx(unpickled, tmp_path / "lighterglue.onnx"))
    rng = np.random.default_rng(5)
    points = rng.uniform(0, 200, (40, 2)).astype(np.float32)
    rows = rng.normal(size=(40, 64)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    expected = matcher.match_features(points, rows, (200, 200), points, rows, (200, 200))
    assert len(expected[0]) > 20
    data = pickle.dumps(matcher)
    assert len(data) < 10_000  # the path, not the session or the file
    for other in (pickle.loads(data), copy.deepcopy(matcher)):
        pairs, scores = other.match_features(points, rows, (200, 200), points, rows, (200, 200))
        assert np.array_equal(pairs, expected[0]) and np.allclose(scores, expected[1], atol=1e-6)
        pairs, scores = other.match_features((), None, (200, 200), points, rows, (200, 200))
        assert pairs.shape == (0, 2) and scores.shape == (0,)
        other.setPairInfo(points, (), (200, 200), (200, 200))
        assert other.match(rows, None) == []
