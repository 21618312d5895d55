"""Write the control plane's OpenAPI 3.1 document to ``schemas/control-plane.openapi.json``:
``python -m control_plane.openapi_export`` (``--check`` exits 1 when the committed file is stale
instead of writing). The document is what ``GET /schema/openapi.json`` serves, with sorted keys."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import msgspec

from control_plane.app import create_app

OPENAPI_FILE = Path(__file__).resolve().parent.parent / "schemas" / "control-plane.openapi.json"


def render() -> str:
    # Defaults in the document may be Structs or enums (e.g. a default RetentionDays()): plain JSON first.
    schema = msgspec.to_builtins(create_app().openapi_schema.to_schema())
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    current = OPENAPI_FILE.read_text(encoding="utf-8") if OPENAPI_FILE.is_file() else None
    if current == text:
        return 0
    if "--check" in args:
        print(f"stale: {OPENAPI_FILE.name}; run python -m control_plane.openapi_export", file=sys.stderr)
        return 1
    OPENAPI_FILE.parent.mkdir(exist_ok=True)
    OPENAPI_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {OPENAPI_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
