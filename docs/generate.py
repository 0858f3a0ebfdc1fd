"""Regenerate the parts of docs/ that the code already says: the layer table (from the spec models),
the settings table (from ``Settings``) and the operations table (from the OpenAPI document).

    python3 docs/generate.py           # rewrite the generated blocks in place
    python3 docs/generate.py --check   # exit 1 if any is stale (tests/test_docs.py runs this)

A generated block sits between ``<!-- generated: NAME -->`` and ``<!-- end generated -->``; the text
around it is written by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.DOTALL)


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def _json_type(prop: dict) -> str:
    if "const" in prop:
        return f'"{prop["const"]}"'
    if "enum" in prop:
        return " / ".join(f'"{v}"' for v in prop["enum"])
    if "anyOf" in prop:
        return " or ".join(_json_type(p) for p in prop["anyOf"])
    if "$ref" in prop:
        return "layer"
    kind = prop.get("type", "any")
    if kind == "array":
        items = prop.get("items", {})
        low, high = prop.get("minItems", 0), prop.get("maxItems")
        count = "" if high is None or high > 8 else (f"{high} " if low == high else f"{low}–{high} ")
        return f"list of {count}{_json_type(items)}".replace("list of layer", "list of layers")
    bounds = [f"≥ {_number(prop['minimum'])}" if "minimum" in prop else "",
              f"≤ {_number(prop['maximum'])}" if "maximum" in prop else ""]
    bounds = ", ".join(b for b in bounds if b)
    return f"{kind} ({bounds})" if bounds else kind


def _number(value: float) -> str:
    return f"{int(value):,}".replace(",", " ") if float(value).is_integer() else f"{value:g}"


def layers() -> str:
    from ntk.spec.architecture import LAYER_TYPES, Architecture

    definitions = Architecture.model_json_schema()["$defs"]  # Residual refers to itself: read it from here
    rows = ["| type | parameters (default) | meaning |", "|---|---|---|"]
    for model in LAYER_TYPES.values():
        schema = definitions[model.__name__]
        required = set(schema.get("required", []))
        params = []
        for name, prop in schema["properties"].items():
            if name == "type":
                continue
            default = "required" if name in required else f"default `{json.dumps(prop.get('default'))}`"
            params.append(f"`{name}`: {_json_type(prop)}, {default}")
        rows.append(f"| `{model.__name__}` | {'<br>'.join(params) or '—'} | {_one_line(model.__doc__)} |")
    return "\n".join(rows) + "\n"


def settings() -> str:
    from ntk.core.settings import Settings

    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if field.default_factory is not None:
            shown = "from the machine"  # its description says how; the number differs per machine
        else:
            shown = "unset" if default is None else ("empty" if default == "" else f"`{default}`")
        rows.append(f"| `{Settings.env(name)}` | {shown} | {_one_line(field.description)} |")
    return "\n".join(rows) + "\n"


def operations() -> str:
    from ntk.api.app import create_app
    from ntk.core.settings import Settings

    document = create_app(Settings(redis_url="redis://127.0.0.1:1/0")).openapi()
    rows = ["| method | path | what | statuses |", "|---|---|---|---|"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            statuses = ", ".join(sorted(operation.get("responses", {})))
            what = (operation.get("description") or operation.get("summary", "")).split("\n\n")[0]
            rows.append(f"| {method.upper()} | `{path}` | {_one_line(what)} | {statuses} |")
    return "\n".join(rows) + "\n"


GENERATORS = {"layers": layers, "settings": settings, "operations": operations}


def regenerate(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + GENERATORS[m.group("name")]() + m.group(4), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale blocks instead of rewriting them")
    args = parser.parse_args(argv)
    stale = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text()
        fresh = regenerate(text)
        if fresh != text:
            stale.append(page.relative_to(ROOT))
            if not args.check:
                page.write_text(fresh)
    if args.check and stale:
        print("stale generated blocks in: " + ", ".join(map(str, stale)) + "; run python3 docs/generate.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
