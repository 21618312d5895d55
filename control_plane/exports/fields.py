"""What can be exported: the fields of each export type (the list routes' item shapes) and how each is
rendered in SQL, plain or anonymised."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Integer, Table

from control_plane.calls.schemas import CallRecordRead
from control_plane.cdr.schemas import CdrRead
from control_plane.db.models import CallRecord, Cdr
from control_plane.errors import FieldError


class ExportType(StrEnum):
    CALL_RECORDS = "call_records"
    CDR = "cdr"


class ExportFormat(StrEnum):
    CSV = "csv"
    JSON = "json"
    NDJSON = "ndjson"


MEDIA_TYPES = {
    ExportFormat.CSV: "text/csv; charset=utf-8",
    ExportFormat.JSON: "application/json",
    ExportFormat.NDJSON: "application/x-ndjson",
}
# The download's base name: call-records-2026-12-01.csv
FILE_STEMS = {ExportType.CALL_RECORDS: "call-records", ExportType.CDR: "cdr"}

PHONE_FIELDS = frozenset({"from_number", "to_number"})
PERSONAL_FIELDS = frozenset({"caller_name"})

# RFC 3339 in UTC ("2026-12-01T16:13:09.5+00:00"): PostgreSQL's own ISO output with the export's
# session in UTC (query.SESSION_SQL), a "T" and the offset's minutes. Half the cost of to_char (~0.3
# against ~0.7 µs a value here), which matters at five timestamps a row.
TIMESTAMP_SQL = "replace({c}::text, ' ', 'T') || ':00'"
# All but the last four characters masked; a value of four or fewer is masked whole (it would
# otherwise be shown in full). NULL stays NULL.
MASK_SQL = (
    "CASE WHEN length({c}) > 4 THEN repeat('*', length({c}) - 4) || right({c}, 4) "
    "ELSE repeat('*', length({c})) END"
)


@dataclass(frozen=True, slots=True)
class ExportField:
    name: str
    kind: Literal["int", "text", "timestamp"]

    def value_sql(self, anonymize: bool) -> str:
        """The field's value as SQL over its table's column (text or an integer)."""
        if anonymize and self.name in PERSONAL_FIELDS:
            return "NULL::text"
        if anonymize and self.name in PHONE_FIELDS:
            return MASK_SQL.format(c=self.name)
        if self.kind == "timestamp":
            return TIMESTAMP_SQL.format(c=self.name)
        return self.name

    def json_sql(self, anonymize: bool) -> str:
        """The field's value as JSON text (``null`` when NULL)."""
        value = self.value_sql(anonymize)
        if self.kind == "int":
            return f"coalesce(({value})::text, 'null')"
        if self.kind == "timestamp":  # digits, signs, dots and colons: nothing to escape
            return f"coalesce('\"' || {value} || '\"', 'null')"
        return f"coalesce(to_json({value})::text, 'null')"


def _fields(struct: Any, table: Table) -> tuple[ExportField, ...]:
    """The list item's fields, typed by the table's columns."""
    out = []
    for name in struct.__struct_fields__:
        column_type = table.c[name].type
        if isinstance(column_type, Integer):
            kind: Literal["int", "text", "timestamp"] = "int"
        elif isinstance(column_type, DateTimeUTC):
            kind = "timestamp"
        else:
            kind = "text"
        out.append(ExportField(name, kind))
    return tuple(out)


TABLES: dict[ExportType, Table] = {
    ExportType.CALL_RECORDS: CallRecord.__table__,  # type: ignore[dict-item]
    ExportType.CDR: Cdr.__table__,  # type: ignore[dict-item]
}
CATALOGUE: dict[ExportType, tuple[ExportField, ...]] = {
    ExportType.CALL_RECORDS: _fields(CallRecordRead, TABLES[ExportType.CALL_RECORDS]),
    ExportType.CDR: _fields(CdrRead, TABLES[ExportType.CDR]),
}


def select_fields(kind: ExportType, names: list[str] | str | None) -> tuple[ExportField, ...]:
    """The fields asked for, in the order asked (``a,b,c`` or a list; none = all); an unknown or repeated
    name is a 422 naming ``fields``."""
    catalogue = CATALOGUE[kind]
    if names is None or (isinstance(names, str) and not names.strip()):
        return catalogue
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
    by_name = {f.name: f for f in catalogue}
    unknown = [n for n in wanted if n not in by_name]
    if unknown or not wanted:
        allowed = ", ".join(by_name)
        shown = ", ".join(repr(n[:40]) for n in unknown[:5]) or "none"
        raise FieldError(("fields", f"unknown field(s) {shown}; choose from {allowed}"))
    if len(set(wanted)) != len(wanted):
        raise FieldError(("fields", "a field is named twice"))
    return tuple(by_name[n] for n in wanted)
