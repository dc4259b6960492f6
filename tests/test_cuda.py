"""The CUDA kernels and a CUDA Feature2D against the CPU references (runs only where a GPU is).

CI has no GPU, so these skip there; `bench/gpu_check.sh` runs them on a lent GPU. Every
CUDA kernel must give what its pure-torch reference gives on the same inputs.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cvdeep import ops
from cvdeep.ops import reference
from cvdeep.ops.deform import deform_conv2d_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module", autouse=True)
def cuda_kernels() -> None:
    if "cuda" not in ops.backend():
        pytest.fail(f"a CUDA device is present but cvdeep._C has no CUDA kernels (backend {ops.backend()!r}); "
                    "build with CVDEEP_WITH_CUDA=1")


def test_nms_matches_the_reference() -> None:
    scores = torch.rand(2, 1, 123, 157, generator=torch.Generator().manual_seed(0))
    scores[0, 0, 10, 10:14] = 2.0  # ties
    for radius, threshold, limit, border in ((0, 0.0, -1, 0), (2, 0.3, -1, 4), (4, 0.1, 50, 2)):
        got_k, got_s = ops.nms(scores.cuda(), radius, threshold, limit, border)
        want_k, want_s = reference.nms(scores, radius, threshold, limit, border)
        for gk, gs, wk, ws in zip(got_k, got_s, want_k, want_s):
            assert torch.equal(gk.cpu(), wk) and torch.equal(gs.cpu(), ws)


def test_soft_nms_matches_the_reference() -> None:
    generator = torch.Generator().manual_seed(1)
    points = torch.rand(3000, 2, generator=generator) * 300
    scores = torch.rand(3000, generator=generator)
    for sigma, limit in ((2.0, -1), (6.0, 400)):
        got = ops.soft_nms(points.cuda(), scores.cuda(), sigma, limit, 0.01)
        want = reference.soft_nms(points, scores, sigma, limit, 0.01)
        assert torch.equal(got[2].cpu(), want[2])
        torch.testing.assert_close(got[1].cpu(), want[1], rtol=1e-5, atol=1e-6)


def test_softargmax_forward_and_backward_match_the_reference() -> None:
    generator = torch.Generator().manual_seed(2)
    scores = torch.rand(64, 80, generator=generator, dtype=torch.float64)
    keypoints = torch.stack([torch.randint(0, 80, (50,), generator=generator),
                             torch.randint(0, 64, (50,), generator=generator)], 1).double()
    for window, temperature in ((1, 1.0), (2, 0.1)):
        ours = scores.cuda().requires_grad_()
        theirs = scores.clone().requires_grad_()
        got, got_value = ops.softargmax(ours, keypoints.cuda(), window, temperature)
        want, want_value = reference.softargmax(theirs, keypoints, window, temperature)
        torch.testing.assert_close(got.cpu(), want)
        torch.testing.assert_close(got_value.cpu(), want_value)
        (got.sum() + got_value.sum()).backward()
        (want.sum() + want_value.sum()).backward()
        torch.testing.assert_close(ours.grad.cpu(), theirs.grad)
    assert torch.autograd.gradcheck(lambda s: ops.softargmax(s, keypoints.cuda(), 2, 0.5)[0],
                                    (scores[:16, :16].cuda().requires_grad_(),), eps=1e-6, atol=1e-4)


def test_l2_match_matches_the_reference() -> None:
    generator = torch.Generator().manual_seed(3)
    d1 = torch.nn.functional.normalize(torch.randn(1500, 128, generator=generator), dim=1)
    d2 = torch.nn.functional.normalize(torch.randn(1700, 128, generator=generator), dim=1)
    for options in ({"k": 2}, {"k": 1, "mutual": True}, {"k": 2, "ratio": 0.9}):
        got_i, got_d = ops.l2_match(d1.cuda(), d2.cuda(), **options)
        want_i, want_d = reference.l2_match(d1, d2, **options)
        assert (got_i.cpu() == want_i).float().mean() > 0.999  # exact ties may break differently in float sums
        torch.testing.assert_close(got_d.cpu(), want_d, rtol=1e-4, atol=1e-4)


def test_deform_conv2d_matches_the_reference() -> None:
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(1, 16, 20, 24, generator=generator)
    offset = torch.randn(1, 18, 20, 24, generator=generator) * 2
    weight = torch.randn(8, 16, 3, 3, generator=generator)
    bias = torch.randn(8, generator=generator)
    got = ops.deform_conv2d(x.cuda(), offset.cuda(), weight.cuda(), bias.cuda(), padding=(1, 1))
    want = deform_conv2d_reference(x, offset, weight, bias, padding=(1, 1))
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4)


def test_a_cuda_detector_agrees_with_the_cpu_one(graf_pair) -> None:
    import cvdeep

    image = graf_pair[0]
    cpu = cvdeep.XFeat_create(1024, device="cpu")
    gpu = cvdeep.XFeat_create(1024, device="cuda")
    kp_cpu, d_cpu = cpu.detectAndCompute(image, None)
    kp_gpu, d_gpu = gpu.detectAndCompute(image, None)
    xy_cpu = np.array([k.pt for k in kp_cpu])
    xy_gpu = np.array([k.pt for k in kp_gpu])
    found = (np.linalg.norm(xy_cpu[:, None] - xy_gpu[None], axis=2).min(axis=1) < 0.5).mean()
    assert found > 0.95 and d_gpu.dtype == np.float32 and d_gpu.shape[1] == d_cpu.shape[1]
