"""Write the JSON Schemas of the wire contracts into ``schemas/``: ``python -m shared.schema_export``
(``--check`` exits 1 when a committed file is stale instead of writing)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from shared.events import CallEvent, EventMessage
from shared.snapshot import TenantSnapshot

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"
CONTRACTS: dict[str, Any] = {
    "tenant-snapshot.schema.json": TenantSnapshot,
    "call-event.schema.json": CallEvent,
    "call-event-message.schema.json": EventMessage,
}


def render(struct: Any) -> str:
    schema: dict[str, Any] = msgspec.json.schema(struct)
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def rendered() -> dict[str, str]:
    return {name: render(struct) for name, struct in CONTRACTS.items()}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    stale: list[str] = []
    for name, text in rendered().items():
        path = SCHEMAS_DIR / name
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        if check:
            stale.append(name)
        else:
            SCHEMAS_DIR.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}; run python -m shared.schema_export", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
