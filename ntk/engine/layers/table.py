"""The kernel-map table: each spec layer type's kernel map by its name, attached where the map is
defined with ``@LAYERS.of(spec.Model)`` (ntk.spec.architecture.PerLayerType). Residual's, the
combinator, is in ``..combinators``, which checks that the table is complete."""

from ntk.spec.architecture import PerLayerType

LAYERS = PerLayerType("kernel map")

# The kernel maps that keep a block of points against themselves exactly symmetric (K = Kᵀ to the
# bit) on inputs without spatial axes: entrywise maps whose formula treats the pair's two
# variances alike (the affine maps; the rectifiers and Sign, through ``correlation_gap``). A sweep
# copies such a stack's symmetric blocks instead of symmetrizing each depth's (ntk.engine.sweep).
# Not the maps that give a pair of identical points one of the two points' variances (Erf, Gelu,
# Sin: ``keep_identical``), nor the quadrature's (Elementwise), nor those with spatial axes.
KEEPS_SYMMETRY = frozenset({"Dense", "Identity", "Relu", "LeakyRelu", "ABRelu", "Abs", "Sign"})
