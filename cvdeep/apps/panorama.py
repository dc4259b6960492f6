"""Stitch overlapping photos (ordered or not) into one planar panorama.

Pairwise matching of every pair, Brown & Lowe's overlap test, a maximum spanning tree
of the overlap graph whose centre is the reference image, homographies chained along
the tree, warping onto a common canvas and OpenCV's multi-band (or feather) blender
with seams in the middle of each overlap. Behind ``examples/panorama.py`` and
``cvdeep panorama``.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from ..errors import Error
from ..image import limit_size, read_image
from ..matching.pairs import LOWE_RATIO, PairMatcher, detect_features
from ..progress import Steps
from .common import PairGeometry, add_matching_arguments, create_features, pair_geometry, resolve_pipeline

BLENDERS = ("multiband", "feather", "none")
BLEND_STRENGTH = 5.0  # percent of the canvas diagonal, OpenCV's stitching_detailed default
MAX_CANVAS_GROWTH = 25.0  # refuse canvases larger than this many times the summed input area
logger = logging.getLogger(__name__)


@dataclass
class Panorama:
    """The stitched image and how every input was placed on it."""

    image: np.ndarray
    names: list[str]
    reference: int  # index into names
    placed: list[int]  # indices stitched, in input order
    rejected: list[int]  # inputs that overlap none of the placed ones
    corners: dict[int, np.ndarray]  # index -> (4, 2) corners of that input on the canvas
    edges: dict[tuple[int, int], PairGeometry]  # verified overlaps, i < j, homography maps i -> j


def _spanning_tree(count: int, edges: dict[tuple[int, int], PairGeometry]) -> dict[int, list[int]]:
    """Maximum spanning forest of the overlap graph, weighted by inlier count (Kruskal)."""
    parent = list(range(count))

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    tree: dict[int, list[int]] = {node: [] for node in range(count)}
    for i, j in sorted(edges, key=lambda pair: -edges[pair].inlier_count):
        if root(i) != root(j):
            parent[root(i)] = root(j)
            tree[i].append(j)
            tree[j].append(i)
    return tree


def _hops(tree: dict[int, list[int]], start: int) -> dict[int, int]:
    distance = {start: 0}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for neighbour in tree[node]:
            if neighbour not in distance:
                distance[neighbour] = distance[node] + 1
                queue.append(neighbour)
    return distance


def _choose_reference(tree: dict[int, list[int]], edges: dict[tuple[int, int], PairGeometry]) -> tuple[int, list[int]]:
    """Centre of the largest tree: the fewest homographies chained to reach any image."""
    components: list[list[int]] = []
    seen: set[int] = set()
    for node in tree:
        if node not in seen:
            component = sorted(_hops(tree, node))
            seen.update(component)
            components.append(component)
    largest = max(components, key=len)
    strength = {node: sum(g.inlier_count for pair, g in edges.items() if node in pair) for node in largest}
    reference = min(largest, key=lambda node: (max(_hops(tree, node).values()), -strength[node]))
    return reference, largest


def _to_reference(tree: dict[int, list[int]], reference: int,
                  edges: dict[tuple[int, int], PairGeometry]) -> dict[int, np.ndarray]:
    """Homography from every image of the reference's tree into the reference image."""
    transforms = {reference: np.eye(3)}
    queue = deque([reference])
    while queue:
        node = queue.popleft()
        for neighbour in tree[node]:
            if neighbour in transforms:
                continue
            forward = (neighbour, node) in edges
            homography = edges[(neighbour, node) if forward else (node, neighbour)].homography
            assert homography is not None  # edges hold verified overlaps only
            step = homography if forward else np.linalg.inv(homography)
            transform = transforms[node] @ step
            transforms[neighbour] = transform / transform[2, 2]
            queue.append(neighbour)
    return transforms


def _image_corners(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    return np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64) - 0.5


