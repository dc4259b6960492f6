"""Peak memory (RSS) of extraction, per model, against image size and keypoint count.

Every measurement runs in a fresh Python process (``ru_maxrss`` is a process-lifetime
peak), which builds one feature, reads a real photo resized to the benchmark size
(``exposure_error_1.jpg`` of the stitching tutorial, 2048x1536, INTER_AREA down and
INTER_CUBIC up), runs ``detectAndCompute`` (``detect`` for Key.Net) once and reports its
peak RSS, the RSS before extraction (model and image loaded) and the keypoint count.
``cv2.SIFT`` runs in the same table as the baseline.

    PYTHONPATH=. python bench/bench_memory.py [--threads 2] [--models sift xfeat aliked ...]
        [--sizes 640x480 1280x720 1920x1080 4000x3000] [--counts 1000 5000 20000 0] [--count-size 1920x1080]
        [--untrained] [--limit-gb 12]

Models are the registry's detectors and patch descriptors whose weights are on this
machine (``$CVDEEP_WEIGHTS_DIR``, ``../shared/weights`` or the cache); ``--untrained`` adds
the others with randomly initialised weights saved to a temporary file (memory does not
depend on the weight values, keypoint counts do). ``--limit-gb`` caps each child's address
space so a model that would exhaust a shared machine fails instead (reported as ``fails``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTO = "panorama_stitching_tutorial/imgs/exposure_error_1.jpg"
DEFAULT_SIZES = ("640x480", "1280x720", "1920x1080", "4000x3000")
DEFAULT_COUNTS = (1000, 5000, 20000, 0)


def _shared() -> Path:
    return Path(os.environ.get("CVDEEP_SHARED", ROOT.parent / "shared"))


def _photo(width: int, height: int):
    """The benchmark photo at ``width`` x ``height`` (BGR uint8); a blurred-noise image when ../shared is absent."""
    import cv2
    import numpy as np

    image = cv2.imread(str(_shared() / "data" / PHOTO))
    if image is None:
        noise = np.random.default_rng(0).integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
        return cv2.resize(cv2.GaussianBlur(noise, (5, 5), 1.5), (width, height), interpolation=cv2.INTER_CUBIC)
    shrink = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def child(model: str, size: str, nfeatures: int | None, weights: str | None, threads: int) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    width, height = (int(v) for v in size.lower().split("x"))
    result: dict[str, object] = {"model": model, "size": size, "nfeatures": nfeatures}
    try:
        import cvdeep

        params: dict[str, object] = {}
        if nfeatures is not None:
            params["nfeatures"] = nfeatures
        if weights:
            params["weights"] = weights
        if model != "sift":
            params["device"] = "cpu"
        feature = cvdeep.features.create(model, **params)
        image = _photo(width, height)
        result["rss_before_mb"] = _rss_mb()
        start = time.perf_counter()
        only_detect = model != "sift" and feature.family.kind == "detector-only"
        keypoints = feature.detect(image, None) if only_detect else feature.detectAndCompute(image, None)[0]
        result["seconds"] = time.perf_counter() - start
        result["keypoints"] = len(keypoints)
    except Exception as exc:  # noqa: BLE001 - reported in the table, not raised: the parent goes on
        result["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    result["peak_mb"] = _rss_mb()
    print(json.dumps(result), flush=True)


def available_models(untrained: bool) -> list[tuple[str, str | None]]:
    """(registry family name, untrained weights path or None) of every detector/patch model to measure."""
    os.environ.setdefault("CVDEEP_WEIGHTS_DIR", str(_shared() / "weights"))
    sys.path.insert(0, str(ROOT))
    import torch

    from cvdeep import weights as hub
    from cvdeep.models import build_model, families, preferred_model

    chosen: list[tuple[str, str | None]] = []
    scratch = Path(tempfile.mkdtemp(prefix="cvdeep-bench-memory-"))
    for family in families().values():
        if family.kind == "matcher":
            continue
        model = preferred_model(family)
        spec = next(v.weights for v in family.variants if v.name == model)
        if spec is None or hub.is_local(spec):
            chosen.append((family.name, None))
        elif untrained:
            path = scratch / f"{model}.pt"
            state = build_model(model, pretrained=False).state_dict()
            if "pca_fitted" in state:  # DELF: an identity PCA stands in for a learned one (same memory)
                state["pca_fitted"].fill_(True)
            torch.save(state, path)
            chosen.append((family.name, str(path)))
    return chosen


def run_child(model: str, size: str, nfeatures: int | None, weights: str | None, threads: int,
              limit_gb: float | None) -> dict[str, object]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", model, size, "--threads", str(threads)]
    if nfeatures is not None:
        command += ["--nfeatures", str(nfeatures)]
    if weights:
        command += ["--weights", weights]

    def limit() -> None:
        if limit_gb:
            cap = int(limit_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, preexec_fn=limit, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = " ".join((done.stderr or "").split())[-160:]
        return {"model": model, "size": size, "nfeatures": nfeatures, "error": f"exit {done.returncode}: {tail}"}
    return json.loads(lines[-1])


def _row(result: dict[str, object], what: str) -> str:
    if "error" in result:
        return f"| {result['model']} | {what} | fails | | | | {result['error']} |"
    return (f"| {result['model']} | {what} | {result['peak_mb']:.0f} | {result['rss_before_mb']:.0f} | "
            f"{result['keypoints']} | {result['seconds']:.1f} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "WxH"), help=argparse.SUPPRESS)
    parser.add_argument("--nfeatures", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", help="family names (default: sift and every model with weights here)")
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--counts", nargs="*", type=int, default=list(DEFAULT_COUNTS),
                        help="nfeatures values of the keypoint-count table (0: the model's all)")
    parser.add_argument("--count-size", default="1920x1080", help="image size of the keypoint-count table")
    parser.add_argument("--untrained", action="store_true",
                        help="also models without weights here, randomly initialised")
    parser.add_argument("--limit-gb", type=float, default=None, help="address-space cap of each child (GiB)")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.nfeatures, args.weights, args.threads)
        return

    models = [("sift", None), *available_models(args.untrained)]
    if args.models:
        wanted = {name.lower() for name in args.models}
        models = [(name, weights) for name, weights in models if name in wanted]
    print(f"peak RSS in MiB of one detectAndCompute in a fresh process, {args.threads} threads; "
          f"'before' = RSS with the model and the image loaded")
    print("\n| model | image | peak MiB | before MiB | keypoints | seconds | note |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for name, weights in models:
        for size in args.sizes:
            print(_row(run_child(name, size, None, weights, args.threads, args.limit_gb), size), flush=True)
    print(f"\n| model | nfeatures at {args.count_size} | peak MiB | before MiB | keypoints | seconds | note |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for name, weights in models:
        if name != "sift":
            from cvdeep.features import public_classes

            if public_classes()[name].family.kind == "patch":
                continue  # a patch descriptor has no nfeatures: its detector's count rules
        for count in args.counts:
            result = run_child(name, args.count_size, count, weights, args.threads, args.limit_gb)
            print(_row(result, str(count)), flush=True)


if __name__ == "__main__":
    main()
