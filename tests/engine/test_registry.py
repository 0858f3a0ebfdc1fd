"""The layer registry: every layer type has its spec model, shape rule, cost rule, kernel map and
finite module, and a table missing one is refused when it is completed (at import)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from ntk.engine.layers import LAYERS
from ntk.engine.networks import FINITE_MODULES
from ntk.spec.architecture import LAYER_REGISTRY, LAYER_TYPES, Dense, Layer, PerLayerType
from ntk.spec.cost import LAYER_WORK


def test_every_layer_type_has_a_model_shape_rule_cost_kernel_map_and_finite_module():
    for name, entry in LAYER_REGISTRY.items():
        assert entry.model.__name__ == name
        assert entry.model.model_fields["type"].annotation.__args__ == (name,)
        assert callable(entry.shape)
    assert set(Layer.__subclasses__()) == set(LAYER_TYPES.values()), "a layer model that is not registered"
    for table in (LAYER_WORK, LAYERS, FINITE_MODULES):
        assert list(table.complete()) and set(table) == set(LAYER_REGISTRY), table.concern


def test_a_table_missing_a_layer_type_or_naming_an_unknown_one_is_refused():
    table = PerLayerType("kernel map")
    table.of(Dense)(lambda layer, k, parameterization: k)
    with pytest.raises(TypeError, match="layer types without a kernel map: Conv, Relu, "):
        table.complete()
    with pytest.raises(TypeError, match="Dense has two kernel maps"):
        table.of(Dense)(lambda layer, k, parameterization: k)

    class Pool(BaseModel):
        pass

    with pytest.raises(TypeError, match="Pool is not a registered layer type"):
        table.of(Pool)(lambda layer, k, parameterization: k)