def _place(image: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Corners of ``image`` on the reference plane; refuses projections through the horizon."""
    homogeneous = np.c_[_image_corners(image), np.ones(4)] @ transform.T
    if (homogeneous[:, 2] <= 1e-8).any():
        raise Error("the inputs span too wide a field of view for a planar panorama "
                    "(an image projects beyond the horizon)")
    return homogeneous[:, :2] / homogeneous[:, 2:]


def _blend(images: list[np.ndarray], masks: list[np.ndarray], offsets: list[tuple[int, int]],
           canvas: tuple[int, int, int, int], blender: str) -> np.ndarray:
    """Blend warped images (with their masks and canvas offsets) using OpenCV's detail blenders."""
    x0, y0, width, height = canvas
    blend_width = math.sqrt(width * height) * BLEND_STRENGTH / 100.0
    engine: Any  # a cv2.detail.Blender; its blend(None, None) allocates the result, which the type stubs do not allow
    if blender == "multiband":
        engine = cv2.detail.MultiBandBlender()
        engine.setNumBands(max(1, int(math.ceil(math.log2(blend_width))) - 1))
        masks = _seam_masks(masks, offsets, canvas)
    elif blender == "feather":
        engine = cv2.detail.FeatherBlender()
        engine.setSharpness(1.0 / blend_width)
    else:
        engine = cv2.detail.Blender.createDefault(cv2.detail.Blender_NO)
        masks = _seam_masks(masks, offsets, canvas)
    engine.prepare((x0, y0, width, height))
    for image, mask, offset in zip(images, masks, offsets):
        engine.feed(image.astype(np.int16), mask, offset)
    result, _ = engine.blend(None, None)
    return np.clip(result, 0, 255).astype(np.uint8)


def _seam_masks(masks: list[np.ndarray], offsets: list[tuple[int, int]],
                canvas: tuple[int, int, int, int]) -> list[np.ndarray]:
    """Each canvas pixel goes to the image whose border is farthest (seams mid-overlap)."""
    x0, y0, width, height = canvas
    best = np.zeros((height, width), np.float32)
    owner = np.full((height, width), -1, np.int32)
    for index, (mask, (x, y)) in enumerate(zip(masks, offsets)):
        bordered = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        distance = cv2.distanceTransform(bordered, cv2.DIST_L2, 3)[1:-1, 1:-1]
        window = (slice(y - y0, y - y0 + mask.shape[0]), slice(x - x0, x - x0 + mask.shape[1]))
        better = distance > best[window]
        best[window][better] = distance[better]
        owner[window][better] = index
    seams = []
    for index, (mask, (x, y)) in enumerate(zip(masks, offsets)):
        window = (slice(y - y0, y - y0 + mask.shape[0]), slice(x - x0, x - x0 + mask.shape[1]))
        seams.append(np.where((owner[window] == index) & (mask > 0), 255, 0).astype(np.uint8))
    return seams


def stitch(
    paths: list[str | os.PathLike],
    features: str = "sift",
    matcher: str = "ratio",
    ratio: float = LOWE_RATIO,
    estimator: str = "magsac",
    threshold: float = 3.0,
    max_size: int | None = None,
    nfeatures: int | None = None,
    blender: str = "multiband",
    skip_unmatched: bool = False,
    log: Callable[[str], object] | None = None,
    progress: bool = False,
) -> Panorama:
    """Stitch the images at ``paths``; raises ``Error`` naming any input that overlaps no other
    (unless ``skip_unmatched``, which leaves them out and lists them in ``Panorama.rejected``).

    ``log`` receives one line per stage (default: the ``cvdeep.apps.panorama`` logger at INFO);
    ``progress`` shows every step (each image, each pair) on a bar on stderr.
    """
    if len(paths) < 2:
        raise Error(f"a panorama needs at least two images; got {len(paths)}")
    if blender not in BLENDERS:
        raise Error(f"unknown blender {blender!r}; accepted: {', '.join(BLENDERS)}")
    say = log or logger.info
    names = [Path(p).name for p in paths]
    pairs = list(itertools.combinations(range(len(paths)), 2))
    with Steps(1 + 2 * len(paths) + len(pairs) + 1, "cvdeep panorama", enabled=progress) as steps:
        steps.start("reading the images")
        images = []
        for path in paths:
            images.append(limit_size(read_image(path), max_size)[0])
            steps.advance()
        steps.start(f"loading {features}" + (" and LightGlue" if matcher == "lightglue" else ""))
        detector = create_features(features, nfeatures)
        pair_matcher = PairMatcher(matcher, detector, ratio, name=features)
        steps.advance()
        tick = time.perf_counter()
        found = []
        for name, image in zip(names, images):
            steps.start(f"features of {name}")
            found.append(detect_features(detector, image))
            steps.advance()
        counts = ", ".join(f"{n} {len(f.keypoints)}" for n, f in zip(names, found))
        say(f"features: {counts} ({time.perf_counter() - tick:.1f} s)")

        tick = time.perf_counter()
        edges: dict[tuple[int, int], PairGeometry] = {}
        best: dict[int, tuple[float, int]] = {}
        for i, j in pairs:
            steps.start(f"matching {names[i]} - {names[j]} ({matcher})")
            geometry = pair_geometry(found[i], found[j], pair_matcher(found[i], found[j]), estimator, threshold)
            steps.advance()
            for a, b in ((i, j), (j, i)):
                if geometry.confidence > best.get(a, (-1.0, -1))[0]:
                    best[a] = (geometry.confidence, b)
            if geometry.overlaps:
                edges[(i, j)] = geometry
                say(f"overlap {names[i]} - {names[j]}: {geometry.inlier_count} inliers of "
                    f"{len(geometry.matches)} matches")
        say(f"pairwise matching: {len(pairs)} pairs ({time.perf_counter() - tick:.1f} s)")
        steps.start("warping and blending")
        panorama = _assemble(images, names, edges, best, blender, skip_unmatched, say)
        steps.advance()
    return panorama


def _assemble(images: list[np.ndarray], names: list[str], edges: dict[tuple[int, int], PairGeometry],
              best: dict[int, tuple[float, int]], blender: str, skip_unmatched: bool,
              say: Callable[[str], object]) -> Panorama:
    """Spanning tree, reference, canvas, warping and blending of the verified overlaps."""
    tree = _spanning_tree(len(images), edges)
    reference, placed = _choose_reference(tree, edges)
    rejected = [index for index in range(len(images)) if index not in placed]
    if len(placed) < 2:
        raise Error(f"none of the {len(images)} images overlap each other ({', '.join(names)})")
    if rejected and not skip_unmatched:
        details = "; ".join(f"{names[r]} (best: {best[r][0]:.2f} with {names[best[r][1]]})" for r in rejected)
        raise Error(f"not overlapping the panorama of {names[reference]}: {details}; "
                    "remove them or pass --skip-unmatched (overlap confidence must exceed 1)")
    transforms = _to_reference(tree, reference, edges)
    corners = {index: _place(images[index], transforms[index]) for index in placed}
    everything = np.vstack(list(corners.values()))
    x0, y0 = np.floor(everything.min(axis=0) + 0.5).astype(int)
    x1, y1 = np.ceil(everything.max(axis=0) + 0.5).astype(int)
    width, height = int(x1 - x0), int(y1 - y0)
    input_area = sum(images[index].shape[0] * images[index].shape[1] for index in placed)
    if width * height > MAX_CANVAS_GROWTH * input_area:
        raise Error(f"the planar panorama would be {width} x {height} pixels, "
                    f"over {MAX_CANVAS_GROWTH:g} times the inputs' area: "
                    "the inputs span too wide a field of view for a planar projection")

    tick = time.perf_counter()
    warped, masks, offsets = [], [], []
    for index in placed:
        low = np.floor(corners[index].min(axis=0) + 0.5).astype(int)
        high = np.ceil(corners[index].max(axis=0) + 0.5).astype(int)
        size = (int(high[0] - low[0]), int(high[1] - low[1]))
        shift = np.array([[1.0, 0.0, -low[0]], [0.0, 1.0, -low[1]], [0.0, 0.0, 1.0]]) @ transforms[index]
        warped.append(cv2.warpPerspective(images[index], shift, size, flags=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_REFLECT))
        coverage = np.full(images[index].shape[:2], 255, np.uint8)
        masks.append(cv2.warpPerspective(coverage, shift, size, flags=cv2.INTER_NEAREST, borderValue=0))
        offsets.append((int(low[0]), int(low[1])))
    image = _blend(warped, masks, offsets, (int(x0), int(y0), width, height), blender)
    say(f"warp and blend ({blender}): {width} x {height} canvas ({time.perf_counter() - tick:.1f} s)")
    canvas_corners = {index: corner - np.array([x0, y0]) for index, corner in corners.items()}
    return Panorama(image, names, reference, placed, rejected, canvas_corners, edges)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``examples/panorama.py`` and ``cvdeep panorama``."""
    parser.add_argument("images", nargs="+", help="overlapping photos, in any order")
    parser.add_argument("--out", required=True, help="panorama image to write (e.g. pano.jpg)")
    add_matching_arguments(parser)
    parser.add_argument("--blend", default="multiband", choices=BLENDERS, help="blender (default: multiband)")
    parser.add_argument("--skip-unmatched", action="store_true",
                        help="leave out images that overlap no other and stitch the rest")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no log messages")


def _printer(quiet: bool) -> Callable[[str], object]:
    """Lines on stdout that leave the progress bar (stderr) intact."""
    if quiet:
        return print
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return print
    return lambda line: tqdm.write(line, file=sys.stdout)


def run(args: argparse.Namespace) -> int:
    """Run from parsed arguments and print what was placed where."""
    pipeline = resolve_pipeline(args.features, args.matcher, args.nfeatures)
    print(f"features: {pipeline.features}   matcher: {pipeline.matcher}   [{pipeline.reason}]", flush=True)
    quiet = getattr(args, "quiet", False)
    panorama = stitch(
        args.images, pipeline.features, pipeline.matcher, args.ratio, args.estimator, args.threshold,
        args.max_size, args.nfeatures, args.blend, args.skip_unmatched, log=_printer(quiet), progress=not quiet,
    )
    names = panorama.names
    print(f"reference: {names[panorama.reference]}")
    for index in panorama.placed:
        x, y = panorama.corners[index].min(axis=0)
        print(f"placed {names[index]} at ({x:.0f}, {y:.0f})")
    for index in panorama.rejected:
        print(f"skipped {names[index]}: overlaps none of the placed images")
    if not cv2.imwrite(args.out, panorama.image):
        raise Error(f"{args.out}: cannot write an image there (check the directory and the extension)")
    height, width = panorama.image.shape[:2]
    print(f"wrote {args.out} ({width} x {height}, {len(panorama.placed)} of {len(names)} images)")
    return 0
