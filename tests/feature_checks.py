"""Checks shared by the dense-extractor tests (XFeat, DISK): fidelity statistics against a
reference implementation and the Feature2D contract on real images."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

GRAF = "oxford_affine/images/graf/img1.ppm"
CHURCHILL = "hpatches_subset/vbalnt_tfeat/imgs/v_churchill/1.ppm"
WORMHOLE = "hpatches_subset/vbalnt_tfeat/imgs/v_wormhole"


def load_image(data_dir: Path, relative: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """A real BGR image, optionally resized (INTER_AREA) to ``size`` = (width, height)."""
    image = cv2.imread(str(data_dir / relative))
    assert image is not None, f"cannot read {relative}"
    return image if size is None else cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def rgb_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)[None].float() / 255.0


def gray_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))[None, None].float() / 255.0


@dataclass
class Agreement:
    """How our keypoints/descriptors agree with a reference's on one image."""

    matched: float  # share of the reference's keypoints with one of ours within ``tolerance`` px
    min_cosine: float  # over matched keypoints
    extra: np.ndarray  # (M, 2) our keypoints with no reference keypoint within ``tolerance`` px
    score_error: float  # max |score difference| over matched keypoints

    def __str__(self) -> str:
        return (f"matched {self.matched:.4f}, min cosine {self.min_cosine:.6f}, "
                f"{len(self.extra)} extra, max score error {self.score_error:.2e}")


def agreement(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], tolerance: float = 0.1) -> Agreement:
    """Match reference keypoints to ours by position and compare descriptors and scores."""
    ours_xy, ref_xy = ours["keypoints"].float(), reference["keypoints"].float()
    distance = torch.cdist(ref_xy, ours_xy)
    nearest, index = distance.min(dim=1)
    hit = nearest <= tolerance
    cosine = (reference["descriptors"][hit].float() * ours["descriptors"][index[hit]].float()).sum(dim=1)
    score_error = (reference["scores"][hit].float() - ours["scores"][index[hit]].float()).abs()
    extra = ours_xy[distance.min(dim=0).values > tolerance]
    return Agreement(
        matched=float(hit.float().mean()),
        min_cosine=float(cosine.min()) if len(cosine) else 1.0,
        extra=extra.numpy(),
        score_error=float(score_error.max()) if len(score_error) else 0.0,
    )


def in_border_strip(xy: np.ndarray, width: int, height: int, strip: int) -> np.ndarray:
    """True for points within ``strip`` pixels of the image edge."""
    x, y = xy[:, 0], xy[:, 1]
    return (x < strip) | (y < strip) | (x > width - 1 - strip) | (y > height - 1 - strip)


def check_dense_maps_match(network: Callable[[torch.Tensor], Any], reference: Callable[[torch.Tensor], Any],
                           image: torch.Tensor) -> None:
    """Every dense map of ``network(image)`` equals the reference's, to 1e-4."""
    with torch.inference_mode():
        ours, theirs = network(image), reference(image)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def check_agreement_up_to_border(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], width: int,
                                 height: int, label: str, strip: int = 2) -> None:
    """>= 99% of the reference's keypoints within 0.1 px of ours, descriptor cosine >= 0.999, scores
    within 1e-5 of the largest score's magnitude, at least 1e-4 (DISK's logits reach 116-128 on the
    test images; float32 rounding of two codes puts up to 2.1e-4 between them on an AMD EPYC), and
    our extra keypoints only in the ``strip``-px border strip (where the reference's NMS departs
    from the authors')."""
    stats = agreement(ours, reference)
    print(label, stats)
    assert stats.matched >= 0.99
    assert stats.min_cosine >= 0.999
    assert stats.score_error < max(1e-4, 1e-5 * float(reference["scores"].abs().max()))
    assert in_border_strip(stats.extra, width, height, strip).all()


def shifted_keypoints_agree(detector: Any, image: np.ndarray, shift: int, margin: int, strongest: int = 300) -> float:
    """Share of the ``strongest`` interior keypoints found again, moved by exactly ``shift`` px,
    among all keypoints of the image cropped by ``shift`` px on the left and top (a shift the
    network is equivariant to, up to the image statistics its normalisations see)."""
    default_nfeatures = detector.getNFeatures()
    detector.setNFeatures(strongest)
    full = np.array([k.pt for k in detector.detect(image)])
    detector.setNFeatures(0)
    cropped = np.array([k.pt for k in detector.detect(image[shift:, shift:])]) + shift
    detector.setNFeatures(default_nfeatures)
    height, width = image.shape[:2]
    lo = shift + margin
    interior = (full[:, 0] >= lo) & (full[:, 1] >= lo) & (full[:, 0] < width - margin) & (full[:, 1] < height - margin)
    full = full[interior]
    distance = np.abs(full[:, None, :] - cropped[None, :, :]).max(axis=2).min(axis=1)
    return float(np.mean(distance == 0.0))


