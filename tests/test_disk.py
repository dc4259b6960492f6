"""DISK: strict loading of the official weights, fidelity to the authors' inference on real
images (kornia 0.9, loaded with the same file, as the independent reference), the sparse
descriptor head, pixel conventions and the Feature2D contract through ``cvdeep.DISK_create``."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import cvdeep
from cvdeep.models import build_model, get_weight_spec
from cvdeep.nets.disk import DISK, DISKConfig
from cvdeep.weights import resolve
from feature_checks import (
    CHURCHILL,
    GRAF,
    agreement,
    check_agreement_up_to_border,
    check_dense_maps_match,
    check_feature2d_contract,
    check_matching_on_hpatches_pair,
    listed_keys,
    load_image,
    rgb_tensor,
    shifted_keypoints_agree,
)

kornia_feature = pytest.importorskip("kornia.feature")

SIZE = (384, 288)  # multiples of 16, small enough for kornia's dense head on 2 cores


@pytest.fixture(scope="module")
def network(shared: Path) -> DISK:
    return build_model("disk")


@pytest.fixture(scope="module")
def reference(shared: Path):
    model = kornia_feature.DISK()
    checkpoint = torch.load(resolve(get_weight_spec("disk-depth")), map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["extractor"])
    return model.eval()


def test_official_checkpoint_loads_strictly(shared: Path, network: DISK) -> None:
    listed = listed_keys(shared / "weights" / "disk" / "KEYS.txt", "extractor.")
    assert {k: tuple(v.shape) for k, v in network.state_dict().items()} == listed
    checkpoint = torch.load(resolve(get_weight_spec("disk-depth")), map_location="cpu", weights_only=True)
    bare = DISK()
    bare.load_pretrained(dict(checkpoint["extractor"]))  # a bare state_dict is accepted too
    del checkpoint["extractor"]["unet.path_up.3.conv.3.bias"]
    with pytest.raises(RuntimeError, match="path_up.3.conv.3.bias"):
        DISK().load_pretrained(checkpoint)


def test_dense_maps_match_kornia(data_dir: Path, network: DISK, reference) -> None:
    image = rgb_tensor(load_image(data_dir, GRAF, (256, 192)))
    check_dense_maps_match(network, reference.heatmap_and_dense_descriptors, image)


@pytest.mark.parametrize("relative", [GRAF, CHURCHILL])
def test_fidelity_against_kornia(data_dir: Path, network: DISK, reference, relative: str) -> None:
    """>= 99% of kornia's keypoints within 0.1 px of ours, descriptor cosine >= 0.999.

    Our descriptors come from the sparse head (the last convolution evaluated only at the
    keypoints); kornia's from the dense map. kornia departs from the authors' NMS on purpose
    (strict maxima of the full window, nothing within 2 px of the border); we follow the
    authors (cvlab-epfl/disk ``nms``: max-pool window clipped at the border), so our only
    extra keypoints must lie in that 2-px strip. The authors keep one of several tied maxima
    and we keep all; float logits of distinct pixels do not tie here.
    """
    image = load_image(data_dir, relative, SIZE)
    tensor = rgb_tensor(image)
    valid = torch.ones_like(tensor[:, :1], dtype=torch.bool)
    with torch.inference_mode():
        ours = network.extract(tensor, valid)
        found = reference(tensor)[0]
    theirs = {"keypoints": found.keypoints, "descriptors": found.descriptors, "scores": found.detection_scores}
    check_agreement_up_to_border(ours, theirs, SIZE[0], SIZE[1], relative)


def test_nfeatures_keeps_the_strongest(data_dir: Path, network: DISK, reference) -> None:
    """The authors' ``n`` keeps the logits above the (n+1)-th largest: the n strongest maxima
    when an image has more than n of them (kornia's reading too)."""
    tensor = rgb_tensor(load_image(data_dir, GRAF, SIZE))
    valid = torch.ones_like(tensor[:, :1], dtype=torch.bool)
    with torch.inference_mode():
        ours = network.extract(tensor, valid, DISKConfig(nfeatures=300))
        everything = network.extract(tensor, valid)
        found = reference(tensor, n=300)[0]
    assert len(ours["keypoints"]) == 300 < len(everything["keypoints"])
    theirs = {"keypoints": found.keypoints, "descriptors": found.descriptors, "scores": found.detection_scores}
    assert agreement(ours, theirs).matched >= 0.99
    torch.testing.assert_close(ours["scores"], everything["scores"][:300])


def test_describe_interpolates_the_dense_map_at_pixel_centres(data_dir: Path, network: DISK, reference) -> None:
    """Sub-pixel positions read the dense map bilinearly, pixel (i, j) being at (x=j, y=i)."""
    image = load_image(data_dir, CHURCHILL, (256, 192))
    tensor = rgb_tensor(image)
    height, width = image.shape[:2]
    generator = torch.Generator().manual_seed(0)
    points = torch.rand((400, 2), generator=generator) * torch.tensor([width - 1.0, height - 1.0])
    points[:4] = torch.tensor([[0.0, 0.0], [width - 1.0, height - 1.0], [17.0, 5.0], [3.25, 9.75]])
    with torch.inference_mode():
        ours = network.describe(tensor, points)
        dense = reference.heatmap_and_dense_descriptors(tensor)[1]
        grid = (points / torch.tensor([width - 1.0, height - 1.0]) * 2 - 1).view(1, -1, 1, 2)
        theirs = F.normalize(F.grid_sample(dense, grid, mode="bilinear", align_corners=True)[0, :, :, 0].t(), dim=1)
    assert (ours * theirs).sum(dim=1).min() >= 0.9999


def test_keypoints_are_image_pixels(data_dir: Path) -> None:
    """Cropping 16 px (the U-Net's stride) off the left and top moves interior keypoints by
    exactly 16 px: keypoint (x, y) is image pixel (row y, column x)."""
    detector = cvdeep.DISK_create()
    image = load_image(data_dir, GRAF, SIZE)
    assert shifted_keypoints_agree(detector, image, shift=16, margin=16) >= 0.95


def test_feature2d_contract_on_a_real_image(data_dir: Path) -> None:
    detector = cvdeep.DISK_create()
    assert (detector.getNFeatures(), detector.getDetectionThreshold(), detector.getNmsRadius()) == (0, 0.0, 2)
    check_feature2d_contract(detector, load_image(data_dir, CHURCHILL, (320, 416)), 128, gray_network=False)


def test_matching_on_hpatches_pair(data_dir: Path) -> None:
    check_matching_on_hpatches_pair(cvdeep.DISK_create(), data_dir)
