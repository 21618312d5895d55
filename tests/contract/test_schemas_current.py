"""The committed JSON Schemas under schemas/ match the contracts in shared/."""

from __future__ import annotations

from shared.schema_export import SCHEMAS_DIR, rendered


def test_committed_schemas_match_the_contracts() -> None:
    for name, text in rendered().items():
        path = SCHEMAS_DIR / name
        assert path.is_file(), f"{name} missing: run python -m shared.schema_export"
        assert path.read_text(encoding="utf-8") == text, (
            f"{name} is stale: run python -m shared.schema_export"
        )
