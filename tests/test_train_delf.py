"""DELF's attention training (``cvdeep.train.delf``, ``cvdeep train delf``) on a tiny synthetic task.

Four photos share one textured background and differ only by a patch of rectangles in their
centre; each photo is a class. Attention pooling can only name the photo from its patch, so the
attention must learn to weight the patch cells over the background ones, which it does not do
before training. The backbone is a random TRNet whose BatchNorm statistics were measured on the
photos (a random TRNet with unit statistics gives nearly one descriptor everywhere, cosine 0.98).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import cvdeep
from cvdeep.nets.delf import DELFConfig
from cvdeep.nets.tr import TRNet
from cvdeep.train import delf as training
from cvdeep.train.loop import read_log
from training_checks import resume_matches_uninterrupted

pytestmark = [pytest.mark.filterwarnings("ignore::cvdeep.weights.NonCommercialWeightsWarning"),
              pytest.mark.usefixtures("one_thread")]

SIDE, CORNER = 48, 40  # the distinctive patch: 48 px square at (40, 40) of 128 x 128 photos
VIEWS = {"patch_ratio": 0.9, "perspective": 0.05, "scale_range": (0.7, 1.0), "max_angle_deg": 15.0,
         "allow_artifacts": False}


def _patch(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    patch = np.full((SIDE, SIDE, 3), 128, np.uint8)
    for _ in range(8):
        x, y = (int(v) for v in rng.integers(0, SIDE, 2))
        gray = int(rng.integers(0, 256))
        cv2.rectangle(patch, (x, y), (x + int(rng.integers(4, 16)), y + int(rng.integers(4, 16))), (gray,) * 3, -1)
    return patch


def _background() -> np.ndarray:
    noise = cv2.GaussianBlur(np.random.default_rng(0).random((128, 128)).astype(np.float32), (0, 0), 1.5)
    return np.repeat(((noise - noise.min()) / (noise.max() - noise.min()) * 255).astype(np.uint8)[..., None], 3, axis=2)


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("delf-photos")
    for index in range(4):
        photo = _background()
        photo[CORNER : CORNER + SIDE, CORNER : CORNER + SIDE] = _patch(100 + index)
        cv2.imwrite(str(folder / f"{index}.png"), photo)
    return folder


def _settings(photos_dir: Path, backbone: str | None, **changes: object) -> training.DELFTraining:
    values: dict[str, object] = {"backbone": backbone, "images": str(photos_dir), "steps": 80, "batch_size": 8,
                                 "crop": 64, "max_side": 128, "lr": 0.2, "photometric": False, "homography": VIEWS,
                                 "pca_images": 4, "pca_scales": "1.0"}
    values.update(changes)
    return training.DELFTraining(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def backbone_file(photos_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random TRNet with BatchNorm statistics averaged over 32 training views (a file, as --backbone takes)."""
    torch.manual_seed(0)
    network = TRNet()
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average
    photos = training.Photos(photos_dir, 64, 128)
    network.train()
    with torch.no_grad():
        for step in range(4):
            views, _ = training.draw_batch(photos, _settings(photos_dir, None), 1000 + step)
            network((views * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(dim=1, keepdim=True))
    path = tmp_path_factory.mktemp("backbone") / "trnet.pt"
    torch.save(network.eval().state_dict(), path)
    return path


def _patch_attention_ratio(network: torch.nn.Module, photo: np.ndarray, corner: tuple[int, int]) -> float:
    """Mean attention of the cells centred inside the patch over that of the other cells (scale 1)."""
    image = torch.from_numpy(photo[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        attention = network(image)[1][0, 0]
    centres = torch.arange(attention.shape[0]) * 4 + 1.5
    x0, y0 = corner
    rows = (centres >= y0) & (centres < y0 + SIDE)
    columns = (centres >= x0) & (centres < x0 + SIDE)
    inside = rows[:, None] & columns[None, :]
    return float(attention[inside].mean() / attention[~inside].mean())


def test_attention_learns_to_weight_the_discriminative_patch(photos_dir, backbone_file):
    task = training.AttentionTraining(_settings(photos_dir, str(backbone_file)))
    photos = [cv2.imread(str(photos_dir / f"{index}.png")) for index in range(4)]
    moved = _background()  # photo 1's patch somewhere else: attention follows content, not a position
    moved[8 : 8 + SIDE, 72 : 72 + SIDE] = _patch(101)
    network = task.network.eval()
    before = [_patch_attention_ratio(network, photo, (CORNER, CORNER)) for photo in photos]
    moved_before = _patch_attention_ratio(network, moved, (72, 8))
    assert max(before) < 1.05 and moved_before < 1.05, "untrained attention does not prefer the patch"
    task.network.attention.train()
    metrics = [task.step(index) for index in range(task.settings.steps)]
    losses = np.array([m["loss"] for m in metrics])
    print("loss over the first / last 20 steps", losses[:20].mean(), losses[-20:].mean())
    assert losses[-20:].mean() < min(losses[:20].mean(), np.log(4)) - 0.3, "below chance, and lower than at the start"
    assert all(np.isfinite(m["grad_norm"]) for m in metrics)
    network = task.network.eval()
    after = [_patch_attention_ratio(network, photo, (CORNER, CORNER)) for photo in photos]
    print("patch / background attention before", before, "after", after)
    assert min(after) > 1.25
    assert _patch_attention_ratio(network, moved, (72, 8)) > 1.25
    backbone = torch.load(backbone_file, weights_only=True)
    assert all(torch.equal(value, task.network.backbone.state_dict()[key]) for key, value in backbone.items()), \
        "the backbone is frozen"


def test_pca_and_calibration(photos_dir, backbone_file):
    settings = _settings(photos_dir, str(backbone_file), steps=2)
    task = training.AttentionTraining(settings)
    statistics = training.finish(task.network, task.photos, settings)
    network = task.network
    components, variances = network.pca_matrix.double(), network.pca_variances.double()
    torch.testing.assert_close(components @ components.T, torch.eye(128, dtype=torch.float64), atol=1e-5, rtol=0)
    assert torch.all(variances[:-1] >= variances[1:]) and bool(network.pca_fitted)
    descriptors, scores = training.training_descriptors(network, task.photos, settings)
    assert len(descriptors) == statistics["pca_descriptors"] == 4 * 1000, "the 1000 most attended of 32 x 32 cells"
    np.testing.assert_allclose(np.quantile(scores, 0.1), 100.0, rtol=1e-4)
    # the PCA is the eigen-decomposition of the training descriptors' covariance
    projected = (descriptors - network.pca_mean.numpy()) @ components.numpy().T
    np.testing.assert_allclose(projected.var(axis=0, ddof=1), variances.numpy(), rtol=1e-3, atol=1e-7)
    assert 0 < statistics["pca_variance_kept_40"] <= 1


def test_resume_after_a_stop_gives_the_uninterrupted_weights(photos_dir, backbone_file, tmp_path, monkeypatch):
    settings = _settings(photos_dir, str(backbone_file), steps=5, batch_size=4, crop=48)
    whole, _ = resume_matches_uninterrupted(
        monkeypatch, training, lambda out, **options: training.train_delf(settings, out, **options), tmp_path)
    a, b = read_log(tmp_path / "whole" / "log.csv"), read_log(tmp_path / "stopped" / "log.csv")
    assert all(np.array_equal(a[k], b[k]) for k in a if k != "seconds")

    # the weights load into the public class and give 40-D descriptors at the default threshold
    detector = cvdeep.DELF_create(scales="1.0", model="delf-cvdeep", weights=whole["weights"], device="cpu")
    keypoints, descriptors = detector.detectAndCompute(cv2.imread(str(photos_dir / "0.png")), None)
    assert descriptors.shape == (len(keypoints), 40) and len(keypoints) > 0
    assert min(k.response for k in keypoints) >= DELFConfig().detection_threshold


def test_bad_settings_and_backbones_are_refused(photos_dir, tmp_path):
    with pytest.raises(cvdeep.Error, match="expected a DELF model"):
        training.DELFTraining(model="tr-cvdeep")
    with pytest.raises(cvdeep.Error, match="calibration_quantile"):
        training.DELFTraining(calibration_quantile=1.0)
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(cvdeep.Error, match="holds no weights of this DELF model's trnet backbone"):
        training.AttentionTraining(_settings(photos_dir, str(wrong)))


def test_cosine_classifier_logits_are_the_scaled_cosines():
    torch.manual_seed(0)
    classifier = training.CosineClassifier(8, 5, scale=16.0)
    pooled = torch.randn(3, 8)
    expected = 16.0 * torch.nn.functional.cosine_similarity(pooled[:, None], classifier.weight[None], dim=2)
    torch.testing.assert_close(classifier(pooled), expected, atol=1e-5, rtol=0)
    # a short pooled vector (unit features pointing many ways) gives the same logits as a long one
    torch.testing.assert_close(classifier(0.01 * pooled), classifier(pooled), atol=1e-5, rtol=0)
