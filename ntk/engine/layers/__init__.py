"""The kernel maps: one per spec layer type, in the table ``LAYERS`` (by type name).

Every map is a pure function ``(layer_spec, state, parameterization) -> state`` with its formula
in the docstring, attached to the table where it is defined (``.table``). Residual, which runs
sub-stacks, is the combinator in ``..combinators``.
"""

from . import elementwise, linear  # noqa: F401  (importing them attaches their maps)
from .table import KEEPS_SYMMETRY, LAYERS

__all__ = ["KEEPS_SYMMETRY", "LAYERS"]
