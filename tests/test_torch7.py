"""The Torch7 .t7 reader and the DeepDesc checkpoint it produces."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cvdeep
from cvdeep.nets.deepdesc import DeepDesc, SubtractiveNormalization
from cvdeep.nets.torch7 import t7_state_dict

pytest.importorskip("torchfile")


@pytest.fixture(scope="module")
def split4(shared) -> dict[str, torch.Tensor]:
    return t7_state_dict(shared / "weights" / "deepdesc" / "CNN3_p8_n8_split4_073000.t7")


def test_deepdesc_t7_becomes_a_state_dict(split4):
    shapes = {key: tuple(value.shape) for key, value in split4.items()}
    assert shapes == {
        "mean": (1, 64, 64), "std": (1, 64, 64),
        "desc.0.weight": (32, 1, 7, 7), "desc.0.bias": (32,),
        "desc.3.weight": (1, 32, 5, 5), "desc.3.bias": (1,),
        "desc.4.weight": (64, 32, 6, 6), "desc.4.bias": (64,),
        "desc.7.weight": (1, 64, 5, 5), "desc.7.bias": (1,),
        "desc.8.weight": (128, 64, 5, 5), "desc.8.bias": (128,),
    }
    # Values listed in ../shared/weights/deepdesc/KEYS.txt for this file.
    assert split4["mean"].min().item() == pytest.approx(100.37339, abs=1e-4)
    assert split4["mean"].max().item() == pytest.approx(137.07341, abs=1e-4)
    assert split4["std"].min().item() == pytest.approx(43.42019, abs=1e-4)
    assert split4["std"].max().item() == pytest.approx(51.802597, abs=1e-4)
    assert split4["desc.3.weight"][0, 0, 2, 2].item() == pytest.approx(0.00345, abs=1e-5)
    # The subtractive normalisation's mean estimator is a 5x5 Gaussian repeated over the
    # channels and normalised to sum to one over all of them.
    for key in ("desc.3.weight", "desc.7.weight"):
        assert split4[key].sum().item() == pytest.approx(1.0, abs=1e-5)
        assert torch.allclose(split4[key], split4[key][:, :1].expand_as(split4[key]))


def test_deepdesc_loads_strictly_and_runs(split4):
    net = DeepDesc()
    net.load_pretrained(split4)
    net.eval()
    patches = torch.rand(4, 1, 64, 64) * 255
    with torch.no_grad():
        out = net(patches)
    assert out.shape == (4, 128) and torch.isfinite(out).all()
    assert (out >= 0).all()  # L2 pooling output is a norm


def test_subtractive_normalization_matches_torch7_definition():
    """Torch7: out = x - m / c, with m the zero-padded kernel-weighted sum over space and channels
    and c the same sum over an all-ones input; computed here with explicit windows."""
    torch.manual_seed(0)
    layer = SubtractiveNormalization(3)
    gaussian = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    kernel = torch.outer(gaussian, gaussian)
    layer.weight.copy_((kernel / kernel.sum() / 3).expand(1, 3, 5, 5))
    x = torch.rand(1, 3, 7, 6)
    padded, ones = F.pad(x, (2, 2, 2, 2)), F.pad(torch.ones_like(x), (2, 2, 2, 2))
    expected = torch.empty_like(x)
    for i in range(7):
        for j in range(6):
            mean = (padded[0, :, i:i + 5, j:j + 5] * layer.weight[0]).sum()
            coverage = (ones[0, :, i:i + 5, j:j + 5] * layer.weight[0]).sum()
            expected[0, :, i, j] = x[0, :, i, j] - mean / coverage
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_unreadable_file_raises_cvdeep_error(tmp_path):
    bogus = tmp_path / "bogus.t7"
    bogus.write_bytes(b"not a torch7 file at all")
    with pytest.raises(cvdeep.Error):
        t7_state_dict(bogus)


def test_all_four_splits_differ(shared):
    folder = shared / "weights" / "deepdesc"
    weights = [t7_state_dict(path)["desc.0.weight"].numpy() for path in sorted(folder.glob("*.t7"))]
    assert len(weights) == 4
    assert all(not np.allclose(weights[0], other) for other in weights[1:])
