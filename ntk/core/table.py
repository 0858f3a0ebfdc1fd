"""A sweep's answer as a table: its columns in order and one row per architecture.

The rows are ``ntk.engine.sweep.sweep``'s: the row key (a grid's values, or an architecture's
label), the metrics, and ``error``. The workers store the table as one JSON document inside the
job's result npz (``as_arrays``), so that a sweep's answer lives, expires and is found by identical
requests exactly as a kernel's does; the API answers it as JSON or CSV (``to_csv``), and so does
``ntk sweep`` on the command line.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np

TABLE = "table"  # the result npz's one array: the UTF-8 bytes of {"columns": [...], "rows": [...]}


def columns(rows: list[dict]) -> list[str]:
    """Every name the rows use, in the order they first appear (the row key's, then the metrics')."""
    return list(dict.fromkeys(name for row in rows for name in row))


def as_arrays(rows: list[dict]) -> dict[str, np.ndarray]:
    """The table as the arrays of a result npz. Floats keep every digit (JSON writes their repr)."""
    document = json.dumps({"columns": columns(rows), "rows": rows}, allow_nan=False)
    return {TABLE: np.frombuffer(document.encode(), dtype=np.uint8)}


def from_arrays(arrays: dict[str, np.ndarray]) -> dict:
    """``{"columns": [...], "rows": [...]}`` from ``as_arrays``'s arrays."""
    return json.loads(arrays[TABLE].tobytes())


def cell(value) -> str:
    """One CSV field: empty for None, a float's shortest exact form, JSON for a list or an object
    (an activation given as a layer object), the text of anything else."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return repr(value) if isinstance(value, float) else str(value)


def to_csv(columns: list[str], rows: list[dict]) -> str:
    """RFC 4180 CSV (CRLF line ends), a header line of the column names, then one line per row."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([cell(row.get(name)) for name in columns])
    return out.getvalue()
