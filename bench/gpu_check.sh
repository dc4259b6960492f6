#!/usr/bin/env bash
# The prepared run for a session that is lent a GPU (the `device` tool: one H200, 15 minutes).
#
# Here, first:   bash bench/gpu_prepare.sh          # fills .carry/gpu (ignored): data subset, weights, photos
# Then, with the device tool:
#   run(command="bash bench/gpu_check.sh check", carry=[".carry/gpu"], timeout_s=480)
#   run(command="bash bench/gpu_check.sh train sdgmnet-cvdeep sdgm 3000", carry=[".carry/gpu"], timeout_s=420)
#
# `check` builds the extension with CUDA, runs the CUDA kernels against their references and a
# CUDA detector against the CPU one (tests/test_cuda.py), times the extractors and the matcher
# on the GPU and the CPU in the same run, and writes $OUT/gpu_report.md. `train` trains a
# descriptor on the GPU on the carried photos and returns its run directory as $OUT/run.tar.gz.
# The working tree that travels must stay under 64 MiB: train_state/ (tracked) is large, so
# before a device call run `git rm -r -q --cached train_state && echo /train_state/ >> .git/info/exclude`
# and afterwards `git reset -q train_state` and remove that exclude line.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
CARRY=.carry/gpu
export CVDEEP_SHARED="$PWD/$CARRY/shared" CVDEEP_WEIGHTS_DIR="$PWD/$CARRY/weights" CVDEEP_OFFLINE=1 PYTHONUNBUFFERED=1
report="$OUT/gpu_report.md"
phase=${1:-check}

build() {
    local started=$SECONDS
    CVDEEP_WITH_CUDA=1 MAX_JOBS=16 python3 setup.py build_ext --inplace -q > "$OUT/build.log" 2>&1 || {
        echo "build failed; see build.log" | tee -a "$report"; tail -30 "$OUT/build.log"; exit 1; }
    echo "- build with CUDA: $((SECONDS - started)) s" >> "$report"
}

{
    echo "# GPU check, $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
} > "$report" 2>&1
build
python3 -c "import cvdeep.ops as o; print('cvdeep ops:', o.backend(), o.build_info())" >> "$report" 2>&1

if [ "$phase" = "check" ]; then
    python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_ops_kernels.py > "$OUT/tests.log" 2>&1
    echo "- tests: $(tail -1 "$OUT/tests.log")" >> "$report"
    python3 - >> "$report" 2>&1 <<'EOF'
import time, cv2, numpy as np, torch, cvdeep
from pathlib import Path
from cvdeep import ops

def timed(call, repeat=10):
    call(); torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start = time.perf_counter(); call(); torch.cuda.synchronize(); times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))

image = cv2.imread(str(Path(__import__("os").environ["CVDEEP_SHARED"]) / "data/oxford_affine/images/graf/img1.ppm"))
image = cv2.resize(image, (640, 480))
print("\n| model, 640x480, 2048 keypoints | GPU ms | CPU ms (16 cores) | CPU / GPU |\n| --- | ---: | ---: | ---: |")
for name in ("xfeat", "aliked", "disk"):
    try:
        gpu = cvdeep.features.create(name, nfeatures=2048, device="cuda")
        cpu = cvdeep.features.create(name, nfeatures=2048, device="cpu")
    except cvdeep.Error as error:
        print(f"| {name} | - | - | weights not carried: {error} |"); continue
    g = timed(lambda: gpu.detectAndCompute(image, None)); c = timed(lambda: cpu.detectAndCompute(image, None), 3)
    print(f"| {name} | {g:.1f} | {c:.1f} | {c / g:.1f}x |")
d = torch.nn.functional.normalize(torch.randn(2, 8192, 128), dim=2)
g = timed(lambda: ops.l2_match(d[0].cuda(), d[1].cuda(), k=2))
t = timed(lambda: torch.cdist(d[0].cuda(), d[1].cuda()).topk(2, largest=False))
print(f"\nl2_match 8192 x 8192 x 128, k=2: {g:.2f} ms on the GPU; torch.cdist + topk {t:.2f} ms ({t / g:.1f}x)")
EOF
elif [ "$phase" = "train" ]; then
    model=${2:?model}; loss=${3:?loss}; steps=${4:?steps}
    started=$SECONDS
    python3 -m cvdeep.cli train descriptor --model "$model" --loss "$loss" --steps "$steps" \
        --images "$CARRY/photos" --out "runs/gpu-$model" --cache "runs/cache" --device cuda --quiet \
        > "$OUT/train.log" 2>&1
    echo "- train $model/$loss, $steps steps on the carried photos: exit $?, $((SECONDS - started)) s: $(tail -1 "$OUT/train.log")" >> "$report"
    tar czf "$OUT/run.tar.gz" -C runs "gpu-$model"
fi
cat "$report"
