"""``precision="bf16"``: the parameter, where it applies, its fallback, and its effect on real images.

What bf16 may change, and so the thresholds below: the lowered operations (convolutions, linear
layers) round their inputs to 8 significant bits (relative error 2^-9 = 0.2%) and accumulate in
float32; every map stays float32. Score maps then move by about 1e-3, which flips only the
keypoints at a near tie (an NMS window with two almost equal maxima, the last places of the
``nfeatures`` ranking, a score at the threshold) and moves a sub-pixel refinement by far less
than a pixel. Measured on graf img1 at 640x480: 98.8% (ALIKED) and 98.1% (XFeat) of the bf16
keypoints lie within 1 px of an fp32 keypoint, and the descriptors of the same keypoints have
cosine >= 0.997 (median 0.9999). The test asks for 90% within 1 px, a count within 5%, and
cosines with 1st percentile >= 0.99 and median >= 0.999: a cosine of 0.99 is an angle of 8
degrees, while a descriptor's nearest wrong neighbour is typically at cosine < 0.8, so matches
keep; 90% leaves room for another CPU's oneDNN kernels (another accumulation order) while
failing at once if bf16 reached the NMS or the refinement (quantised scores: many ties).
They are also the documented tolerance of ALIKED's, XFeat's and DISK's default, ``precision="auto"``
(bf16 on a CPU with native BF16): their fidelity tests against the published code pin fp32.
"""
from __future__ import annotations

import pickle
import warnings

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cvdeep
from cvdeep import precision
from cvdeep.declaration import DescriptorConfig, DetectorConfig
from cvdeep.eval import runner
from cvdeep.features import public_classes

pytestmark = pytest.mark.usefixtures("one_thread")

NO_BF16 = not precision.bf16_native("cpu")
NO_BF16_REASON = "this CPU has no native BF16 (AVX512-BF16, AMX-BF16 or ARM BF16): precision='bf16' runs fp32 here"


@pytest.fixture(scope="module")
def graf(data_dir):
    image = cv2.imread(str(data_dir / "oxford_affine" / "images" / "graf" / "img1.ppm"))
    return cv2.resize(image, (640, 480), interpolation=cv2.INTER_AREA)


@pytest.fixture()
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(precision, "_warned", set())


def test_every_detector_and_descriptor_has_the_parameter_last_in_the_common_vocabulary():
    assert DetectorConfig.names()[-1] == "precision" and DescriptorConfig.names() == ("precision",)
    measured_to_hold = {"ALIKED", "XFeat", "DISK"}  # bf16 accuracy measured on the 55 shared pairs (docs/RESULTS.md)
    for name, cls in public_classes().items():
        expected = "auto" if cls.family.public_name in measured_to_hold else "fp32"
        assert cls.family.config.defaults()["precision"] == expected, name


