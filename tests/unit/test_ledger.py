"""The ledger's pure rules (contract 8): parsing CSV, XLSX and JSON with line numbers, recurring, completion, export."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime

import openpyxl
import pytest

from services.reporting.ledger import (
    EXPORT_FIELDS,
    CloseRequest,
    ItemStatus,
    LedgerImportError,
    LedgerItem,
    close_item,
    comparable,
    completion,
    file_kind,
    item_view,
    parse_csv,
    parse_json,
    parse_xlsx,
    rate,
    recurring_flags,
    settle_closed_at,
    source_year,
    to_csv,
)

HEADER = "item_id,source,area,problem,measures,departments,due_date,status,closed_at,evidence,approved_by"
NOW = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def item(item_id: str = "A1", **fields: object) -> LedgerItem:
    base: dict[str, object] = {
        "item_id": item_id,
        "source": "2025 自治区营商环境评估反馈",
        "area": "政务服务",
        "problem": "审批时限过长",
        "measures": "压缩时限",
        "departments": ["fgw"],
        "due_date": "2025-12-31",
    }
    base.update(fields)
    return LedgerItem.model_validate(base)


def ledger_rows(n: int, closed: int, year: int = 2025) -> list[list[str]]:
    rows = []
    for i in range(1, n + 1):
        done = i <= closed
        rows.append(
            [
                f"ZG-{year}-{i:03d}",
                f"{year} 自治区营商环境评估反馈",
                "政务服务" if i % 2 else "市场监管",
                f"问题{i}",
                f"措施{i}",
                "fgw;zwfw" if i % 3 else "sw、scjg",
                f"{year}-12-31",
                "closed" if done else ("in_progress" if i % 2 else "open"),
                "",
                "已完成整改" if done else "",
                "fgw" if done else "",
            ]
        )
    return rows


def csv_bytes(rows: list[list[str]], *, bom: bool = True, header: str = HEADER) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    out.write(header + "\r\n")
    writer.writerows(rows)
    return (b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode("utf-8")


# --- parsing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bom", [True, False])
def test_a_csv_of_48_items_with_33_closed_completes_0_6875(bom: bool) -> None:
    items = parse_csv(csv_bytes(ledger_rows(48, 33), bom=bom))
    assert len(items) == 48
    assert completion(items) == (48, 33, 0.6875)
    assert items[0].item_id == "ZG-2025-001"
    assert items[0].departments == ["fgw", "zwfw"]
    assert items[2].departments == ["sw", "scjg"]
    assert items[0].status is ItemStatus.CLOSED
    assert items[0].evidence == "已完成整改"
    assert items[41].status is ItemStatus.OPEN
    assert items[40].status is ItemStatus.IN_PROGRESS
    assert items[40].evidence is None


def test_departments_split_on_semicolons_and_the_chinese_enumeration_comma() -> None:
    assert item(departments="fgw; zwfw、sw；scjg、fgw").departments == ["fgw", "zwfw", "sw", "scjg"]


def test_columns_in_any_order_with_extra_columns_left_alone() -> None:
    data = "序号,due_date,departments,problem,area,source,item_id\n1,2025/6/30,fgw,问题,领域,2025 评估,X1\n".encode()
    (only,) = parse_csv(data)
    assert only.item_id == "X1"
    assert only.due_date == date(2025, 6, 30)
    assert only.status is ItemStatus.OPEN
    assert only.measures == ""


@pytest.mark.parametrize(
    ("data", "line", "reason"),
    [
        (
            csv_bytes([*ledger_rows(3, 0)[:2], ["ZG-9", "2025 x", "a", "p", "", "fgw", "2025-13-01", "open"]]),
            4,
            "due_date",
        ),
        (csv_bytes([*ledger_rows(2, 0), ["ZG-9", "2025 x", "a", "p", "", "fgw", "2025-12-01", "done"]]), 4, "status"),
        (csv_bytes([["ZG-9", "2025 x", "", "p", "", "fgw", "2025-12-01", "open"]]), 2, "area"),
        (csv_bytes([["ZG-9", "2025 x", "a", "p", "", " ; 、", "2025-12-01", "open"]]), 2, "departments"),
        (csv_bytes([["ZG-9", "2025 x", "a", "p", "", "fgw", "2025-12-01", "closed", "", "", "fgw"]]), 2, "evidence"),
        (csv_bytes([["ZG-9", "2025 x", "a", "p", "", "fgw", "2025-12-01", "open", "", "证据", ""]]), 2, "evidence"),
        (csv_bytes([ledger_rows(1, 0)[0], ledger_rows(1, 0)[0]]), 3, "appears already at line 2"),
        (csv_bytes([["ZG-9", "2025 x", "a", "p\x00", "", "fgw", "2025-12-01", "open"]]), 2, "NUL"),
        (csv_bytes([], header=HEADER), 2, "no items"),
        (csv_bytes([["x"]], header="item_id,source,area,problem"), 1, "lacks departments, due_date"),
        (csv_bytes([["x"]], header="item_id,item_id,source,area,problem,departments,due_date"), 1, "twice"),
        (b"", 1, "empty"),
        (HEADER.encode() + b"\nZG-1,2025 \xff,a,p,,fgw,2025-01-01,open\n", 2, "UTF-8"),
    ],
)
def test_a_bad_row_is_refused_with_its_line_and_reason(data: bytes, line: int, reason: str) -> None:
    with pytest.raises(LedgerImportError) as refused:
        parse_csv(data)
    assert refused.value.row == line
    assert reason in refused.value.reason


def test_a_cell_over_several_lines_moves_the_line_numbers_of_what_follows() -> None:
    rows = [
        ["A1", "2025 x", "a", "第一行\n第二行\n第三行", "", "fgw", "2025-12-01", "open"],
        ["A2", "2025 x", "a", "p", "", "fgw", "2025-12-32", "open"],
    ]
    with pytest.raises(LedgerImportError) as refused:
        parse_csv(csv_bytes(rows))
    assert refused.value.row == 5  # header 1, A1 on lines 2-4, A2 on line 5


def test_blank_lines_are_skipped_but_counted() -> None:
    data = (HEADER + "\r\n\r\nA1,2025 x,a,p,,fgw,2025-12-01,open\r\n\r\nA2,2025 x,a,p,,fgw,bad,open\r\n").encode()
    with pytest.raises(LedgerImportError) as refused:
        parse_csv(data)
    assert refused.value.row == 5  # header 1, blank 2, A1 3, blank 4, A2 5


def test_the_header_must_be_line_1() -> None:
    with pytest.raises(LedgerImportError) as refused:
        parse_csv(b"\n" + HEADER.encode() + b"\nA1,2025 x,a,p,,fgw,2025-12-01,open\n")
    assert refused.value.row == 1


def test_json_one_item_or_a_list_with_the_position_as_row() -> None:
    one = item().model_dump(mode="json")
    assert [i.item_id for i in parse_json(json.dumps(one).encode())] == ["A1"]
    two = {"items": [one, {**one, "item_id": "A2", "due_date": "never"}]}
    with pytest.raises(LedgerImportError) as refused:
        parse_json(json.dumps(two).encode())
    assert refused.value.row == 2
    assert "due_date" in refused.value.reason
    assert len(parse_json(json.dumps({"items": [one], "note": "x"}).encode())) == 1
    with pytest.raises(LedgerImportError, match="not valid JSON"):
        parse_json(b"{")
    with pytest.raises(LedgerImportError, match="no items"):
        parse_json(b'{"items": []}')


def test_text_that_postgresql_cannot_store_is_refused_not_crashed_on() -> None:
    with pytest.raises(LedgerImportError, match="surrogate"):
        parse_json(json.dumps({**item().model_dump(mode="json"), "problem": "\ud800"}).encode())


def test_file_kind_from_content_type_name_or_first_bytes() -> None:
    assert file_kind("application/json; charset=utf-8", b"{}") == "json"
    assert file_kind("text/csv", b"a,b") == "csv"
    assert file_kind("application/octet-stream", b"PK\x03\x04rest") == "xlsx"
    assert file_kind(None, b"a,b", "台账.CSV") == "csv"
    assert file_kind("text/plain", b"a,b") is None


# --- XLSX ---------------------------------------------------------------------------------------------------


def workbook(rows: list[list[object]], header: list[str] | None = None) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(header or HEADER.split(","))
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_an_xlsx_round_trips_through_openpyxl() -> None:
    original = parse_csv(csv_bytes(ledger_rows(48, 33)))
    rows: list[list[object]] = [
        [
            i.item_id,
            i.source,
            i.area,
            i.problem,
            i.measures,
            "、".join(i.departments),
            i.due_date,  # a real date cell, as a spreadsheet program writes it
            i.status.value,
            None,
            i.evidence,
            i.approved_by,
        ]
        for i in original
    ]
    assert parse_xlsx(workbook(rows)) == original


def test_xlsx_numbers_and_dates_as_cells() -> None:
    rows: list[list[object]] = [[101, "2025 x", "a", "p", None, "fgw", datetime(2025, 12, 31), "open"]]
    (only,) = parse_xlsx(workbook(rows, HEADER.split(",")[:8]))
    assert only.item_id == "101"
    assert only.due_date == date(2025, 12, 31)


def test_an_xlsx_bad_row_names_its_sheet_row() -> None:
    rows: list[list[object]] = [
        ["A1", "2025 x", "a", "p", None, "fgw", date(2025, 1, 1), "open"],
        [None] * 8,
        ["A2", "2025 x", "a", "p", None, "fgw", date(2025, 1, 1), "half-done"],
    ]
    with pytest.raises(LedgerImportError) as refused:
        parse_xlsx(workbook(rows, HEADER.split(",")[:8]))
    assert refused.value.row == 4
    assert "status" in refused.value.reason


def test_not_a_workbook_is_refused() -> None:
    with pytest.raises(LedgerImportError, match="not an XLSX"):
        parse_xlsx(b"PK\x03\x04 but not a zip")


# --- recurring ----------------------------------------------------------------------------------------------


def test_source_year_is_its_first_four_digits() -> None:
    assert source_year("2025 自治区营商环境评估反馈") == 2025
    assert source_year("自治区2024年度营商环境评估") == 2024
    assert source_year("自治区评估") is None


@pytest.mark.parametrize(
    "variant",
    [
        "审批时限过长",
        "审批 时限 过长。",
        "审批时限，过长！",
        "“审批时限”过长",
        "审批时限过长.",
        "审批-时限(过长)",
        "审批\u3000时限过长；",
        " 审批时限过长 ",
    ],
)
def test_recurring_sets_spaces_and_punctuation_aside(variant: str) -> None:
    last_year = item("Z24", source="2024 自治区营商环境评估反馈", problem=variant, area="政务 服务")
    this_year = item("Z25", source="2025 自治区营商环境评估反馈", problem="审批时限过长")
    assert recurring_flags([this_year], [last_year]) == [True]


@pytest.mark.parametrize(
    ("earlier", "why"),
    [
        ({"source": "2023 自治区评估"}, "two years before, not the previous year"),
        ({"source": "2025 国家评估"}, "the same year"),
        ({"source": "2026 自治区评估"}, "the year after"),
        ({"area": "市场监管"}, "another area"),
        ({"problem": "审批时限太长"}, "another problem"),
        ({"source": "自治区评估"}, "a source without a year"),
    ],
)
def test_not_recurring(earlier: dict[str, str], why: str) -> None:
    other = item("Z", **{"source": "2024 自治区评估", **earlier})
    assert recurring_flags([item("Z25")], [other]) == [False], why


def test_comparable_folds_full_width_and_drops_only_spaces_and_punctuation() -> None:
    assert comparable("ＡＰＰ 办理，需 3 天！") == "APP办理需3天"
    assert comparable("≥5个工作日") == "≥5个工作日"


# --- rates, closing, export ---------------------------------------------------------------------------------


def test_rate_rounds_half_up_to_4_decimals_and_is_null_on_nothing() -> None:
    assert rate(33, 48) == 0.6875
    assert rate(1, 3) == 0.3333
    assert rate(2, 3) == 0.6667
    assert rate(1, 32) == 0.0313  # 0.03125: half up, not half to even (0.0312)
    assert rate(1, 80000) == 0.0
    assert rate(0, 0) is None
    assert completion([]) == (0, 0, None)


def test_closing_sets_evidence_approval_and_time_once() -> None:
    closed = close_item(item(), CloseRequest(evidence="已整改", approved_by="fgw"), NOW)
    assert closed.status is ItemStatus.CLOSED
    assert (closed.closed_at, closed.evidence, closed.approved_by) == (NOW, "已整改", "fgw")
    with pytest.raises(ValueError, match="closed already"):
        close_item(closed, CloseRequest(evidence="again", approved_by="fgw"), NOW)


def test_close_request_needs_both_fields() -> None:
    with pytest.raises(ValueError, match="approved_by"):
        CloseRequest.model_validate({"evidence": "x"})
    with pytest.raises(ValueError, match="evidence"):
        CloseRequest.model_validate({"evidence": "  ", "approved_by": "fgw"})


def test_an_imported_closing_keeps_the_time_it_had() -> None:
    earlier = datetime(2025, 6, 1, tzinfo=UTC)
    closed = item(status="closed", evidence="e", approved_by="fgw")
    assert settle_closed_at(closed, None, NOW) == NOW
    assert settle_closed_at(closed, earlier, NOW) == earlier
    given = item(status="closed", evidence="e", approved_by="fgw", closed_at="2025-07-01T10:00:00")
    assert settle_closed_at(given, earlier, NOW) == datetime(2025, 7, 1, 2, 0, tzinfo=UTC)  # local +08:00
    assert settle_closed_at(item(status="open"), earlier, NOW) is None


def test_csv_export_shape_and_it_imports_again() -> None:
    items = [
        close_item(item("A1", problem='说"明",含逗号'), CloseRequest(evidence="证据\n两行", approved_by="fgw"), NOW),
        item("A2", departments=["fgw", "zwfw"]),
    ]
    data = to_csv(items, [False, True])
    assert data.startswith(b"\xef\xbb\xbf")
    text = data[3:].decode("utf-8")
    assert text.startswith(",".join(EXPORT_FIELDS) + "\r\n")
    assert text.endswith("\r\n")
    assert '"说""明"",含逗号"' in text
    assert '"证据\n两行"' in text  # a line break inside a quoted cell stays as it is (RFC 4180)
    records = list(csv.reader(io.StringIO(text, newline="")))
    assert records[2][EXPORT_FIELDS.index("departments")] == "fgw、zwfw"
    assert records[2][EXPORT_FIELDS.index("recurring")] == "true"
    assert records[1][EXPORT_FIELDS.index("closed_at")] == "2026-03-01T02:00:00Z"
    assert records[2][EXPORT_FIELDS.index("closed_at")] == ""
    assert parse_csv(data) == items
    assert item_view(items[1], True)["recurring"] is True
