"""Patch descriptors: fidelity against kornia, the Feature2D contract, and patch matching on real pairs.

DeepDesc and TFeat run with their official weights. HardNet, SOSNet, HyNet, SDGMNet and
L2-Net official weights are not obtainable offline (HardNet, SDGMNet and L2-Net ship weights
cvdeep trained, tested as such): they are checked with random weights saved in
their official layouts (HardNet, SOSNet, HyNet, TFeat against kornia's own modules; L2-Net
as a MatConvNet .mat against a re-implementation of the authors' MATLAB test code).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import cvdeep
from conftest import read_homography
from cvdeep.models import build_model
from cvdeep.nets.deepdesc import DeepDesc
from cvdeep.nets.hardnet import HardNet
from cvdeep.nets.hynet import HyNet
from cvdeep.nets.l2net import L2Net
from cvdeep.nets.patch_descriptor import SIFT_SCALE_FACTOR
from cvdeep.nets.sosnet import SOSNet
from cvdeep.nets.tfeat import TFeat
from cvdeep.ops import extract_patches

kornia_feature = pytest.importorskip("kornia.feature")

ALL_SEVEN = ("DeepDesc", "TFeat", "HardNet", "SOSNet", "HyNet", "SDGMNet", "L2Net")
WITH_REAL_WEIGHTS = ("DeepDesc", "TFeat")


def _randomize(network: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random parameters and BatchNorm statistics (a fresh network has identity statistics).
    FRN/TLU parameters stay near their initial values so that no layer saturates to a constant."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if not tensor.is_floating_point() or name.endswith(".eps"):
                continue
            if tensor.dim() == 4 and tensor.shape[0] == 1 and tensor.shape[-1] == 1:  # FRN weight/bias, TLU tau
                initial = {"weight": 1.0, "bias": 0.0, "tau": -1.0}[name.rsplit(".", 1)[1]]
                tensor.copy_(initial + 0.1 * torch.randn(tensor.shape, generator=generator))
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith("pixel_mean"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 255)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)
    return network.eval()


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image


def _real_patches(image: np.ndarray, keypoints, patch_size: int = 32,
                  scale_factor: float = SIFT_SCALE_FACTOR) -> torch.Tensor:
    tensor = torch.from_numpy(_gray(image)).float()[None, None] / 255.0
    xy = torch.from_numpy(cv2.KeyPoint_convert(keypoints)).float()
    sizes = torch.tensor([kp.size for kp in keypoints])
    angles = torch.tensor([kp.angle for kp in keypoints])
    return extract_patches(tensor, xy, sizes, angles, patch_size, scale_factor)


@pytest.fixture(scope="module")
def graf_sift(graf_pair):
    image = graf_pair[0][:400, :500]
    keypoints = cv2.SIFT_create(150).detect(image)
    return image, keypoints


# --- geometry: OpenCV SIFT keypoints are cropped as the HardNet authors' kornia pipeline crops them ---

@pytest.mark.parametrize("model", [DeepDesc, HardNet, SOSNet, HyNet, TFeat, L2Net])
def test_sift_patch_geometry_is_the_kornia_opencv_sift_convention(model, graf_sift):
    """kornia_moons' laf_from_opencv_SIFT_kpts: LAF centre pt, scale 6 x size, orientation -angle
    (A = 6 size R(-angle), cells on c + A [-1, 1]^2). Keypoints small enough that both sides
    sample the image itself (no pyramid level), so the patches must agree to rounding."""
    image, keypoints = graf_sift
    scale_factor = model().scale_factor
    small = [kp for kp in keypoints if kp.size * scale_factor / 32 < 2.0]
    assert len(small) > 30
    tensor = torch.from_numpy(_gray(image)).float()[None, None] / 255.0
    xy = torch.from_numpy(cv2.KeyPoint_convert(small)).float()
    lafs = kornia_feature.laf_from_center_scale_ori(
        xy[None], 6.0 * torch.tensor([kp.size for kp in small]).view(1, -1, 1, 1),
        -torch.tensor([kp.angle for kp in small]).view(1, -1, 1))
    expected = kornia_feature.extract_patches_simple(tensor, lafs, 32)[0]
    actual = _real_patches(image, small, scale_factor=scale_factor)
    assert (actual - expected).abs().max().item() < 1e-4


# --- fidelity: the same state_dict in cvdeep's and kornia's modules gives the same descriptors ---

@pytest.mark.parametrize("ours_cls, kornia_name, seed", [
    (HardNet, "HardNet", 1), (SOSNet, "SOSNet", 2), (HyNet, "HyNet", 3), (TFeat, "TFeat", 4),
])
def test_equals_kornia_with_the_same_state_dict(ours_cls, kornia_name, seed, graf_sift):
    ours = _randomize(ours_cls(), seed)
    reference = getattr(kornia_feature, kornia_name)(pretrained=False).eval()
    reference.load_state_dict(ours.state_dict(), strict=True)
    patches = _real_patches(*graf_sift) * 255.0
    with torch.no_grad():
        expected, actual = reference(patches), ours(patches)
    assert actual.shape == expected.shape == (len(patches), 128)
    assert (actual - expected).abs().max().item() < 1e-4
    # The keypoints give distinct patches, so a mix-up of rows would show.
    assert torch.cdist(actual, actual).fill_diagonal_(1.0).min() > 1e-3


def test_tfeat_real_weights_equal_kornia(shared, graf_sift):
    state = torch.load(shared / "weights" / "tfeat" / "tfeat-liberty.params", map_location="cpu", weights_only=True)
    ours = build_model("tfeat-liberty")
    reference = kornia_feature.TFeat(pretrained=False).eval()
    reference.load_state_dict(state, strict=True)
    patches = _real_patches(*graf_sift) * 255.0
    with torch.no_grad():
        assert torch.allclose(ours(patches), reference(patches), atol=1e-5)


def test_sdgmnet_checkpoint_with_feature_aliases_loads(tmp_path):
    """SDGMNet files wrap the state_dict and repeat each tensor under ``features.K-1``."""
    source = _randomize(HyNet(intensity_scale=1.0), 5)
    state = dict(source.state_dict())
    for key, value in list(state.items()):
        layer, _, rest = key.partition(".")
        state[f"features.{int(layer[len('layer'):]) - 1}.{rest}"] = value.clone()
    target = HyNet(intensity_scale=1.0)
    target.load_pretrained({"model_state_dict": state, "epoch": 3})
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    state["features.0.0.weight"] = state["features.0.0.weight"] + 1
    with pytest.raises(ValueError):
        HyNet(intensity_scale=1.0).load_pretrained({"model_state_dict": state})


def test_hynet_and_sdgmnet_differ_only_in_input_range(graf_sift):
    hynet = _randomize(HyNet(intensity_scale=255.0), 6)
    sdgmnet = HyNet(intensity_scale=1.0).eval()
    sdgmnet.load_state_dict(hynet.state_dict())
    image, keypoints = graf_sift
    tensor = torch.from_numpy(_gray(image)).float()[None, None] / 255.0
    xy = torch.from_numpy(cv2.KeyPoint_convert(keypoints)).float()
    sizes, angles = torch.tensor([kp.size for kp in keypoints]), torch.tensor([kp.angle for kp in keypoints])
    patches = _real_patches(image, keypoints)
    with torch.no_grad():
        assert torch.allclose(hynet.describe(tensor, xy, sizes, angles), hynet(patches * 255.0), atol=1e-5)
        assert torch.allclose(sdgmnet.describe(tensor, xy, sizes, angles), sdgmnet(patches), atol=1e-5)


def test_l2net_central_surround_towers(graf_sift):
    """CS: tower 1 sees the 64x64 patch at half resolution, tower 2 its central 32x32."""
    plain = _randomize(L2Net(), 7)
    cs = _randomize(L2Net(central_surround=True), 8)
    patches = _real_patches(graf_sift[0], graf_sift[1], patch_size=64) * 255.0
    with torch.no_grad():
        out = cs(patches)
        assert out.shape == (len(patches), 256)
        assert torch.allclose(out[:, :128], cs.tower(torch.nn.functional.avg_pool2d(patches, 2)))
        assert torch.allclose(out[:, 128:], cs.center_tower(patches[..., 16:48, 16:48]))
        assert torch.allclose(out.norm(dim=1), torch.full((len(patches),), 2**0.5), atol=1e-4)
        assert plain(patches[..., 16:48, 16:48]).shape == (len(patches), 128)


# --- L2-Net: the official MatConvNet layout, converted ---

L2NET_CONVS = ((3, 1, 32, 1), (3, 32, 32, 1), (3, 32, 64, 2), (3, 64, 64, 1), (3, 64, 128, 2), (3, 128, 128, 1),
               (8, 128, 128, 1))


def _simplenn_tower(rng: np.random.Generator) -> tuple[dict, list]:
    """A random L2-Net tower as MatConvNet's simplenn stores it, plus its raw arrays."""
    layers, raw = [], []
    for index, (k, cin, cout, stride) in enumerate(L2NET_CONVS):
        filters = rng.normal(0, (2 / (k * k * cin)) ** 0.5, (k, k, cin, cout)).astype(np.float32)
        biases = rng.normal(0, 0.1, (cout, 1)).astype(np.float32)
        multipliers = rng.uniform(0.5, 1.5, (cout, 1)).astype(np.float32)
        shifts = rng.normal(0, 0.1, (cout, 1)).astype(np.float32)
        moments = np.stack([rng.normal(0, 0.2, cout), rng.uniform(0.5, 2.0, cout)], axis=1).astype(np.float32)
        weights = np.empty((1, 2), object)
        weights[0, 0], weights[0, 1] = filters, biases
        layers.append({"type": "conv", "weights": weights, "stride": np.array([stride, stride], float),
                       "pad": np.array([k // 2 if k == 3 else 0] * 4, float)})
        bn_weights = np.empty((1, 3), object)
        bn_weights[0, 0], bn_weights[0, 1], bn_weights[0, 2] = multipliers, shifts, moments
        layers.append({"type": "bnorm", "weights": bn_weights})
        if index < 6:
            layers.append({"type": "relu"})
        raw.append((filters, biases, multipliers, shifts, moments, stride, k // 2 if k == 3 else 0))
    cell = np.empty((1, len(layers)), object)
    for i, layer in enumerate(layers):
        cell[0, i] = layer
    return {"layers": cell}, raw


def write_l2net_mat(path: Path, rng: np.random.Generator) -> dict:
    """An .mat with the variables the authors' cal_L2Net_des.m loads: net, netCen, pixMean, pixMeanCen."""
    scipy_io = pytest.importorskip("scipy.io")
    net, raw = _simplenn_tower(rng)
    net_cen, raw_cen = _simplenn_tower(rng)
    means = rng.uniform(80, 160, (32, 32)).astype(np.float32), rng.uniform(80, 160, (32, 32)).astype(np.float32)
    scipy_io.savemat(str(path), {"net": net, "netCen": net_cen, "pixMean": means[0], "pixMeanCen": means[1]})
    return {"tower": (raw, means[0]), "center": (raw_cen, means[1])}


def matconvnet_tower(patches: torch.Tensor, raw: list, pixel_mean: np.ndarray) -> torch.Tensor:
    """The authors' test-time computation, written from cal_L2Net_des.m and MatConvNet's layer definitions."""
    x = patches - torch.from_numpy(pixel_mean)
    flat = x.flatten(1)
    x = ((flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-12)).view_as(x)
    for index, (filters, biases, multipliers, shifts, moments, stride, pad) in enumerate(raw):
        weight = torch.from_numpy(filters).permute(3, 2, 0, 1)
        x = torch.nn.functional.conv2d(x, weight, torch.from_numpy(biases[:, 0]), stride=stride, padding=pad)
        view = lambda a: torch.from_numpy(np.ascontiguousarray(a)).view(1, -1, 1, 1)  # noqa: E731
        x = view(multipliers[:, 0]) * (x - view(moments[:, 0])) / view(moments[:, 1]) + view(shifts[:, 0])
        if index < 6:
            x = torch.relu(x)
    x = x.flatten(1)
    return x / x.norm(dim=1, keepdim=True)


def test_l2net_mat_converts_to_the_authors_computation(tmp_path, graf_sift):
    path = tmp_path / "L2Net-LIB+.mat"
    raw = write_l2net_mat(path, np.random.default_rng(21))
    patches = _real_patches(graf_sift[0], graf_sift[1], patch_size=64) * 255.0
    cs = build_model("l2net-cs", weights=path)
    plain = build_model("l2net", weights=path)
    with torch.no_grad():
        surround = torch.nn.functional.avg_pool2d(patches, 2)
        expected_plain = matconvnet_tower(surround, *raw["tower"])
        expected_center = matconvnet_tower(patches[..., 16:48, 16:48], *raw["center"])
        assert (plain(surround) - expected_plain).abs().max() < 1e-4
        assert (cs(patches) - torch.cat([expected_plain, expected_center], 1)).abs().max() < 1e-4
    with pytest.raises(cvdeep.Error):
        build_model("l2net", weights=tmp_path / "missing.mat")


# --- the Feature2D contract ---------------------------------------------------------------

@pytest.fixture(scope="module")
def random_weight_files(tmp_path_factory) -> dict[str, Path]:
    """Random weights saved as the official files are laid out, for models not obtainable here."""
    folder = tmp_path_factory.mktemp("weights")
    files = {}
    hardnet = _randomize(HardNet(), 11)
    files["HardNet"] = folder / "hardnet.pth"
    torch.save({"state_dict": hardnet.state_dict(), "epoch": 9}, files["HardNet"])
    files["SOSNet"] = folder / "sosnet.pth"
    torch.save(_randomize(SOSNet(), 12).state_dict(), files["SOSNet"])
    files["HyNet"] = folder / "hynet.pth"
    torch.save(_randomize(HyNet(), 13).state_dict(), files["HyNet"])
    files["SDGMNet"] = folder / "sdgmnet.pt"
    torch.save({"model_state_dict": _randomize(HyNet(intensity_scale=1.0), 14).state_dict()}, files["SDGMNet"])
    files["L2Net"] = files["L2Net-CS"] = folder / "L2Net-LIB+.mat"
    write_l2net_mat(files["L2Net"], np.random.default_rng(15))
    return files


def _create(name: str, files: dict[str, Path], **params):
    if name in WITH_REAL_WEIGHTS:
        return getattr(cvdeep, f"{name}_create")(**params)
    return getattr(cvdeep, f"{name}_create")(weights=str(files[name]), **params)


@pytest.mark.filterwarnings("ignore::cvdeep.NonCommercialWeightsWarning")
@pytest.mark.parametrize("name", ALL_SEVEN)
def test_compute_on_sift_keypoints(name, random_weight_files, churchill_pair, shared):
    image = churchill_pair[0][200:500, 200:600]
    keypoints = cv2.SIFT_create(200).detect(image)
    assert len(keypoints) > 100
    feature = _create(name, random_weight_files, device="cpu")
    out_keypoints, descriptors = feature.compute(image, keypoints)
    assert out_keypoints == tuple(keypoints)
    assert descriptors.dtype == np.float32 and descriptors.shape == (len(keypoints), feature.descriptorSize())
    assert np.isfinite(descriptors).all()
    assert len(np.unique(descriptors.round(4), axis=0)) > 0.9 * len(keypoints)


@pytest.mark.filterwarnings("ignore::cvdeep.NonCommercialWeightsWarning")
def test_l2net_cs_is_256d(random_weight_files, graf_sift):
    image, keypoints = graf_sift
    feature = cvdeep.L2Net_create(model="l2net-cs", weights=str(random_weight_files["L2Net"]), device="cpu")
    _, descriptors = feature.compute(image, keypoints)
    assert descriptors.shape == (len(keypoints), 256) and feature.descriptorSize() == 256


@pytest.mark.parametrize("name", ("SOSNet", "HyNet"))
def test_models_without_obtainable_weights_raise_the_hub_error(name, monkeypatch):
    monkeypatch.setenv("CVDEEP_OFFLINE", "1")
    with pytest.raises(cvdeep.Error, match="were not found"):
        getattr(cvdeep, f"{name}_create")(device="cpu")


@pytest.mark.filterwarnings("ignore::cvdeep.NonCommercialWeightsWarning")
@pytest.mark.parametrize("name, model", [("HardNet", "hardnet-cvdeep"), ("SDGMNet", "sdgmnet-cvdeep"),
                                         ("L2Net", "l2net-cvdeep")])
def test_works_offline_with_the_weights_cvdeep_trained(name, model, monkeypatch, graf_sift):
    """The official files are not here: ``HardNet_create()`` / ``SDGMNet_create()`` / ``L2Net_create()`` take the
    packaged weights cvdeep trained (sha256 checked on load) and describe any keypoints offline."""
    monkeypatch.setenv("CVDEEP_OFFLINE", "1")
    feature = getattr(cvdeep, f"{name}_create")(device="cpu")
    assert f"model='{model}'" in repr(feature)
    image, keypoints = graf_sift
    kept, descriptors = feature.compute(image, keypoints)
    assert len(kept) == len(keypoints) and descriptors.shape == (len(keypoints), 128)
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=1e-5)


def test_deepdesc_warns_non_commercial(shared):
    with pytest.warns(cvdeep.NonCommercialWeightsWarning):
        from cvdeep import weights
        weights._warned.discard("deepdesc-split4")
        cvdeep.DeepDesc_create(device="cpu")


def test_sift_duplicated_orientations_stay_aligned(churchill_pair):
    """SIFT returns one keypoint per dominant orientation at the same place; each row of
    detectAndCompute must describe its own keypoint (checked against one-at-a-time compute)."""
    image = churchill_pair[0][:400, :500]
    feature = cvdeep.TFeat_create(device="cpu")
    keypoints, descriptors = feature.detectAndCompute(image, None)
    reference = cv2.SIFT_create().detect(image)
    assert [kp.pt + (kp.angle,) for kp in keypoints] == [kp.pt + (kp.angle,) for kp in reference]
    places: dict[tuple[float, float], list[int]] = {}
    for index, kp in enumerate(keypoints):
        places.setdefault(kp.pt, []).append(index)
    twins = [indices for indices in places.values() if len(indices) > 1]
    assert len(twins) >= 5
    for indices in twins[:5]:
        for index in indices:
            _, alone = feature.compute(image, [keypoints[index]])
            np.testing.assert_allclose(alone[0], descriptors[index], atol=1e-5)
        assert not np.allclose(descriptors[indices[0]], descriptors[indices[1]], atol=1e-3)


def test_detector_parameter_accepts_cv2_and_cvdeep_features(churchill_pair):
    image = churchill_pair[0]
    orb = cv2.ORB_create(100)
    feature = cvdeep.TFeat_create(detector=orb, device="cpu")
    keypoints, descriptors = feature.detectAndCompute(image, None)
    assert len(keypoints) > 50
    assert [kp.pt for kp in keypoints] == [kp.pt for kp in orb.detect(image, None)]
    assert descriptors.shape == (len(keypoints), 128)
    assert feature.getDetector() is orb
    nested = cvdeep.TFeat_create(detector=cvdeep.TFeat_create(device="cpu"), device="cpu")  # a cvdeep Feature2D
    assert [kp.pt for kp in nested.detect(image)] == [kp.pt for kp in cv2.SIFT_create().detect(image)]
    with pytest.raises(cvdeep.Error, match="detector"):
        cvdeep.TFeat_create(detector="sift")


def test_detect_honours_mask_and_list_forms(churchill_pair):
    image = churchill_pair[0][200:500, 200:600]
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[:, :200] = 255
    feature = cvdeep.TFeat_create(device="cpu")
    keypoints = feature.detect(image, mask)
    assert keypoints and all(kp.pt[0] < 200 for kp in keypoints)
    lists = feature.detect([image, image[:, :200]])
    assert len(lists) == 2 and all(len(kps) > 0 for kps in lists)
    assert feature.compute(image, []) == ((), None)
    with pytest.raises(cvdeep.Error):
        feature.compute(image, [cv2.KeyPoint(10.0, 10.0, 0.0)])


# --- real weights on real pairs: patch matching against ground-truth homographies ---

def _pairs(data: Path) -> dict[str, tuple[Path, Path, Path]]:
    hpatches = {
        "v_churchill": data / "hpatches_subset" / "vbalnt_tfeat" / "imgs" / "v_churchill",
        "v_wormhole": data / "hpatches_subset" / "vbalnt_tfeat" / "imgs" / "v_wormhole",
        "v_graffiti": (data / "hpatches_subset" / "Ljy0109_LMC" / "part_of_datasets" / "hpatches-sequences-release"
                       / "v_graffiti"),
    }
    pairs = {f"{name} 1-2": (seq / "1.ppm", seq / "2.ppm", seq / "H_1_2") for name, seq in hpatches.items()}
    for name in ("graf", "wall"):
        seq = data / "oxford_affine" / "images" / name
        pairs[f"oxford {name} 1-2"] = (seq / "img1.ppm", seq / "img2.ppm", seq / "H1to2p")
    return pairs


def mean_average_precision(first: np.ndarray, second: np.ndarray, positives: np.ndarray) -> float:
    """Each query row of ``first`` ranks all rows of ``second`` by L2 distance; AP over its
    ground-truth positives; mean over queries that have any."""
    distances = torch.cdist(torch.from_numpy(first).double(), torch.from_numpy(second).double()).numpy()
    precisions = []
    for row, truth in zip(distances, positives):
        if not truth.any():
            continue
        ranks = np.flatnonzero(truth[np.argsort(row, kind="stable")]) + 1
        precisions.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    return float(np.mean(precisions))


def raw_pixel_descriptors(image: np.ndarray, keypoints) -> np.ndarray:
    """The baseline: the same 32x32 oriented patch, standardised, as a 1024-D vector."""
    flat = _real_patches(image, keypoints).flatten(1)
    return ((flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-7)).numpy()


def evaluate_pairs(data: Path, names=WITH_REAL_WEIGHTS, nfeatures: int = 500,
                   radius: float = 3.0) -> dict[str, dict[str, float]]:
    """mAP of SIFT, raw pixels and each named descriptor on SIFT keypoints of every pair.
    Positives: keypoints of image 2 within ``radius`` px of a keypoint of image 1 mapped by the homography."""
    sift = cv2.SIFT_create(nfeatures)
    features = {name: getattr(cvdeep, f"{name}_create")(device="cpu") for name in names}
    table = {}
    for pair, (first_path, second_path, homography_path) in _pairs(data).items():
        first, second = cv2.imread(str(first_path)), cv2.imread(str(second_path))
        keypoints1, sift1 = sift.detectAndCompute(first, None)
        keypoints2, sift2 = sift.detectAndCompute(second, None)
        mapped = cv2.perspectiveTransform(cv2.KeyPoint_convert(keypoints1)[None].astype(np.float64),
                                          read_homography(homography_path))[0]
        positives = np.linalg.norm(mapped[:, None] - cv2.KeyPoint_convert(keypoints2)[None], axis=2) < radius
        row = {"queries": float(positives.any(axis=1).sum()),
               "SIFT": mean_average_precision(sift1, sift2, positives),
               "raw pixels": mean_average_precision(raw_pixel_descriptors(first, keypoints1),
                                                    raw_pixel_descriptors(second, keypoints2), positives)}
        for name, feature in features.items():
            row[name] = mean_average_precision(feature.compute(first, keypoints1)[1],
                                               feature.compute(second, keypoints2)[1], positives)
        table[pair] = row
    return table


@pytest.fixture(scope="module")
def matching_table(data_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cvdeep.NonCommercialWeightsWarning)
        return evaluate_pairs(data_dir)


@pytest.mark.filterwarnings("ignore::cvdeep.NonCommercialWeightsWarning")
@pytest.mark.parametrize("name", WITH_REAL_WEIGHTS)
def test_corresponding_keypoints_are_nearer(name, churchill_pair):
    """On a viewpoint pair, each SIFT keypoint's true correspondent is nearer than a random other."""
    first, second, homography = churchill_pair
    sift = cv2.SIFT_create(500)
    keypoints1, keypoints2 = sift.detect(first), sift.detect(second)
    mapped = cv2.perspectiveTransform(cv2.KeyPoint_convert(keypoints1)[None].astype(np.float64), homography)[0]
    distance = np.linalg.norm(mapped[:, None] - cv2.KeyPoint_convert(keypoints2)[None], axis=2)
    nearest = distance.argmin(axis=1)
    matched = np.flatnonzero(distance[np.arange(len(keypoints1)), nearest] < 1.5)
    feature = getattr(cvdeep, f"{name}_create")(device="cpu")
    desc1 = feature.compute(first, [keypoints1[i] for i in matched])[1]
    desc2 = feature.compute(second, keypoints2)[1]
    positive = np.linalg.norm(desc1 - desc2[nearest[matched]], axis=1)
    rng = np.random.default_rng(0)
    others = rng.integers(0, len(keypoints2), len(matched))
    far = distance[matched, others] > 20
    negative = np.linalg.norm(desc1 - desc2[others], axis=1)
    assert len(matched) > 100
    assert np.mean(positive[far] < negative[far]) > 0.9
    assert np.median(positive) < 0.5 * np.median(negative)


def test_patch_matching_map_beats_raw_pixels_and_matches_sift_on_hpatches(matching_table):
    """Mean over pairs, as HPatches reports it (per-pair numbers: docs/RESULTS.md)."""
    for pair, row in matching_table.items():
        print(pair, {key: round(value, 3) for key, value in row.items()})

    def mean(column: str, hpatches_only: bool) -> float:
        return float(np.mean([row[column] for pair, row in matching_table.items()
                              if pair.startswith("v_") or not hpatches_only]))

    for name in WITH_REAL_WEIGHTS:
        assert mean(name, hpatches_only=False) > mean("raw pixels", hpatches_only=False), name
        assert mean(name, hpatches_only=True) > mean("raw pixels", hpatches_only=True), name
        assert mean(name, hpatches_only=True) >= mean("SIFT", hpatches_only=True), name
