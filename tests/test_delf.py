"""DELF (``cvdeep.nets.delf``, ``cvdeep.nets.delf_official``).

No DELF weights exist here: the official releases are TensorFlow SavedModels (and TensorFlow is
not installed) and ``delf-cvdeep`` is trained later. So the converter is checked on a checkpoint
this file writes with the official variable names and TensorFlow layouts, the backbone's geometry
on random weights, and the Feature2D contract on a checkpoint saved here.
"""
from __future__ import annotations

import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import cvdeep
from cvdeep.models import build_model, get_model
from cvdeep.nets import delf_official
from cvdeep.nets.delf import DELFConfig, DELFNet, box_nms, parse_scales, tf_legacy_resize
from feature_checks import GRAF, check_feature2d_contract, load_image

pytestmark = [pytest.mark.filterwarnings("ignore::cvdeep.weights.NonCommercialWeightsWarning"),
              pytest.mark.usefixtures("one_thread")]


def _randomise(network: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights and BatchNorm statistics, so converted tensors cannot match by accident."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if tensor.is_floating_point() and not name.startswith("pca_") and name != "attention_scale":
                values = torch.rand(tensor.shape, generator=generator) * 0.2 + (0.9 if "running_var" in name else -0.1)
                tensor.copy_(values)
    return network.eval()


# --- declaration ---------------------------------------------------------------------------------


def test_declaration_official_and_cvdeep_variants():
    family, gld = get_model("delf-gld")
    _, landmarks = get_model("delf-landmarks")
    _, own = get_model("delf-cvdeep")
    assert family.public_name == "DELF" and family.network is DELFNet and family.config is DELFConfig
    assert gld.weights.urls == ("http://storage.googleapis.com/delf/delf_gld_20190411.tar.gz",)
    assert landmarks.weights.urls == ("http://storage.googleapis.com/delf/delf_v1_20171026.tar.gz",)
    assert own.trained_by_cvdeep and own.weights.packaged and own.weights.filename == "delf-cvdeep.pt"
    defaults = DELFConfig()
    assert (defaults.nfeatures, defaults.detection_threshold, defaults.iou_threshold, defaults.pca_dim) == (1000, 100.0,
                                                                                                           1.0, 40)
    assert parse_scales(defaults.scales) == (0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142, 2.0)
    assert parse_scales("0.5;1") == parse_scales(" 0.5, 1.0") == (0.5, 1.0), "';' fits inside feature names' brackets"
    official, light = build_model("delf-gld", pretrained=False), build_model("delf-cvdeep", pretrained=False)
    assert official.descriptor_size == 1024 and official.receptive_field == 291 and official.stride == 32
    assert light.descriptor_size == 128 and light.receptive_field == 40 and light.stride == 4
    assert official.attention.conv1.weight.shape == (512, 1024, 1, 1) and light.attention.conv1.weight.shape[0] == 128


@pytest.mark.parametrize("bad", ["", "0.5,,x", "0,1", "-1", "9", "nan"])
def test_bad_scales_are_refused_at_construction(bad):
    with pytest.raises(cvdeep.Error, match="parameter 'scales'"):
        cvdeep.DELF_create(scales=bad)


# --- the official backbone's geometry and resizing ------------------------------------------------


@pytest.mark.parametrize(("width", "centre"), [(520, 258), (522, 256)])
def test_slim_resnet_receptive_field_is_291_px_around_the_cell_centre(width, centre):
    """Cell 8 of block3 changes exactly when an input pixel within 145 px of its centre changes: 32 * 8 + 2
    when the max-pool's input (ceil(W / 2) columns) is even, 32 * 8 when it is odd (TensorFlow's SAME pooling)."""
    torch.manual_seed(0)
    backbone = delf_official.SlimResNet50().eval()  # torch's initialisation keeps signal through 13 units
    assert backbone.cell_offset(width) == centre - 256
    image = torch.rand(1, 3, 33, width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = backbone(image)
        assert reference.shape == (1, 1024, 2, -(-width // 32))
        probes = ((centre - 146, False), (centre - 145, True), (centre + 145, True), (centre + 146, False))
        for column, reaches in probes:
            changed = image.clone()
            changed[..., 16, column] += 50.0
            assert (not torch.equal(backbone(changed)[0, :, 0, 8], reference[0, :, 0, 8])) == reaches, column


def test_same_max_pool_pads_like_tensorflow():
    x = torch.arange(16.0).view(1, 1, 4, 4)  # even: nothing before, one after -> windows start at 0, 2
    assert delf_official.same_max_pool(x).flatten().tolist() == [10.0, 11.0, 14.0, 15.0]
    y = torch.arange(25.0).view(1, 1, 5, 5)  # odd: one on each side -> windows centred at 0, 2, 4
    assert delf_official.same_max_pool(y)[0, 0, 0].tolist() == [6.0, 8.0, 9.0]


def test_tf_legacy_resize_samples_at_i_times_in_over_out():
    image = torch.tensor([[0.0, 10.0, 20.0, 30.0]]).view(1, 1, 1, 4)
    # out 3 of in 4: positions 0, 4/3, 8/3 -> 0, 13.33, 26.67; out 6: 0, 2/3, 4/3, 2, 8/3, 10/3 (clamped at the end)
    torch.testing.assert_close(tf_legacy_resize(image, 1, 3).flatten(), torch.tensor([0.0, 40 / 3, 80 / 3]))
    torch.testing.assert_close(tf_legacy_resize(image, 1, 6).flatten(),
                               torch.tensor([0.0, 20 / 3, 40 / 3, 20.0, 80 / 3, 30.0]))


# --- the converter ----------------------------------------------------------------------------------


def _official_variables(network: DELFNet) -> dict[str, np.ndarray]:
    """The network's weights under the official TensorFlow names and layouts, written out independently of
    ``delf_official.official_names`` from the layout of TF-slim's resnet_v1_50 and delf_v1.py."""
    state = network.state_dict()
    out: dict[str, np.ndarray] = {}

    def put(tf_scope: str, torch_prefix: str, bn: bool = True) -> None:
        kernel = state[f"{torch_prefix}.weight"].numpy()
        out[f"{tf_scope}/weights"] = kernel.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        if bn:
            for tf_leaf, torch_leaf in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                                        ("moving_variance", "running_var")):
                out[f"{tf_scope}/BatchNorm/{tf_leaf}"] = state[f"{torch_prefix}_bn.{torch_leaf}"].numpy()

    put("resnet_v1_50/conv1", "backbone.conv1")
    for block, units in ((1, 3), (2, 4), (3, 6)):
        for unit in range(units):
            scope = f"resnet_v1_50/block{block}/unit_{unit + 1}/bottleneck_v1"
            if unit == 0:
                put(f"{scope}/shortcut", f"backbone.block{block}.0.shortcut")
            for layer in ("conv1", "conv2", "conv3"):
                put(f"{scope}/{layer}", f"backbone.block{block}.{unit}.{layer}")
    put("attention_block/attention/compute/conv1", "attention.conv1")
    put("attention_block/attention/compute/conv2", "attention.conv2", bn=False)
    out["attention_block/attention/compute/conv2/biases"] = state["attention.conv2.bias"].numpy()
    # variables the extractor does not use: classifier, step counter, optimiser slots, block4
    out["attention_block/logits/weights"] = np.zeros((1, 1, 1024, 7), np.float32)
    out["global_step"] = np.array(100, np.int64)
    out["resnet_v1_50/conv1/weights/Momentum"] = np.zeros((7, 7, 3, 64), np.float32)
    out["resnet_v1_50/block4/unit_1/bottleneck_v1/conv1/weights"] = np.zeros((1, 1, 1024, 512), np.float32)
    return out


def test_official_variables_convert_strictly_into_the_network(tmp_path):
    source = _randomise(DELFNet("resnet50", 512), seed=3)
    variables = _official_variables(source)
    assert variables["resnet_v1_50/block1/unit_1/bottleneck_v1/conv2/weights"].shape == (3, 3, 64, 64)
    rng = np.random.default_rng(0)
    projection, _ = np.linalg.qr(rng.normal(size=(1024, 1024)))
    pca = {"pca/mean": rng.normal(size=1024).astype(np.float32) * 0.01,
           "pca/projection": projection.T.astype(np.float32), "pca/variances": np.linspace(2, 1, 1024)}
    path = tmp_path / "delf_official.npz"
    np.savez(path, **variables, **pca)
    network = build_model("delf-gld", weights=path)
    converted = network.state_dict()
    for key, value in source.state_dict().items():
        if key.startswith("pca_") or key == "attention_scale" or key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(converted[key], value), key
    np.testing.assert_array_equal(network.pca_matrix.numpy(), pca["pca/projection"])
    assert bool(network.pca_fitted) and float(network.attention_scale) == 1.0
    image = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for ours, theirs in zip(network(image), source(image)):
            torch.testing.assert_close(ours, theirs)

    del variables["resnet_v1_50/block2/unit_3/bottleneck_v1/conv2/BatchNorm/gamma"]
    variables["attention_block/attention/compute/conv3/weights"] = np.zeros((1, 1, 1, 1), np.float32)
    broken = tmp_path / "broken.npz"
    np.savez(broken, **variables)
    with pytest.raises(cvdeep.Error, match=r"missing 1, e.g. \['resnet_v1_50/block2/unit_3/bottleneck_v1/conv2/"
                                           r"BatchNorm/gamma'\]; unexpected 1"):
        build_model("delf-gld", weights=broken)


def _datum_bytes(array: np.ndarray) -> bytes:
    """A DatumProto written by hand from datum.proto: field 1 DatumShape{packed int64 dim = 1},
    field 2 FloatList{packed float value = 1}."""

    def varint(value: int) -> bytes:
        out = bytearray()
        while True:
            byte = value & 0x7F
            value >>= 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return bytes(out)

    def delimited(field: int, payload: bytes) -> bytes:
        return varint(field << 3 | 2) + varint(len(payload)) + payload

    dims = b"".join(varint(d) for d in array.shape)
    values = struct.pack(f"<{array.size}f", *array.ravel().tolist())
    return delimited(1, delimited(1, dims)) + delimited(2, delimited(1, values))


def test_datum_files_are_read(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    path = tmp_path / "pca_proj_mat.datum"
    path.write_bytes(_datum_bytes(array))
    np.testing.assert_array_equal(delf_official.read_datum(path), array)
    with pytest.raises(cvdeep.Error, match="truncated"):
        delf_official.parse_datum(_datum_bytes(array)[:-5])


def test_the_release_archive_needs_tensorflow_and_says_so(tmp_path):
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorFlow is installed here")
    folder = tmp_path / "parameters" / "delf_gld_20190411"
    (folder / "model" / "variables").mkdir(parents=True)
    (folder / "model" / "variables" / "variables.index").write_bytes(b"\0" * 8)
    (folder / "pca").mkdir()
    (folder / "pca" / "mean.datum").write_bytes(_datum_bytes(np.zeros(1024, np.float32)))
    archive = tmp_path / "delf_gld_20190411.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "parameters", arcname="parameters")
    with pytest.raises(cvdeep.Error, match="needs TensorFlow"):
        build_model("delf-gld", weights=archive)


# --- extraction ----------------------------------------------------------------------------------


def _pca_checkpoint(network: DELFNet, seed: int = 0) -> DELFNet:
    """A random orthonormal PCA, made-up variances and a calibration scale, as training would store them."""
    generator = torch.Generator().manual_seed(seed)
    dim = network.descriptor_size
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator))
    network.pca_matrix.copy_(q.T)
    network.pca_mean.copy_(torch.randn(dim, generator=generator) * 0.01)
    network.pca_variances.copy_(torch.linspace(1.0, 0.1, dim))
    network.pca_fitted.fill_(True)
    network.attention_scale.fill_(200.0)
    return network


@pytest.fixture(scope="module")
def light_weights(tmp_path_factory) -> Path:
    torch.manual_seed(5)
    network = _pca_checkpoint(build_model("delf-cvdeep", pretrained=False))
    path = tmp_path_factory.mktemp("delf") / "delf-cvdeep-test.pt"
    torch.save(network.state_dict(), path)
    return path


def test_feature2d_contract_on_a_saved_checkpoint(light_weights, data_dir):
    detector = cvdeep.DELF_create(scales="0.5,1.0", model="delf-cvdeep", weights=str(light_weights), device="cpu")
    image = load_image(data_dir, GRAF, (400, 320))
    check_feature2d_contract(detector, image, 40, gray_network=False)
    keypoints = detector.detect(image)
    assert len(keypoints) == 1000 and {k.octave for k in keypoints} == {0, 1}
    assert {round(k.size) for k in keypoints} == {80, 40}, "receptive field 40 px at scale 1, 80 px at 0.5"
    detector.setPcaDim(0)
    assert detector.descriptorSize() == 128 and detector.detectAndCompute(image, None)[1].shape == (1000, 128)
    detector.setPcaDim(129)
    with pytest.raises(cvdeep.Error, match="exceeds"):
        detector.detect(image)


def test_keypoints_sit_on_receptive_field_centres(light_weights):
    network = build_model("delf-cvdeep", weights=light_weights)
    image = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    valid = torch.ones(1, 1, 64, 96, dtype=torch.bool)
    with torch.no_grad():
        level1 = network.extract(image, valid, DELFConfig(nfeatures=0, detection_threshold=0, scales="1.0"))
        level_half = network.extract(image, valid, DELFConfig(nfeatures=0, detection_threshold=0, scales="0.5"))
    assert len(level1["keypoints"]) == 16 * 24, "every cell of the 16 x 24 map"
    np.testing.assert_array_equal(np.sort(np.unique(level1["keypoints"][:, 0].numpy())), np.arange(24) * 4 + 1.5)
    # level 0.5 (48 x 32 px): cell p at level pixel 4p + 1.5 -> input pixel (4p + 2) * 2 - 0.5 = 8p + 3.5
    np.testing.assert_array_equal(np.sort(np.unique(level_half["keypoints"][:, 1].numpy())), np.arange(8) * 8 + 3.5)
    assert torch.all(level_half["sizes"] == 80) and torch.all(level1["scores"][:-1] >= level1["scores"][1:])


def test_threshold_radius_iou_and_whitening(light_weights):
    network = build_model("delf-cvdeep", weights=light_weights)
    image = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    valid = torch.ones(1, 1, 64, 96, dtype=torch.bool)
    base = {"nfeatures": 0, "detection_threshold": 0.0, "scales": "1.0"}
    with torch.no_grad():
        everything = network.extract(image, valid, DELFConfig(**base))
        middle = float(everything["scores"].median())
        above = network.extract(image, valid, DELFConfig(**{**base, "detection_threshold": middle}))
        thinned = network.extract(image, valid, DELFConfig(**{**base, "nms_radius": 2}))
        boxes = network.extract(image, valid, DELFConfig(**{**base, "iou_threshold": 0.5}))
        white = network.extract(image, valid, DELFConfig(**{**base, "whitening": True}))
        raw = network.extract(image, valid, DELFConfig(**{**base, "pca_dim": 0}))
        soft = network.extract(image, valid, DELFConfig(**{**base, "nms": "soft", "nfeatures": 20}))
    assert len(above["scores"]) == int((everything["scores"] >= middle).sum()) and above["scores"].min() >= middle
    xy = thinned["keypoints"]
    assert 0 < len(xy) < len(everything["keypoints"]) / 4
    assert torch.cdist(xy, xy).add(torch.eye(len(xy)) * 1e9).min() > 8, "maxima of 5x5 cells are > 2 cells apart"
    # 40 px boxes: two kept ones overlap by at most IoU 0.5, i.e. an intersection of at most 3200 / 3 px^2
    kept = boxes["keypoints"]
    overlap = (40 - (kept[:, None] - kept[None]).abs()).clamp_min(0).prod(dim=2) - torch.eye(len(kept)) * 1600
    assert 0 < len(kept) < len(everything["keypoints"]) / 4 and overlap.max() <= 3200 / 3 + 1e-3
    assert len(soft["scores"]) == 20 and torch.all(soft["scores"][:-1] >= soft["scores"][1:])
    assert soft["scores"].max() <= everything["scores"].max() and soft["descriptors"].shape == (20, 40)
    pca = (raw["descriptors"] - network.pca_mean) @ network.pca_matrix[:40].T
    torch.testing.assert_close(everything["descriptors"], torch.nn.functional.normalize(pca, dim=1))
    whitened = pca / network.pca_variances[:40].sqrt()
    torch.testing.assert_close(white["descriptors"], torch.nn.functional.normalize(whitened, dim=1))


def test_box_nms_is_greedy_iou_suppression():
    rng = np.random.default_rng(0)
    centres = torch.from_numpy(rng.uniform(0, 100, (600, 2)))
    sides = torch.from_numpy(rng.uniform(5, 30, 600))
    kept = box_nms(centres, sides, 0.3, chunk=64).tolist()
    low, high, area = (centres - sides[:, None] / 2).numpy(), (centres + sides[:, None] / 2).numpy(), (sides**2).numpy()
    reference: list[int] = []  # the definition, one box at a time
    for index in range(600):
        inter = [float(np.prod(np.clip(np.minimum(high[index], high[o]) - np.maximum(low[index], low[o]), 0, None)))
                 for o in reference]
        if all(i / (area[index] + area[o] - i) <= 0.3 for i, o in zip(inter, reference)):
            reference.append(index)
    assert kept == reference
    assert box_nms(centres, sides, 0.3, limit=5).tolist() == reference[:5]


def test_untrained_pca_and_missing_variances_are_reported():
    network = build_model("delf-cvdeep", pretrained=False)
    image, valid = torch.rand(1, 3, 32, 32), torch.ones(1, 1, 32, 32, dtype=torch.bool)
    with pytest.raises(cvdeep.Error, match="no PCA"):
        network.extract(image, valid, DELFConfig(scales="1.0"))
    raw = network.extract(image, valid, DELFConfig(scales="1.0", pca_dim=0, detection_threshold=0))
    assert raw["descriptors"].shape[1] == 128
    network.pca_fitted.fill_(True)
    network.pca_variances.fill_(float("nan"))
    with pytest.raises(cvdeep.Error, match="no PCA variances"):
        network.extract(image, valid, DELFConfig(scales="1.0", whitening=True))


def test_official_extraction_maps_cells_to_input_pixels(tmp_path):
    network = _pca_checkpoint(_randomise(DELFNet("resnet50", 512), seed=4))
    network.attention_scale.fill_(1.0)
    image = torch.rand(1, 3, 200, 260, generator=torch.Generator().manual_seed(3))
    valid = torch.ones(1, 1, 200, 260, dtype=torch.bool)
    with torch.no_grad():
        found = network.extract(image, valid, DELFConfig(nfeatures=0, detection_threshold=0, scales="0.5,1.0"))
    # level 1 (200 x 260): max-pool inputs 100 (even) x 130 (even): centres 32 i + 2 -> 7 x 9 cells
    # level 0.5 (100 x 130): pool inputs 50 (even) x 65 (odd): rows 32 i + 2, columns 32 i, times 2 in input pixels
    first = found["octaves"] == 1
    assert int(first.sum()) == 7 * 9 and int((~first).sum()) == 4 * 5
    assert sorted(set(found["keypoints"][first, 0].tolist())) == [32.0 * i + 2 for i in range(9)]
    assert sorted(set(found["keypoints"][~first, 0].tolist())) == [64.0 * i for i in range(5)]
    assert sorted(set(found["keypoints"][~first, 1].tolist())) == [64.0 * i + 4 for i in range(4)]
    assert set(found["sizes"][~first].tolist()) == {582.0}
    assert found["descriptors"].shape == (83, 40)


def test_shipped_weights_work_offline_out_of_the_box(monkeypatch, data_dir):
    """``DELF_create()`` takes the packaged delf-cvdeep file (sha256 checked on load) offline with the official
    extraction settings: 1000 keypoints whose attention passes the threshold, 40-D descriptors that match the
    image to a copy of it shifted by 16 px (measured when the weights shipped: 841 mutual matches, 98 % within
    4 px)."""
    import cv2

    monkeypatch.setenv("CVDEEP_OFFLINE", "1")
    detector = cvdeep.DELF_create(device="cpu")
    assert "model='delf-cvdeep'" in repr(detector)
    image = load_image(data_dir, GRAF, (480, 360))
    keypoints, descriptors = detector.detectAndCompute(image, None)
    assert len(keypoints) == 1000 and descriptors.shape == (1000, 40)
    assert min(k.response for k in keypoints) >= DELFConfig().detection_threshold
    moved, moved_descriptors = detector.detectAndCompute(image[16:, 16:], None)
    matches = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(descriptors, moved_descriptors)
    error = np.array([np.hypot(*np.subtract(keypoints[m.queryIdx].pt, np.add(moved[m.trainIdx].pt, 16)))
                      for m in matches])
    assert len(matches) > 500 and np.mean(error < 4.0) > 0.8
