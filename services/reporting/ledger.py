"""The rectification ledger (整改台账, contract section 8), pure: the item, reading CSV and XLSX files into items or
one precise refusal, the `recurring` rule, the completion rate and the CSV export. No I/O here."""

from __future__ import annotations

import csv
import io
import json
import re
import string
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.domain import LOCAL_TZ

MAX_ITEMS: Final = 10_000
"""Items in one import; a ledger holds hundreds, so more is a wrong file."""
MAX_XLSX_UNPACKED: Final = 64 * 1024 * 1024
"""Bytes an XLSX body may unpack to: a small zip that inflates to gigabytes is refused before it is read."""

FIELDS: Final = (
    "item_id",
    "source",
    "area",
    "problem",
    "measures",
    "departments",
    "due_date",
    "status",
    "closed_at",
    "evidence",
    "approved_by",
)
EXPORT_FIELDS: Final = (*FIELDS[:8], "recurring", *FIELDS[8:])
REQUIRED_COLUMNS: Final = ("item_id", "source", "area", "problem", "departments", "due_date")
_IGNORED_COLUMNS: Final = frozenset({"recurring"})  # our own export's computed column: read back, never stored
_DEPARTMENT_SEPARATORS: Final = re.compile(r"[;；、]")
_YEAR: Final = re.compile(r"[0-9]{4}")
_ASCII_PUNCTUATION: Final = frozenset(string.punctuation)
_LOOSE_DATE: Final = re.compile(r"^([0-9]{4})\s*[-/.年]\s*([0-9]{1,2})\s*[-/.月]\s*([0-9]{1,2})\s*日?$")


