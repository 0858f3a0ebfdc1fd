"""The architectures of a hyperparameter sweep: a base network and a grid over its parameters.

It imports nothing but the architecture models (pydantic, no torch), so the API can expand and
validate a sweep before queueing it.

The base
--------
Either a plain architecture spec (every grid key but ``depth`` applies to it), or a *stack*::

    {"parameterization": "ntk",
     "stem":    [...],                                   # optional, default []
     "block":   [{"type": "Dense", "out_dim": 512}, {"type": "Relu"}],
     "depth":   3,                                        # optional, default 1
     "readout": [{"type": "Dense", "out_dim": 1}]}

which is the architecture ``stem + block × depth + readout``. **Depth is the number of times the
block is repeated**: for the usual block [Dense, activation] it is the number of hidden layers,
so depth 1 is Dense–Relu–Dense (readout), as in ``bench/harness.fc_spec``'s FC-depth. Depth 0 is
``stem + readout`` (with an empty stem: a linear model).

The grid
--------
``{key: [values...]}``; the sweep is the product of the value lists, the last key varying
fastest. Keys:

* ``depth``: repetitions of the block (stacks only), integers ≥ 0.
* ``parameterization``: "ntk" or "standard".
* ``activation``: replaces every activation layer (Relu, Erf, …; those inside Residual blocks
  too); a value is a type name ("Relu") or a layer object ({"type": "Erf", "b": 2.0}).
* any layer parameter (``w_std``, ``b_std``, an activation's ``alpha``/``a``/``b``/``c``, an
  Elementwise ``fn``/``degree``, ``out_dim``, …): set on every layer that has that parameter.
  Prefix it with a part of a stack, ``stem.``, ``block.`` or ``readout.``, to set it there only
  (``readout.w_std``); a key and its prefixed form cannot both appear.

Each architecture of the sweep comes with its *row key*: the grid's value of each key (values
as given), or, for an explicit list of architectures, ``{"architecture": i}`` (its position; or
its label, for a mapping label → spec).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .architecture import (LAYER_REGISTRY, LAYER_TYPES, LAYERS_CEILING, AnyLayer, Architecture, LayerAdapter,
                           SpecError, iter_layers, validation_errors)

# The most architectures one sweep may expand to (the service's NTK_MAX_SWEEP_ARCHITECTURES).
MAX_ARCHITECTURES = 1024
PARTS = ("stem", "block", "readout")
ACTIVATION_TYPES = {name for name, entry in LAYER_REGISTRY.items() if entry.activation}


class Stack(BaseModel):
    """``stem + block × depth + readout`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parameterization: Literal["ntk", "standard"] = "ntk"
    stem: Annotated[list[AnyLayer], Field(max_length=LAYERS_CEILING)] = []
    block: Annotated[list[AnyLayer], Field(min_length=1, max_length=LAYERS_CEILING)]
    depth: Annotated[int, Field(ge=0, le=LAYERS_CEILING)] = 1
    readout: Annotated[list[AnyLayer], Field(min_length=1, max_length=LAYERS_CEILING)]


class SweepTooLarge(SpecError):
    """The grid expands to more architectures than allowed."""

    def __init__(self, value: int, limit: int):
        self.value, self.limit = value, limit
        super().__init__(("grid",), f"the sweep has {value} architectures; at most {limit} are allowed "
                         "(NTK_MAX_SWEEP_ARCHITECTURES)")


@dataclass(frozen=True)
class SweepPoint:
    """One architecture of a sweep and the row key that names it."""

    key: dict[str, Any]
    architecture: Architecture


def expand(base: Mapping | Architecture | Stack | None = None, grid: Mapping[str, Sequence] | None = None,
           architectures: Sequence | Mapping | None = None, *,
           max_architectures: int = MAX_ARCHITECTURES, max_layers: int = LAYERS_CEILING) -> list[SweepPoint]:
    """The sweep's architectures with their row keys: ``base`` × ``grid``, or an explicit list.
    ``max_layers`` bounds a stack's depth and the layers its repeated blocks make (the service's
    NTK_MAX_LAYERS; the depth of every architecture, Residual blocks' layers included, is the
    caller's to check).

    Raises SpecError (path ``grid.<key>``, ``grid`` with the combination at fault, ``base`` or
    ``architectures[i]``) for a key no layer takes or a combination that does not make a valid
    architecture, and ``SweepTooLarge``.
    """
    if architectures is not None:
        if base is not None or grid:
            raise SpecError(("architectures",), "give either architectures or a base and a grid, not both")
        labelled = architectures.items() if isinstance(architectures, Mapping) else enumerate(architectures)
        points = [SweepPoint({"architecture": label}, _parse(("architectures", label), spec))
                  for label, spec in labelled]
        if not points:
            raise SpecError(("architectures",), "the list of architectures is empty")
        _check_size(len(points), max_architectures)
        return points
    if base is None:
        raise SpecError(("base",), "a sweep needs a base architecture (with a grid) or a list of architectures")
    base = _parse_base(base)
    grid = dict(grid or {})
    _check_keys(base, grid)
    _check_size(_product_size(grid), max_architectures)
    points, layers = [], {}
    for combination in itertools.product(*grid.values()):
        key = dict(zip(grid, combination))
        try:
            points.append(SweepPoint(key, _build(base, key, layers, max_layers)))
        except SpecError as error:
            message = error.errors[0]
            where = f"{message['path']}: " if message["path"] else ""
            raise SpecError(("grid",), f"at {key}: {where}{message['message']}") from error
    return points


def _parse(path: tuple, spec) -> Architecture:
    try:
        return Architecture.parse(spec)
    except ValidationError as error:
        raise _spec_error(path, error) from error


def _parse_base(base) -> Architecture | Stack:
    if isinstance(base, (Architecture, Stack)):
        return base
    try:
        return Stack.model_validate(base) if isinstance(base, Mapping) and "block" in base else Architecture.parse(base)
    except ValidationError as error:
        raise _spec_error(("base",), error) from error


def _spec_error(path: tuple, error: ValidationError) -> SpecError:
    first = validation_errors(error)[0]
    return SpecError(path, f"{first['path']}: {first['message']}")


def _check_keys(base: Architecture | Stack, grid: dict) -> None:
    activations = {LAYER_TYPES[name] for name in map(_activation_name, grid.get("activation", [])) if name}
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise SpecError(("grid", key), "each grid entry must be a non-empty list of values")
        part, _, name = key.rpartition(".")
        if key == "depth" and not isinstance(base, Stack):
            raise SpecError(("grid", key), "depth needs a base with a repeated block: give the base as "
                            "{stem, block, depth, readout}")
        if part and (part not in PARTS or not isinstance(base, Stack)):
            raise SpecError(("grid", key), f"a prefixed key names a part of a stacked base ({', '.join(PARTS)})")
        if part and name in grid:
            raise SpecError(("grid", key), f"{name} and {key} both set {name}: keep one")
        if key in ("depth", "parameterization", "activation"):
            continue
        types = {type(layer) for p in ([part] if part else _parts(base)) for layer in iter_layers(getattr(base, p))}
        if not any(name in layer_type.model_fields and name != "type" for layer_type in types | activations):
            raise SpecError(("grid", key), f"no layer of the base{' ' + part if part else ''} (or activation "
                            f"of the grid) has a parameter {name}")


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise SweepTooLarge(size, limit)


def _product_size(grid: dict) -> int:
    size = 1
    for values in grid.values():
        size *= len(values)
    return size


def _parts(base: Architecture | Stack) -> tuple[str, ...]:
    return PARTS if isinstance(base, Stack) else ("layers",)


def _build(base: Architecture | Stack, values: dict, layers_made: dict, max_layers: int) -> Architecture:
    """The architecture ``base`` with the grid ``values`` applied: the activation first, so that
    its parameters in the grid land on it. Equal layers are one object (``layers_made``, by their
    parameters), within the architecture and across the sweep: the sweep's trie reads each once."""
    settings = sorted((key for key in values if key not in ("depth", "parameterization")),
                      key=lambda key: key != "activation")
    parts = {}
    for part in _parts(base):
        layers = [layer.model_dump() for layer in getattr(base, part)]
        for key in settings:
            scope, _, name = key.rpartition(".")
            if scope in ("", part):
                layers = _set(layers, name, values[key])
        parts[part] = [_layer(layer, layers_made, (part, i)) for i, layer in enumerate(layers)]
    if isinstance(base, Stack):
        depth = values.get("depth", base.depth)
        if not isinstance(depth, int) or isinstance(depth, bool) or not 0 <= depth <= max_layers:
            raise SpecError(("depth",), f"must be an integer from 0 to {max_layers}, got {depth!r}")
        if len(parts["block"]) * depth > max_layers:  # before the list is made
            raise SpecError(("depth",), f"{depth} blocks of {len(parts['block'])} layers are more than the "
                            f"{max_layers} layers allowed (NTK_MAX_LAYERS)")
        layers = parts["stem"] + parts["block"] * depth + parts["readout"]
    else:
        layers = parts["layers"]
    return _parse((), {"parameterization": values.get("parameterization", base.parameterization), "layers": layers})


def _layer(parameters: dict, layers_made: dict, path: tuple):
    """The layer of these parameters, made once."""
    key = repr(parameters)
    if key not in layers_made:
        try:
            layers_made[key] = LayerAdapter.validate_python(parameters)
        except ValidationError as error:
            raise _spec_error(path, error) from error
    return layers_made[key]


def _set(layers: list[dict], name: str, value) -> list[dict]:
    """Layer dicts with ``name`` set to ``value`` where it applies (inside Residual blocks too)."""
    out = []
    for layer in layers:
        if name == "activation" and layer["type"] in ACTIVATION_TYPES:
            if not _activation_name(value):
                raise SpecError(("activation",), f"must be one of {sorted(ACTIVATION_TYPES)}, by name or as a "
                                f"layer object, got {value!r}")
            layer = {"type": value} if isinstance(value, str) else dict(value)
        elif name in LAYER_TYPES[layer["type"]].model_fields and name != "type":
            layer = {**layer, name: value}
        if layer["type"] == "Residual":
            layer = {**layer, "layers": _set(layer["layers"], name, value),
                     "shortcut": None if layer["shortcut"] is None else _set(layer["shortcut"], name, value)}
        out.append(layer)
    return out


def _activation_name(value) -> str | None:
    """The activation type a grid value names ("Relu" or {"type": "Relu", ...}), or None."""
    name = value if isinstance(value, str) else value.get("type") if isinstance(value, Mapping) else None
    return name if name in ACTIVATION_TYPES else None
