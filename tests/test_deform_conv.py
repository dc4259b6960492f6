"""deform_conv2d: the torch reference against closed-form cases, the compiled kernel against the reference.

torchvision is never imported, so the reference is pinned by properties that define
torchvision's semantics: zero offsets give a plain (grouped, strided, dilated) conv,
integer offsets shift the sampling grid with zeros outside, a half-pixel offset averages
neighbours, and the mask scales each tap. Gradients are not tested: the compiled
kernels are inference-only (with autograd on, ``deform_conv2d`` uses the reference).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cvdeep import ops
from cvdeep.ops import deform
from cvdeep.ops.deform import deform_conv2d_reference

CASES = [  # batch, channels, height, width, out, groups, offset groups, kernel, stride, padding, dilation
    (2, 8, 11, 13, 6, 2, 2, 3, 1, 1, 1),
    (1, 6, 9, 7, 4, 1, 3, 3, 2, 2, 2),
    (1, 4, 5, 6, 8, 4, 1, 1, 1, 0, 1),
    (1, 3, 7, 7, 5, 1, 1, (3, 2), (1, 2), (1, 0), 1),
]


def _random_case(case, generator, dtype=torch.float64, with_mask=True):
    batch, channels, height, width, out, groups, offset_groups, kernel, stride, padding, dilation = case
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    out_h = (height + 2 * ph - dilation * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dilation * (kw - 1) - 1) // sw + 1
    x = torch.randn(batch, channels, height, width, generator=generator, dtype=dtype)
    weight = torch.randn(out, channels // groups, kh, kw, generator=generator, dtype=dtype)
    bias = torch.randn(out, generator=generator, dtype=dtype)
    offset = 3 * torch.randn(batch, 2 * offset_groups * kh * kw, out_h, out_w, generator=generator, dtype=dtype)
    mask = None
    if with_mask:
        mask = torch.rand(batch, offset_groups * kh * kw, out_h, out_w, generator=generator, dtype=dtype)
    return x, offset, weight, bias, mask, dict(stride=stride, padding=padding, dilation=dilation)


@pytest.mark.parametrize("case", CASES)
def test_zero_offsets_give_a_plain_convolution(case):
    x, offset, weight, bias, _, geometry = _random_case(case, torch.Generator().manual_seed(0))
    groups = x.shape[1] // weight.shape[1]
    expected = F.conv2d(x, weight, bias, groups=groups, **geometry)
    got = deform_conv2d_reference(x, torch.zeros_like(offset), weight, bias, **geometry)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_integer_offsets_shift_with_zeros_outside_and_dy_comes_first():
    x = torch.arange(1.0, 21.0, dtype=torch.float64).reshape(1, 1, 4, 5)
    weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    offset = torch.zeros(1, 2, 4, 5, dtype=torch.float64)
    offset[:, 0] = 1.0  # dy = +1: every output reads the row below
    offset[:, 1] = -2.0  # dx = -2: and two columns to the left
    got = deform_conv2d_reference(x, offset, weight)
    expected = torch.zeros_like(x)
    expected[0, 0, :3, 2:] = x[0, 0, 1:, :3]
    torch.testing.assert_close(got, expected)


def test_fractional_offsets_interpolate_and_the_mask_scales_each_tap():
    x = torch.tensor([[[[0.0, 10.0], [20.0, 30.0]]]], dtype=torch.float64)
    weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    offset = torch.full((1, 2, 2, 2), 0.5, dtype=torch.float64)
    mask = torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64)
    got = deform_conv2d_reference(x, offset, weight, mask=mask)
    # (0.5, 0.5) averages all four; the others read half-outside the image (zeros there)
    expected = 0.5 * torch.tensor([[[[15.0, 10.0], [12.5, 7.5]]]], dtype=torch.float64)
    torch.testing.assert_close(got, expected)


def test_bad_shapes_are_rejected():
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match="offset"):
        deform_conv2d_reference(x, torch.zeros(1, 17, 8, 8), torch.randn(2, 4, 3, 3), padding=1)
    with pytest.raises(ValueError, match="mask"):
        deform_conv2d_reference(x, torch.zeros(1, 18, 8, 8), torch.randn(2, 4, 3, 3), padding=1,
                                mask=torch.ones(1, 8, 8, 8))


compiled = pytest.mark.skipif(ops.backend() == "reference", reason="the C++ extension is not built")


@compiled
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("with_mask", [False, True])
def test_compiled_kernel_matches_the_reference(case, with_mask):
    x, offset, weight, bias, mask, geometry = _random_case(case, torch.Generator().manual_seed(1), with_mask=with_mask)
    with torch.no_grad():
        got = deform.deform_conv2d(x, offset, weight, bias, mask=mask, **geometry)
    expected = deform_conv2d_reference(x, offset, weight, bias, mask=mask, **geometry)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@compiled
def test_compiled_kernel_on_real_aliked_features(graf_pair):
    """block3's deformable conv of ALIKED-n16 on a real image: real offsets, float32, channels_last."""
    from cvdeep.image import to_tensor
    from cvdeep.models import build_model

    network = build_model("aliked-n16")
    image = to_tensor(graf_pair[0][:192, :256], 3, torch.device("cpu"))
    with torch.no_grad():
        x = network.block2(F.avg_pool2d(network.block1(image), 2))
        x = F.avg_pool2d(x, 4).contiguous(memory_format=torch.channels_last)
        layer = network.block3.conv1
        offset = layer.offset_conv(x).clamp(-8, 8)
        got = deform.deform_conv2d(x, offset, layer.regular_conv.weight, None, padding=1)
    expected = deform_conv2d_reference(x.double(), offset.double(), layer.regular_conv.weight.double(), padding=1)
    assert offset.abs().max() > 0.5  # the offsets really deform the grid
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)
