"""The model registry: every ``ModelFamily`` declared in ``cvdeep/nets/``, by name.

Like timm's registry, a name carries its network, configuration, weights and licence;
unlike timm's, the entries are the declarations the network modules end with (see
``cvdeep.declaration``), collected from ``FAMILY_MODULES``. ``build_model(name)`` builds the
network and loads its weights strictly through the weights hub.
"""
from __future__ import annotations

import importlib
import os
from functools import cache

import torch
from torch import nn

from . import weights as hub
from .declaration import ModelFamily, Variant
from .errors import Error

FAMILY_MODULES: tuple[str, ...] = (
    "cvdeep.nets.xfeat",
    "cvdeep.nets.aliked",
    "cvdeep.nets.disk",
    "cvdeep.nets.superpoint",
    "cvdeep.nets.d2net",
    "cvdeep.nets.tr",
    "cvdeep.nets.delf",
    "cvdeep.nets.lift",
    "cvdeep.nets.lfnet",
    "cvdeep.nets.r2d2",
    "cvdeep.nets.keynet",
    "cvdeep.nets.deepdesc",
    "cvdeep.nets.tfeat",
    "cvdeep.nets.hardnet",
    "cvdeep.nets.sosnet",
    "cvdeep.nets.hynet",
    "cvdeep.nets.l2net",
    "cvdeep.nets.lightglue",
)
"""One line per network module; each ends with ``FAMILIES = (ModelFamily(...), ...)``."""


@cache
def families() -> dict[str, ModelFamily]:
    """Family name -> declaration, in ``FAMILY_MODULES`` order."""
    found: dict[str, ModelFamily] = {}
    for module in FAMILY_MODULES:
        for family in importlib.import_module(module).FAMILIES:
            if family.name in found:
                raise ValueError(f"model family {family.name!r} declared twice")
            found[family.name] = family
    names = [variant.name for family in found.values() for variant in family.variants]
    duplicated = {name for name in names if names.count(name) > 1}
    if duplicated:
        raise ValueError(f"model names declared twice: {sorted(duplicated)}")
    return found


@cache
def _variants() -> dict[str, tuple[ModelFamily, Variant]]:
    return {variant.name: (family, variant) for family in families().values() for variant in family.variants}


def get_family(name: str) -> ModelFamily:
    """The family by its name (``"aliked"``) or public name (``"ALIKED"``), or ``Error``."""
    key = name.lower()
    for family in families().values():
        if key in (family.name, family.public_name.lower()):
            return family
    raise Error(f"unknown model family {name!r}; accepted: {', '.join(families())}")


def list_models(family: str | None = None) -> list[str]:
    """Registry names of every model, or of one family, sorted."""
    return sorted(name for name, (fam, _) in _variants().items() if family is None or fam.name == family)


def get_model(name: str, family: str | None = None) -> tuple[ModelFamily, Variant]:
    """(family, variant) of a registry name; ``Error`` listing the accepted names otherwise."""
    found = _variants().get(name)
    if found is None or (family is not None and found[0].name != family):
        raise Error(f"unknown model {name!r}; accepted: {', '.join(list_models(family))}")
    return found


def lightglue_pairings() -> dict[str, tuple[ModelFamily, str]]:
    """Feature name -> (its family, the LightGlue model trained on it), from the declarations.

    Both the family name (``"aliked"``: the first of its variants that declares a pairing)
    and each paired model name (``"aliked-n16"``) are keys.
    """
    pairings: dict[str, tuple[ModelFamily, str]] = {}
    for family in families().values():
        for variant in family.variants:
            if variant.lightglue is not None:
                pairings.setdefault(family.name, (family, variant.lightglue))
                pairings[variant.name] = (family, variant.lightglue)
    return pairings


def preferred_model(family: ModelFamily, weights: str | os.PathLike | None = None) -> str:
    """The model a family's class builds when no ``model=`` is given.

    With a ``weights`` file given, the variant whose declared file has that name, else the
    family's first variant (the official layout, which is what a user's own file most likely
    holds). Without one, the first declared variant (official weights come first) whose file is already here
    (packaged, ``$CVDEEP_WEIGHTS_DIR`` or the cache); with none here, the first variant whose
    weights ship inside the package (trained by cvdeep: works offline from install); else the
    first variant, whose file the hub then fetches.
    """
    if weights is not None:
        basename = os.path.basename(str(weights))
        for variant in family.variants:
            if variant.weights is not None and variant.weights.basename == basename:
                return variant.name
        return family.default_model
    for variant in family.variants:
        if variant.weights is None or hub.is_local(variant.weights):
            return variant.name
    for variant in family.variants:
        if variant.weights is not None and variant.weights.packaged:
            return variant.name
    return family.default_model


def weight_specs() -> dict[str, hub.WeightSpec]:
    """Every weight file any model can load, by its name (several models may share one file)."""
    specs: dict[str, hub.WeightSpec] = {}
    for family in families().values():
        for variant in family.variants:
            if variant.weights is not None:
                specs.setdefault(variant.weights.name, variant.weights)
    return dict(sorted(specs.items()))


def get_weight_spec(name: str) -> hub.WeightSpec:
    """The weight file named ``name``, or the file a model of that name loads; ``Error`` otherwise."""
    specs = weight_specs()
    if name in specs:
        return specs[name]
    variant = _variants().get(name)
    if variant is not None and variant[1].weights is not None:
        return variant[1].weights
    accepted = sorted(set(specs) | {n for n, (_, v) in _variants().items() if v.weights is not None})
    raise Error(f"unknown weights {name!r}; accepted: {', '.join(accepted)}")


def build_model(
    name: str,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    pretrained: bool = True,
) -> nn.Module:
    """Build a registered network in eval mode with its weights loaded strictly.

    ``weights`` overrides the declared file with a local path; ``pretrained=False`` builds
    the architecture alone (for introspection or training from scratch). A file that is
    not a checkpoint of this network raises ``Error`` naming the file, the model and what
    was expected.
    """
    family, variant = get_model(name)
    network = (variant.network or family.network)(**variant.network_args)
    if pretrained and (weights is not None or variant.weights is not None):
        checkpoint = hub.load_checkpoint(variant.weights, weights)
        try:
            network.load_pretrained(checkpoint)
        except Error:
            raise
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
            where = os.fspath(weights) if weights is not None else variant.weights.filename  # type: ignore[union-attr]
            raise Error(
                f"{where}: not a checkpoint of model {name!r} ({type(network).__name__}, {family.paper}): "
                f"{_summary(exc)}. Expected "
                + (f"the file {variant.weights.basename} from {variant.weights.source}" if variant.weights else
                   "a checkpoint saved from this network")
                + "."
            ) from exc
    return network.eval().to(device)


def _summary(exc: BaseException, limit: int = 400) -> str:
    """The exception's message on one line, cut at ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:limit] + ("..." if len(text) > limit else "")
