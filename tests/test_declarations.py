"""The one-declaration model shape: every family declared once, and what is derived from it.

These run over every declared family, so a model added by its own file and one line in
``FAMILY_MODULES`` is checked without new test code.
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import importlib.util
import inspect
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import cvdeep
from cvdeep import stubs
from cvdeep.declaration import DetectorConfig
from cvdeep.features import public_classes
from cvdeep.models import build_model, families, get_model, lightglue_pairings, list_models, weight_specs

FAMILIES = list(families().values())
DETECTORS = [f for f in FAMILIES if f.kind in ("detector", "detector-only")]
COMMON = [f.name for f in dataclasses.fields(DetectorConfig)]


def test_the_committed_stub_matches_the_declarations():
    assert stubs.STUB_PATH.read_text() == stubs.render(), "run `python -m cvdeep.stubs` and commit cvdeep/features.pyi"


def _imported_modules(module: str) -> set[str]:
    """cvdeep modules ``module`` imports, anywhere in its body (functions included)."""
    path = Path(importlib.util.find_spec(module).origin)
    package = module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("cvdeep")}


def test_weights_imports_nothing_of_the_registry():
    """No models <-> weights cycle: the hub never reaches back into the registry."""
    assert not {"cvdeep.models", "cvdeep.features", "cvdeep.declaration"} & _imported_modules("cvdeep.weights")
    assert "cvdeep.weights" in _imported_modules("cvdeep.models")


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_every_family_is_complete(family):
    assert family.paper and family.summary and family.variants
    for variant in family.variants:
        spec = variant.weights
        assert spec is not None, variant.name
        assert spec.license and spec.source
        assert spec.packaged or spec.urls or spec.wheel, f"{variant.name}: no way to obtain its weights"
        if variant.lightglue is not None:
            assert get_model(variant.lightglue)[0].kind == "matcher"
    if family.kind != "matcher":
        cls = public_classes()[family.name]
        assert cls.__name__ == family.public_name and getattr(cvdeep, f"{family.public_name}_create")


@pytest.mark.parametrize("family", DETECTORS, ids=lambda f: f.name)
def test_every_detector_speaks_the_common_vocabulary(family):
    names = family.config.names()
    assert list(names[: len(COMMON)]) == COMMON, "the common parameters come first, nfeatures first"
    config = family.config().replace(family.public_name, nfeatures=100, detection_threshold=0.0, nms_radius=3,
                                     border=8, nms="soft", soft_nms_sigma=3.0)
    assert (config.nfeatures, config.nms_radius, config.border, config.nms) == (100, 3, 8, "soft")


@pytest.mark.parametrize("family", DETECTORS, ids=lambda f: f.name)
@pytest.mark.parametrize("bad", [{"nfeatures": -5}, {"nfeatures": 2.5}, {"nfeatures": "many"}, {"nms_radius": -1},
                                 {"border": -3}, {"nms": "greedy"}, {"soft_nms_sigma": 0.0},
                                 {"detection_threshold": float("nan")}])
def test_out_of_range_values_are_refused_at_construction(family, bad):
    """Refused by the constructor itself, before any network or weight file is touched."""
    cls = public_classes()[family.name]
    name = next(iter(bad))
    with pytest.raises(cvdeep.Error, match=f"parameter '{name}'"):
        cls(**bad)


def test_positional_order_is_opencvs_and_model_is_keyword_only():
    signature = inspect.signature(cvdeep.ALIKED_create)
    parameters = list(signature.parameters.values())
    assert parameters[0].name == "nfeatures" and parameters[0].default == 5000
    assert signature.parameters["model"].kind is inspect.Parameter.KEYWORD_ONLY
    assert "nfeatures" in cvdeep.XFeat.__doc__ and "Potje" in cvdeep.XFeat.__doc__
    assert inspect.signature(cvdeep.XFeat) == inspect.signature(cvdeep.XFeat_create)
    with pytest.raises(cvdeep.Error, match="keyword-only"):
        cvdeep.XFeat_create(*range(len(cvdeep.XFeat.family.config.names()) + 1))


def test_opencv_accessors_exist_for_every_parameter():
    detector = cvdeep.XFeat_create(2048)
    assert detector.getNFeatures() == detector.getMaxFeatures() == 2048
    detector.setMaxFeatures(300)
    assert detector.getNFeatures() == 300
    detector.setNms("soft")
    assert detector.getNms() == "soft"
    with pytest.raises(cvdeep.Error, match="parameter 'nms'"):
        detector.setNms("fuzzy")
    assert detector.getNms() == "soft", "a refused value leaves the parameters unchanged"


def test_old_names_warn_and_still_work():
    with pytest.warns(DeprecationWarning, match="'threshold' is deprecated.*'detection_threshold'"):
        config = cvdeep.ALIKED.family.config().replace("ALIKED", threshold=0.3)
    assert config.detection_threshold == 0.3
    with pytest.warns(DeprecationWarning, match="nms_size"):
        config = cvdeep.KeyNet.family.config().replace("KeyNet", nms_size=15)
    assert config.nms_radius == 7
    with pytest.warns(DeprecationWarning, match="remove_borders"):
        config = cvdeep.SuperPoint.family.config().replace("SuperPoint", remove_borders=6)
    assert config.border == 6
    with pytest.raises(cvdeep.Error, match="give only 'detection_threshold'"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            cvdeep.ALIKED.family.config().replace("ALIKED", threshold=0.3, detection_threshold=0.2)


def test_a_model_of_another_family_is_refused():
    with pytest.raises(cvdeep.Error, match="unknown model 'disk'; accepted: xfeat"):
        cvdeep.XFeat_create(model="disk")


def test_lightglue_pairings_come_from_the_declarations():
    pairings = lightglue_pairings()
    assert pairings["aliked"][1] == "lightglue-aliked" and pairings["aliked-n16"][1] == "lightglue-aliked"
    assert pairings["disk"][1] == "lightglue-disk" and pairings["xfeat"][1] == "lighterglue-xfeat"
    assert "aliked-t16" not in pairings, "LightGlue was trained on ALIKED-N16 only"


def test_weight_names_and_model_names_both_resolve():
    from cvdeep.models import get_weight_spec

    assert get_weight_spec("disk").name == "disk-depth" == get_weight_spec("disk-depth").name
    assert set(weight_specs()) >= {"xfeat", "disk-depth", "aliked_lightglue"}
    with pytest.raises(cvdeep.Error, match="unknown weights 'nope'"):
        get_weight_spec("nope")


def test_feature2d_pickles_and_deep_copies_by_parameters():
    detector = cvdeep.XFeat_create(512, nms="soft")
    image = np.random.default_rng(0).integers(0, 256, (96, 128), dtype=np.uint8)
    for clone in (pickle.loads(pickle.dumps(detector)), copy.deepcopy(detector)):
        assert clone.getParams() == detector.getParams()
        assert clone.empty(), "the network is rebuilt lazily on the other side"
        assert [k.pt for k in clone.detect(image)] == [k.pt for k in detector.detect(image)]


# --- wrong weight files ---------------------------------------------------------------------


def test_a_state_dict_of_another_network_names_file_model_and_expectation(tmp_path):
    path = tmp_path / "not_xfeat.pt"
    torch.save(build_model("hardnet-liberty-aug", pretrained=False).state_dict(), path)
    with pytest.raises(cvdeep.Error,
                       match=r"not_xfeat.pt: not a checkpoint of model 'xfeat' .*Expected the file xfeat.pt"):
        build_model("xfeat", weights=path)
    with pytest.raises(cvdeep.Error, match="not a checkpoint of model 'xfeat'"):
        cvdeep.XFeat_create(weights=str(path))


def test_a_truncated_or_foreign_file_is_refused(tmp_path):
    good = tmp_path / "hardnet.pt"
    torch.save(build_model("hardnet-liberty-aug", pretrained=False).state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(cvdeep.Error, match="truncated.pt: cannot be loaded as a safe torch checkpoint"):
        build_model("hardnet-liberty-aug", weights=truncated)
    text = tmp_path / "notes.t7"
    text.write_text("not a Torch7 file")
    with pytest.raises(cvdeep.Error, match="notes.t7: not a readable Torch7 file"):
        build_model("deepdesc-split4", weights=text)


def test_every_registry_name_is_listed():
    assert set(list_models()) == {v.name for f in FAMILIES for v in f.variants}
