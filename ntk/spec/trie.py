"""Architectures as tries of their shared layer prefixes: what a sweep computes once.

A sweep (ntk.engine.sweep) applies each node's layer once per block of points and hands its state
to every architecture continuing from it; the cost model prices the same trie
(ntk.spec.cost.sweep_block_works), and both check the architectures on it, one shape step per node.
Torch-free, so that the API can price and check a sweep before queueing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .architecture import Architecture, Walk, output_shape, step


@dataclass
class Node:
    """One layer applied after the path from the root; ``ends``: the architectures ending here."""

    layer: object = None
    children: dict[str, Node] = field(default_factory=dict)
    ends: list[int] = field(default_factory=list)
    size: int = 1  # nodes in the subtree, this one included


@dataclass
class Root:
    """Architectures sharing an input state (the same spatial tracking) and a parameterization."""

    sample: Architecture  # any of them: it says what the input state tracks
    node: Node = field(default_factory=Node)


def build_trie(architectures: Sequence[Architecture], keys: Sequence[list[str]] | None = None,
               spatial: bool = True) -> list[Root]:
    """The architectures' layer lists as tries of equal-layer prefixes, one per input kind;
    ``keys``: their ``layer_keys`` when already at hand. Without ``spatial`` axes in the inputs
    the input state is the same for every architecture (what it tracks between positions is moot)."""
    roots: dict[tuple, Root] = {}
    for index, arch in enumerate(architectures):
        kind = (arch.parameterization,)
        if spatial:
            kind += (arch.needs_full_spatial(), arch.covariances_need_full_spatial())
        node = roots.setdefault(kind, Root(arch)).node
        for layer, key in zip(arch.layers, layer_keys(arch) if keys is None else keys[index]):
            child = node.children.get(key)
            if child is None:
                child = node.children[key] = Node(layer)
            node = child
        node.ends.append(index)
    for root in roots.values():
        _count(root.node)
    return list(roots.values())


def _count(node: Node) -> int:
    """The subtree sizes, and each node's children reordered largest first: the order the sweep's
    ``walk`` pushes them in, so the last pushed, walked first, is the smallest."""
    node.size = 1 + sum(_count(child) for child in node.children.values())
    node.children = dict(sorted(node.children.items(), key=lambda item: -item[1].size))
    return node.size


def check_architectures(roots: list[Root], point_shape: tuple[int, ...]) -> None:
    """``Architecture.check`` of every architecture of the tries on points of ``point_shape``, each
    shared prefix walked once (a depth grid 1…D walks D blocks, not D²/2): raises the SpecError of
    the first layer that cannot run."""
    pending = [(child, Walk(point_shape), 0) for root in roots for child in root.node.children.values()]
    while pending:
        node, state, depth = pending.pop()
        state = step(node.layer, state, ("layers", depth))
        if node.ends:
            output_shape(state.shape)
        pending += [(child, state, depth + 1) for child in node.children.values()]


def layer_keys(arch: Architecture, made: dict[int, str] | None = None) -> list[str]:
    """Each layer as JSON, defaults filled in: equal layers give equal keys. ``made``: the keys of
    layer objects seen before, by id (``sweep_grid.expand`` makes equal layers one object)."""
    made = {} if made is None else made
    keys = []
    for layer in arch.layers:
        key = made.get(id(layer))
        if key is None:
            key = made[id(layer)] = layer.model_dump_json()
        keys.append(key)
    return keys
