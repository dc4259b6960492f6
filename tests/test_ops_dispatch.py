"""cvdeep.ops picks the compiled kernels when built, the references otherwise (warning once)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cvdeep import ops
from cvdeep.ops import reference

ROOT = Path(__file__).resolve().parents[1]


def test_backend_names_the_live_path(monkeypatch) -> None:
    expected = "reference" if not ops.build_info() else ("cpu+cuda" if ops.build_info()["cuda"] else "cpu")
    assert ops.backend() == expected
    monkeypatch.setenv("CVDEEP_DISABLE_EXT", "1")
    assert ops.backend() == "reference"


def test_build_info_reports_cpu_path() -> None:
    info = ops.build_info()
    if not info:
        pytest.skip("cvdeep._C is not built")
    assert info["cpu_isa"] in ("avx512", "avx2", "generic")
    assert isinstance(info["cuda"], bool) and info["openmp"] > 0


@pytest.mark.parametrize("disabled", ["0", "1"])
def test_both_paths_agree_through_the_public_ops(monkeypatch, disabled: str) -> None:
    monkeypatch.setenv("CVDEEP_DISABLE_EXT", disabled)
    torch.manual_seed(0)
    scores = torch.rand(1, 1, 40, 50)
    keypoints, values = ops.nms(scores, 2, 0.1, 30, 1)
    want_k, want_v = reference.nms(scores, 2, 0.1, 30, 1)
    assert torch.equal(keypoints[0], want_k[0]) and torch.equal(values[0], want_v[0])
    picked = ops.soft_nms(keypoints[0].float(), values[0], 3.0, 10)
    assert torch.equal(picked[2], reference.soft_nms(keypoints[0].float(), values[0], 3.0, 10)[2])
    heat = scores[0, 0].clone().requires_grad_(True)
    refined, value = ops.softargmax(heat, keypoints[0].float(), 2, 0.2)
    (refined.sum() + value.sum()).backward()
    assert heat.grad is not None and heat.grad.abs().sum() > 0
    d1, d2 = torch.randn(64, 16), torch.randn(80, 16)
    indices, _ = ops.l2_match(d1, d2, k=2, mutual=True, ratio=0.95)
    assert torch.equal(indices, reference.l2_match(d1, d2, 2, True, 0.95)[0])


def test_missing_extension_warns_exactly_once() -> None:
    script = (
        "import sys, warnings, torch\n"
        "sys.modules['cvdeep._C'] = None  # makes 'from cvdeep import _C' fail like an unbuilt package\n"
        "from cvdeep import ops\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    for _ in range(3):\n"
        "        ops.nms(torch.rand(1, 1, 8, 8), 1)\n"
        "        ops.l2_match(torch.rand(4, 3), torch.rand(5, 3))\n"
        "print(ops.backend(), sum('pure-torch references' in str(w.message) for w in caught))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["reference", "1"]
