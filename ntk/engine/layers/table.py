"""The kernel-map table: each spec layer type's kernel map by its name, attached where the map is
defined with ``@LAYERS.of(spec.Model)`` (ntk.spec.architecture.PerLayerType). Residual's, the
combinator, is in ``..combinators``, which checks that the table is complete."""

from ntk.spec.architecture import PerLayerType

LAYERS = PerLayerType("kernel map")