def check_feature2d_contract(detector: Any, image: np.ndarray, descriptor_size: int, gray_network: bool) -> None:
    """descriptorSize, nfeatures, sorted responses, unit float32 descriptors, masks applied before the
    limit, odd sizes, gray input and compute() on given keypoints, on one real image."""
    assert detector.descriptorSize() == descriptor_size
    height, width = image.shape[:2]
    default_nfeatures = detector.getNFeatures()
    detector.setNFeatures(300)
    keypoints, descriptors = detector.detectAndCompute(image, None)
    assert len(keypoints) == 300
    assert descriptors.dtype == np.float32 and descriptors.shape == (300, descriptor_size)
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=1e-5)
    responses = np.array([k.response for k in keypoints])
    assert np.all(np.diff(responses) <= 0)
    xy = np.array([k.pt for k in keypoints])
    assert xy.min() >= 0 and xy[:, 0].max() <= width - 1 and xy[:, 1].max() <= height - 1

    # a mask keeps keypoints inside it, and nfeatures still counts only valid ones (a limit of
    # half the keypoints: a model trained for a few steps in a test may find under 600)
    mask = np.zeros((height, width), np.uint8)
    mask[:, : width // 2] = 255
    detector.setNFeatures(150)
    masked = detector.detect(image, mask)
    assert len(masked) == 150
    assert max(k.pt[0] for k in masked) <= width // 2 - 1
    detector.setNFeatures(300)

    # odd sizes (padding to the stride) never put keypoints outside the image
    odd = image[: height - 37, : width - 21]
    odd_keypoints, odd_descriptors = detector.detectAndCompute(odd, None)
    assert len(odd_keypoints) == 300 and odd_descriptors.shape == (300, descriptor_size)
    odd_xy = np.array([k.pt for k in odd_keypoints])
    assert odd_xy[:, 0].max() <= odd.shape[1] - 1 and odd_xy[:, 1].max() <= odd.shape[0] - 1

    # an all-zero mask gives nothing, as in cv2; an image smaller than the network's
    # pyramid still runs
    assert detector.detectAndCompute(image, np.zeros((height, width), np.uint8)) == ((), None)
    tiny_keypoints, _ = detector.compute(image[:7, :9], [cv2.KeyPoint(3.5, 2.0, 8.0)])
    assert len(tiny_keypoints) == 1
    detector.detect(image[:7, :9])

    # a gray network converting colour as cv2 does sees the same image given in BGR or gray
    # (XFeat averages the channels, as its authors do: tests/test_xfeat.py checks that)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if gray_network and detector.family.input.gray == "luminance":
        gray_keypoints = detector.detect(gray)
        assert [k.pt for k in gray_keypoints] == [k.pt for k in keypoints]

    # compute() on the detected keypoints reproduces detectAndCompute's descriptors
    described_keypoints, described = detector.compute(image, keypoints)
    assert len(described_keypoints) == len(keypoints)
    assert np.min(np.sum(described * descriptors, axis=1)) > 0.9999

    # and describes keypoints from another detector
    sift_keypoints = cv2.SIFT_create(200).detect(gray)
    _, sift_described = detector.compute(image, sift_keypoints)
    assert sift_described.shape == (len(sift_keypoints), descriptor_size)
    assert np.all(np.isfinite(sift_described))
    detector.setNFeatures(default_nfeatures)


def resized_pair(folder: Path, index: int, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HPatches/Oxford images 1 and ``index`` resized by ``scale`` (INTER_AREA), with the
    ground-truth homography 1 -> index moved to the resized pixel grid (pixel centres)."""
    from conftest import read_homography

    first = cv2.imread(str(folder / "1.ppm"))
    second = cv2.imread(str(folder / f"{index}.ppm"))
    resize = lambda image: cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)  # noqa: E731
    offset = 0.5 * scale - 0.5
    to_small = np.array([[scale, 0, offset], [0, scale, offset], [0, 0, 1]])
    homography = to_small @ read_homography(folder / f"H_1_{index}") @ np.linalg.inv(to_small)
    return resize(first), resize(second), homography


def homography_quality(detector: Any, first: np.ndarray, second: np.ndarray,
                       truth: np.ndarray) -> tuple[int, float, float]:
    """Ratio-tested BFMatcher matches as with cv2.SIFT: (matches correct within 3 px under the
    ground truth, their share, corner error of the RANSAC homography)."""
    k1, d1 = detector.detectAndCompute(first, None)
    k2, d2 = detector.detectAndCompute(second, None)
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(d1, d2, k=2)
    good = [m for m, n in pairs if m.distance < 0.9 * n.distance]
    source = np.float32([k1[m.queryIdx].pt for m in good])
    target = np.float32([k2[m.trainIdx].pt for m in good])
    projected = cv2.perspectiveTransform(source[:, None], truth)[:, 0]
    correct = np.linalg.norm(projected - target, axis=1) < 3.0
    estimated, _ = cv2.findHomography(source, target, cv2.RANSAC, 3.0)
    height, width = first.shape[:2]
    corners = np.float32([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]])[:, None]
    moved = cv2.perspectiveTransform(corners, estimated) - cv2.perspectiveTransform(corners, truth)
    error = np.linalg.norm(moved, axis=2)
    return int(correct.sum()), float(correct.mean()), float(error.mean())


def check_matching_on_hpatches_pair(detector: Any, data_dir: Path) -> None:
    """End to end as with cv2.SIFT: BFMatcher + ratio test + findHomography on v_wormhole 1 -> 3
    at half size: at least 500 correct matches, half of them correct, corner error < 3 px."""
    first, second, truth = resized_pair(data_dir / WORMHOLE, 3, 0.5)
    correct, share, error = homography_quality(detector, first, second, truth)
    print("correct matches", correct, "share", share, "corner error", error)
    assert correct >= 500 and share >= 0.5 and error < 3.0


def listed_keys(path: Path, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the first file listed in a ``../shared/weights/*/KEYS.txt`` (the lines after its
    ``#`` header, up to the next one), ``prefix`` removed from the names: what strict loading must match."""
    keys = {}
    for line in path.read_text().splitlines()[1:]:
        if line.startswith("#"):
            break
        name, shape, _ = line.split("\t")
        keys[name.removeprefix(prefix)] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
    return keys


@dataclass
class TurnAgreement:
    """How a detector's keypoints agree between an image and the image turned 90 degrees clockwise."""

    correct: int  # mutual-NN matches within 3 px of the true position
    correct_ratio: float  # of all mutual-NN matches
    angle_turn: float  # median of (angle in the turned image - angle in the image) mod 360 over correct matches
    size_ratio: float  # median of size in the turned image / size in the image over correct matches


def turn_agreement(detector: Any, image: np.ndarray) -> TurnAgreement:
    """Detect and describe ``image`` and its 90-degree clockwise turn, match (mutual nearest neighbours)
    and compare the correct matches' KeyPoint.angle and KeyPoint.size (OpenCV: the angle grows clockwise on
    screen, so it turns by +90)."""
    turned = cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    height = image.shape[0]
    first, first_descriptors = detector.detectAndCompute(image, None)
    second, second_descriptors = detector.detectAndCompute(turned, None)
    matches = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(first_descriptors, second_descriptors)
    correct = []
    for match in matches:
        x, y = first[match.queryIdx].pt
        if np.hypot(second[match.trainIdx].pt[0] - (height - 1 - y), second[match.trainIdx].pt[1] - x) < 3.0:
            correct.append(match)
    turns = [(second[m.trainIdx].angle - first[m.queryIdx].angle) % 360 for m in correct]
    sizes = [second[m.trainIdx].size / first[m.queryIdx].size for m in correct]
    return TurnAgreement(len(correct), len(correct) / max(len(matches), 1),
                         float(np.median(turns)) if turns else float("nan"),
                         float(np.median(sizes)) if sizes else float("nan"))


def check_angles_follow_a_turn(detector: Any, image: np.ndarray, model: str, min_correct: int,
                               angle_tolerance: float, size_tolerance: float) -> TurnAgreement:
    """The packaged ``model`` (``detector`` built with its defaults, 500 keypoints) describes ``image`` and its
    keypoint angles vary; on the image turned 90 degrees its correct matches' angles turn by 90 and sizes stay."""
    assert f"model='{model}'" in repr(detector)
    keypoints, descriptors = detector.detectAndCompute(image, None)
    assert len(keypoints) == 500 and descriptors.shape == (500, 128)
    assert np.std([k.angle for k in keypoints]) > 30, "angles differ from keypoint to keypoint"
    found = turn_agreement(detector, image)
    print(found)
    assert found.correct >= min_correct
    assert abs(found.angle_turn - 90.0) <= angle_tolerance and abs(found.size_ratio - 1.0) <= size_tolerance
    return found
