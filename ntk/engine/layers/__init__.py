"""The layer table: one kernel map per spec layer type.

Every entry is a pure function ``(layer_spec, state, parameterization) -> state`` with its formula
in the docstring. Residual, which runs sub-stacks, is the combinator in ``..combinators``.
"""

from . import elementwise, linear

LAYERS = {
    "Dense": linear.dense,
    "Conv": linear.conv,
    "AvgPool": linear.avg_pool,
    "GlobalAvgPool": linear.global_avg_pool,
    "Flatten": linear.flatten,
    "LayerNorm": linear.layer_norm,
    "Identity": linear.identity,
    "Relu": elementwise.relu,
    "LeakyRelu": elementwise.leaky_relu,
    "ABRelu": elementwise.ab_relu,
    "Abs": elementwise.abs_,
    "Sign": elementwise.sign,
    "Erf": elementwise.erf,
    "Gelu": elementwise.gelu,
    "Sin": elementwise.sin,
    "Elementwise": elementwise.elementwise_numerical,
}