def test_auto_is_bf16_where_native_and_fp32_silently_elsewhere(monkeypatch, fresh_warnings):
    detector = cvdeep.ALIKED_create(device="cpu")
    assert detector.getPrecision() == "auto"
    assert detector.effectivePrecision() == ("bf16" if precision.bf16_native("cpu") else "fp32")
    monkeypatch.setattr(precision, "bf16_native", lambda device: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: auto asked for nothing the machine lacks
        assert cvdeep.XFeat_create(device="cpu").effectivePrecision() == "fp32"
        with precision.network_precision("auto", "cpu") as effective:
            assert effective == "fp32" and not torch.is_autocast_enabled("cpu")


def test_the_parameter_validates_and_round_trips(tmp_path):
    detector = cvdeep.XFeat_create(precision="bf16", device="cpu")
    assert detector.getPrecision() == "bf16" and detector.getParams()["precision"] == "bf16"
    detector.setPrecision("fp32")
    assert detector.getPrecision() == "fp32" and detector.config.precision == "fp32"
    for bad in ("fp16", "BF16", 16, None):
        with pytest.raises(cvdeep.Error, match="parameter 'precision'.*one of 'fp32', 'bf16'"):
            detector.setPrecision(bad)
        with pytest.raises(cvdeep.Error, match="parameter 'precision'"):
            cvdeep.ALIKED_create(precision=bad)
    assert detector.getPrecision() == "fp32", "a refused value leaves the parameter unchanged"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a CPU without BF16 warns on setPrecision("bf16")
        detector.setPrecision("bf16")
    path = tmp_path / "xfeat.yml"
    detector.write(str(path))
    other = cvdeep.XFeat_create(device="cpu")
    other.read(str(path))
    assert other.getPrecision() == "bf16"
    assert pickle.loads(pickle.dumps(detector)).getPrecision() == "bf16"
    assert cvdeep.HardNet_create(precision="bf16").getPrecision() == "bf16"


def test_fp32_is_the_network_as_before(graf):
    """precision='fp32' enters no autocast: the results are those of the plain call."""
    detector = cvdeep.XFeat_create(2048, device="cpu", precision="fp32")
    with precision.network_precision("fp32", "cpu") as effective:
        assert effective == "fp32" and not torch.is_autocast_enabled("cpu")
    kps, desc = detector.detectAndCompute(graf, None)
    image = detector._network_input(graf)
    valid = detector._valid_mask(detector._valid_pixels(graf, None), image.shape[-2:])
    with torch.inference_mode():
        plain = detector._load().extract(image, valid, detector.config)
    np.testing.assert_array_equal(np.array([k.pt for k in kps], np.float32), plain["keypoints"].numpy())
    np.testing.assert_array_equal(desc, plain["descriptors"].numpy())


def test_without_native_bf16_it_warns_once_and_runs_fp32(graf, monkeypatch, fresh_warnings):
    monkeypatch.setattr(precision, "bf16_native", lambda device: False)
    with pytest.warns(RuntimeWarning, match="no native BF16.*running in fp32"):
        detector = cvdeep.XFeat_create(2048, precision="bf16", device="cpu")
    assert detector.getPrecision() == "bf16" and detector.effectivePrecision() == "fp32"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # once per process: no second warning
        kps, desc = detector.detectAndCompute(graf, None)
    reference = cvdeep.XFeat_create(2048, device="cpu").detectAndCompute(graf, None)
    np.testing.assert_array_equal(desc, reference[1])
    assert [k.pt for k in kps] == [k.pt for k in reference[0]]


@pytest.mark.skipif(NO_BF16, reason=NO_BF16_REASON)
def test_bf16_lowers_only_the_arithmetic_and_returns_float32():
    """Inside: a convolution computes in bf16 (its result differs from fp32) but comes back float32;
    the ops of cvdeep.ops run under no autocast."""
    generator = torch.Generator().manual_seed(0)
    x, weight = torch.randn(1, 16, 32, 32, generator=generator), torch.randn(32, 16, 3, 3, generator=generator)
    exact = F.conv2d(x, weight, padding=1)
    with precision.network_precision("bf16", "cpu") as effective:
        assert effective == "bf16"
        lowered = F.conv2d(x, weight, padding=1)
        assert lowered.dtype == torch.float32 and not torch.equal(lowered, exact)
        assert F.linear(x.flatten(1)[:, :16], weight.flatten(1)[:, :16]).dtype == torch.float32
        seen = []
        checked = precision.float32_op(lambda: seen.append(torch.is_autocast_enabled("cpu")))
        checked()
        assert seen == [False]
    assert float((lowered - exact).abs().max()) <= 0.02 * float(exact.abs().max())  # 8-bit inputs, fp32 sums


def test_the_evaluation_table_says_when_bf16_was_asked_but_fp32_ran():
    summary = {"mma": [0.5] * 10, "homography_accuracy": {"1": 0.1, "3": 0.3, "5": 0.5, "10": 0.7},
               "repeatability": 0.4, "localization_error": 1.0, "matching_score": 0.3, "keypoints_per_image": 100,
               "matches_per_pair": 50, "ms_per_image": 10, "pairs": 1}
    results = {"config": {"thresholds": list(range(1, 11))},
               "results": [{"feature": name, "precision": ran, "summary": {"all": summary}}
                           for name, ran in (("aliked", "fp32"), ("aliked[precision=bf16]", "bf16"),
                                             ("xfeat[precision=bf16]", "fp32"))]}
    table = runner.markdown_table(results)
    assert "| aliked[precision=bf16] |" in table
    assert "| xfeat[precision=bf16] (ran fp32: no native bf16) |" in table


def _nearest(points: np.ndarray, to: np.ndarray) -> np.ndarray:
    return np.sqrt(((points[:, None, :] - to[None, :, :]) ** 2).sum(-1)).min(1)


@pytest.mark.skipif(NO_BF16, reason=NO_BF16_REASON)
@pytest.mark.parametrize("name", ["ALIKED", "XFeat", "DISK"])
def test_bf16_keypoints_and_descriptors_stay_those_of_fp32(graf, name):
    """See the module docstring for the thresholds."""
    create = getattr(cvdeep, f"{name}_create")
    exact, fast = create(2048, precision="fp32", device="cpu"), create(2048, precision="bf16", device="cpu")
    assert fast.effectivePrecision() == "bf16"
    kps32, desc32 = exact.detectAndCompute(graf, None)
    kps16, desc16 = fast.detectAndCompute(graf, None)
    assert desc16.dtype == np.float32 and desc16.shape[1] == desc32.shape[1]
    assert all(isinstance(k.pt[0], float) and isinstance(k.response, float) for k in kps16)
    assert abs(len(kps16) - len(kps32)) <= 0.05 * len(kps32)
    xy32, xy16 = np.array([k.pt for k in kps32]), np.array([k.pt for k in kps16])
    assert np.mean(_nearest(xy16, xy32) <= 1.0) >= 0.90
    # the same keypoints described both ways
    _, same16 = fast.compute(graf, kps32)
    assert same16.dtype == np.float32
    cosine = (same16 * desc32).sum(1) / (np.linalg.norm(same16, axis=1) * np.linalg.norm(desc32, axis=1))
    assert np.percentile(cosine, 1) >= 0.99 and np.median(cosine) >= 0.999