class ItemStatus(StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    CLOSED = "closed"


def _clean_text(value: str) -> str:
    # PostgreSQL text takes neither NUL nor a lone surrogate: refused here with a reason, not by the driver as a 500.
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains an unpaired surrogate, which is not text") from None
    return value.strip()


class LedgerItem(BaseModel):
    """One rectification item (整改事项) of an assessment's feedback report."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    item_id: str = Field(min_length=1, max_length=100, description="The item's identifier, unique in the ledger.")
    source: str = Field(
        min_length=1, max_length=200, description="Where it came from; its first four digits are the year."
    )
    area: str = Field(min_length=1, max_length=200, description="The assessment area (评价领域).")
    problem: str = Field(min_length=1, max_length=4000, description="The problem found (问题).")
    measures: str = Field(default="", max_length=8000, description="The rectification measures (整改措施).")
    departments: list[str] = Field(min_length=1, max_length=50, description="The departments responsible.")
    due_date: date = Field(description="The deadline (完成时限), a local date.")
    status: ItemStatus = Field(default=ItemStatus.OPEN, description="open, in_progress or closed (销号).")
    closed_at: datetime | None = Field(default=None, description="When it was closed; only on a closed item.")
    evidence: str | None = Field(default=None, max_length=8000, description="The evidence of closing (佐证材料).")
    approved_by: str | None = Field(default=None, max_length=200, description="The department that approved it.")

    @field_validator("item_id", "source", "area", "problem", "measures", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return _clean_text(value) if isinstance(value, str) else value

    @field_validator("evidence", "approved_by", mode="before")
    @classmethod
    def _optional_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _clean_text(value) or None
        return value

    @field_validator("departments", mode="before")
    @classmethod
    def _departments(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = _DEPARTMENT_SEPARATORS.split(value)
        if isinstance(value, list):
            found: list[str] = []
            for part in value:
                if not isinstance(part, str):
                    return value  # pydantic says what is wrong with it
                name = _clean_text(part)
                if name and name not in found:
                    found.append(name)
            return found
        return value

    @field_validator("due_date", mode="before")
    @classmethod
    def _due_date(cls, value: Any) -> Any:
        # Spreadsheets write dates as 2025/12/31 or 2025年12月31日 as often as 2025-12-31.
        if isinstance(value, str):
            found = _LOOSE_DATE.match(value.strip())
            if found:
                year, month, day = (int(g) for g in found.groups())
                try:
                    return date(year, month, day)
                except ValueError as exc:
                    raise ValueError(f"{value.strip()!r} is not a date: {exc}") from None
        return value

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("closed_at")
    @classmethod
    def _closed_at(cls, value: datetime | None) -> datetime | None:
        # A time without an offset is the city's local time (contract: Asia/Shanghai).
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=LOCAL_TZ)
        return value

    @model_validator(mode="after")
    def _closing(self) -> LedgerItem:
        if self.status is ItemStatus.CLOSED:
            missing = [name for name in ("evidence", "approved_by") if getattr(self, name) is None]
            if missing:
                raise ValueError(f"a closed item needs {' and '.join(missing)} (销号 needs evidence and approval)")
        else:
            given = [name for name in ("closed_at", "evidence", "approved_by") if getattr(self, name) is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)} given but status is {self.status.value}: only a closed item has them"
                )
        return self


class CloseRequest(BaseModel):
    """Closing an item (销号): the evidence and the approving department."""

    model_config = ConfigDict(extra="ignore")

    evidence: str = Field(min_length=1, max_length=8000, description="The evidence of the rectification.")
    approved_by: str = Field(min_length=1, max_length=200, description="The department that approves closing.")

    @field_validator("evidence", "approved_by", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return _clean_text(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class LedgerImportError(Exception):
    """A refused import: the line of the file (header = 1; for JSON, the item's position from 1) and why."""

    row: int | None
    reason: str

    def __str__(self) -> str:
        return f"line {self.row}: {self.reason}" if self.row is not None else self.reason


# --- reading --------------------------------------------------------------------------------------------------


def describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _item_of(fields: Mapping[str, Any], row: int) -> LedgerItem:
    try:
        return LedgerItem.model_validate(fields)
    except ValidationError as exc:
        raise LedgerImportError(row, describe(exc)) from None


def _collect(rows: Iterable[tuple[int, Mapping[str, Any]]]) -> list[LedgerItem]:
    items: list[LedgerItem] = []
    seen: dict[str, int] = {}
    for row, fields in rows:
        item = _item_of(fields, row)
        if item.item_id in seen:
            raise LedgerImportError(row, f"item_id {item.item_id!r} appears already at line {seen[item.item_id]}")
        seen[item.item_id] = row
        items.append(item)
        if len(items) > MAX_ITEMS:
            raise LedgerImportError(row, f"more than {MAX_ITEMS} items in one import")
    return items


def _header(cells: Sequence[Any]) -> dict[int, str]:
    """Column index → field; refuses a header that lacks a required field or names one twice."""
    columns: dict[int, str] = {}
    for index, cell in enumerate(cells):
        name = str(cell).strip().lstrip("\ufeff").lower() if cell is not None else ""
        if not name or name in _IGNORED_COLUMNS or name not in FIELDS:
            continue  # other columns (序号, notes) are the bureau's own and are left alone
        if name in columns.values():
            raise LedgerImportError(1, f"the header names {name!r} twice")
        columns[index] = name
    missing = [f for f in REQUIRED_COLUMNS if f not in columns.values()]
    if missing:
        raise LedgerImportError(1, f"the header lacks {', '.join(missing)}; it names the fields: {', '.join(FIELDS)}")
    return columns


def _cell(value: Any) -> Any:
    """An XLSX cell as the item wants it: numbers that are whole as text without `.0`, dates as dates."""
    if isinstance(value, datetime):
        return value.date() if value.time() == datetime.min.time() and value.tzinfo is None else value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return value


def _row_fields(columns: Mapping[int, str], cells: Sequence[Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for index, name in columns.items():
        value = _cell(cells[index]) if index < len(cells) else None
        if isinstance(value, str) and not value.strip() and name not in REQUIRED_COLUMNS:
            value = None
        if value is not None:
            fields[name] = value
    return fields


def _blank(cells: Sequence[Any]) -> bool:
    return all(c is None or (isinstance(c, str) and not c.strip()) for c in cells)


def parse_csv(data: bytes) -> list[LedgerItem]:
    """A CSV file (UTF-8, with or without a byte order mark) whose first line names the fields."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise LedgerImportError(line, "not UTF-8 text: save the file as CSV UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)

    def rows() -> Iterator[tuple[int, list[str]]]:
        # A quoted cell may run over several lines: a record is named by the line it starts on.
        start = 1
        try:
            for record in reader:
                yield start, record
                start = reader.line_num + 1
        except csv.Error as exc:
            raise LedgerImportError(start, f"not valid CSV: {exc}") from None

    records = rows()
    for line, cells in records:
        if _blank(cells):
            continue
        if line != 1:
            raise LedgerImportError(1, "the first line must be the header naming the fields")
        columns = _header(cells)
        break
    else:
        raise LedgerImportError(1, "the file is empty: it needs a header line and items")
    items = _collect((line, _row_fields(columns, cells)) for line, cells in records if not _blank(cells))
    if not items:
        raise LedgerImportError(2, "the file has a header but no items")
    return items


def parse_xlsx(data: bytes) -> list[LedgerItem]:
    """The first sheet of an XLSX workbook whose row 1 names the fields; `row` is the sheet's row number."""
    from openpyxl import load_workbook  # lazy: only an XLSX import pays for openpyxl's import

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        raise LedgerImportError(None, "not an XLSX workbook (the body is not a zip archive)") from None
    if unpacked > MAX_XLSX_UNPACKED:
        raise LedgerImportError(None, f"the workbook unpacks to {unpacked} bytes, over {MAX_XLSX_UNPACKED}")
    try:
        book = load_workbook(io.BytesIO(data), read_only=False, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds for a damaged file; each is a refusal
        raise LedgerImportError(None, f"not a readable XLSX workbook: {type(exc).__name__}: {exc}") from None
    try:
        sheet = book.worksheets[0]
        rows = [(number, list(cells)) for number, cells in enumerate(sheet.iter_rows(values_only=True), 1)]
    finally:
        book.close()
    if not rows or _blank(rows[0][1]):
        raise LedgerImportError(1, "row 1 of the first sheet must be the header naming the fields")
    columns = _header(rows[0][1])
    items = _collect((number, _row_fields(columns, cells)) for number, cells in rows[1:] if not _blank(cells))
    if not items:
        raise LedgerImportError(2, "the sheet has a header but no items")
    return items


def parse_json(data: bytes) -> list[LedgerItem]:
    """One item as a JSON object, or `{"items": [...]}`; `row` is then the item's position from 1."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise LedgerImportError(None, f"not valid JSON: {exc}") from None
    if isinstance(body, dict) and "items" in body and "item_id" not in body:
        entries = body["items"]
        if not isinstance(entries, list):
            raise LedgerImportError(None, "`items` must be a list of items")
    elif isinstance(body, dict):
        entries = [body]
    else:
        raise LedgerImportError(None, 'the body must be an item or {"items": [...]}')
    for position, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise LedgerImportError(position, "an item must be a JSON object")
    items = _collect(enumerate(entries, 1))
    if not items:
        raise LedgerImportError(None, "no items to import")
    return items


XLSX_TYPE: Final = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def file_kind(content_type: str | None, data: bytes, name: str | None = None) -> str | None:
    """`json`, `csv` or `xlsx` from a content type or a file name, else from the first bytes; None if unknown."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return "json"
    if media in ("text/csv", "application/csv"):
        return "csv"
    if media == XLSX_TYPE:
        return "xlsx"
    suffix = (name or "").lower().rsplit(".", 1)[-1] if name and "." in name else ""
    if suffix in ("csv", "xlsx", "json"):
        return suffix
    if data.startswith(b"PK\x03\x04"):
        return "xlsx"
    return None


def parse_file(kind: str, data: bytes) -> list[LedgerItem]:
    parsers = {"csv": parse_csv, "xlsx": parse_xlsx, "json": parse_json}
    return parsers[kind](data)


# --- rules ----------------------------------------------------------------------------------------------------


def source_year(source: str) -> int | None:
    """The year of a source: its first four consecutive digits (`2025 自治区营商环境评估反馈` → 2025)."""
    found = _YEAR.search(source)
    return int(found.group()) if found else None


def comparable(text: str) -> str:
    """Text with spaces and punctuation set aside, Chinese and ASCII alike (full-width forms folded first)."""
    folded = unicodedata.normalize("NFKC", text)
    return "".join(
        ch
        for ch in folded
        if not (
            ch.isspace()
            or ch in _ASCII_PUNCTUATION
            or unicodedata.category(ch)[0] in ("P", "Z")
            or unicodedata.category(ch) in ("Cc", "Cf")
        )
    )


def recurrence_key(item: LedgerItem) -> tuple[int, str, str] | None:
    year = source_year(item.source)
    return None if year is None else (year, comparable(item.area), comparable(item.problem))


def recurring_flags(items: Sequence[LedgerItem], candidates: Iterable[LedgerItem]) -> list[bool]:
    """For each item, whether an item of the previous year's source has the same area and problem (contract 8).

    `candidates` are the items that may be the earlier ones (at least those of each item's previous year)."""
    earlier = {key for key in map(recurrence_key, candidates) if key is not None}
    flags = []
    for item in items:
        key = recurrence_key(item)
        flags.append(key is not None and (key[0] - 1, key[1], key[2]) in earlier)
    return flags


def previous_years(items: Iterable[LedgerItem]) -> list[int]:
    """The years whose items may make these recurring."""
    return sorted({year - 1 for year in (source_year(i.source) for i in items) if year is not None})


def rate(part: int, whole: int) -> float | None:
    """`part / whole` rounded half up to 4 decimals, None when `whole` is 0 (as the rates of 7.1)."""
    if whole == 0:
        return None
    return float((Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


def completion(items: Sequence[LedgerItem]) -> tuple[int, int, float | None]:
    """Total, closed and the completion rate (closed / all)."""
    closed = sum(1 for i in items if i.status is ItemStatus.CLOSED)
    return len(items), closed, rate(closed, len(items))


def settle_closed_at(item: LedgerItem, stored_closed_at: datetime | None, now: datetime) -> datetime | None:
    """When an imported item was closed: as the file says; else as stored, if it was closed already; else now."""
    if item.status is not ItemStatus.CLOSED:
        return None
    return item.closed_at or stored_closed_at or now


def close_item(item: LedgerItem, request: CloseRequest, now: datetime) -> LedgerItem:
    """销号: the item closed now with its evidence and approval. Refuses an item closed already."""
    if item.status is ItemStatus.CLOSED:
        raise ValueError(f"item {item.item_id} is closed already")
    return item.model_copy(
        update={
            "status": ItemStatus.CLOSED,
            "closed_at": now,
            "evidence": request.evidence,
            "approved_by": request.approved_by,
        }
    )


# --- answers --------------------------------------------------------------------------------------------------


def rfc3339_utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def item_view(item: LedgerItem, recurring: bool) -> dict[str, Any]:
    """An item as the API answers it: the fields, `recurring`, and (null until closed) the closing."""
    return {
        "item_id": item.item_id,
        "source": item.source,
        "area": item.area,
        "problem": item.problem,
        "measures": item.measures,
        "departments": list(item.departments),
        "due_date": item.due_date.isoformat(),
        "status": item.status.value,
        "recurring": recurring,
        "closed_at": rfc3339_utc(item.closed_at) if item.closed_at else None,
        "evidence": item.evidence,
        "approved_by": item.approved_by,
    }


def to_csv(items: Sequence[LedgerItem], flags: Sequence[bool]) -> bytes:
    """The ledger as CSV for spreadsheets: UTF-8 with a byte order mark, CRLF line ends (RFC 4180), a header of the
    field names (so the file imports again as it is), departments joined with `、`, empty cells for null."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(EXPORT_FIELDS)
    for item, recurring in zip(items, flags, strict=True):
        view = item_view(item, recurring)
        view["departments"] = "、".join(item.departments)
        view["recurring"] = "true" if recurring else "false"
        writer.writerow(["" if view[f] is None else view[f] for f in EXPORT_FIELDS])
    return b"\xef\xbb\xbf" + out.getvalue().encode("utf-8")
