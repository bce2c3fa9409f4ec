"""Worker uploads from a spreadsheet: an `.xlsx` workbook becomes the same CSV
the employer API reads, so one parser (`parse_participants_csv`) and one set
of rules (`employers.judge_rows`, `employers.add_participants`) judge
every upload, whatever its format.

Row numbers are the API's: data rows counted from 1 after the header. In a
workbook whose header is on the first row, data row n is sheet row n + 1;
the portal shows that number because it is the one the employer sees.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import zipfile

from gateway.http.employer import CSV_HEADER
from gateway.service.errors import Invalid, ServiceError


class Unavailable(ServiceError):
    status = 503
    title = "Not installed"


XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# A workbook is a zip: refuse one that would expand to more than this, so a
# small upload cannot make the gateway decompress gigabytes (a zip bomb).
XLSX_UNCOMPRESSED_BYTES_MAX = 256 * 1_048_576


def _cell_text(value: object) -> str:
    """What the employer typed, as CSV text. Whole numbers lose Excel's
    trailing `.0`; other numbers keep their decimals so the wage rule can
    refuse them by name."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)


def xlsx_to_csv(raw: bytes, rows_max: int) -> bytes:
    """The first worksheet of a workbook as UTF-8 CSV, row for row (blank rows
    kept, so row numbers match the sheet's). Cells beyond the header's width
    are kept when they hold something, so the parser reports the extra
    columns instead of dropping data silently."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            expanded = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        raise Invalid.field(
            "file",
            "not an .xlsx workbook (it is not a zip archive); save it as Excel Workbook (.xlsx) or CSV",
        ) from None
    if expanded > XLSX_UNCOMPRESSED_BYTES_MAX:
        raise Invalid.field(
            "file",
            f"the workbook expands to {expanded} bytes; at most {XLSX_UNCOMPRESSED_BYTES_MAX} bytes uncompressed",
        )
    try:
        # Imported here: a gateway without openpyxl still serves everything else.
        from openpyxl import load_workbook
        from openpyxl.utils.exceptions import InvalidFileException
    except ModuleNotFoundError:
        raise Unavailable(
            "reading .xlsx needs the openpyxl package (pip install 'openpyxl>=3.1'); upload CSV meanwhile",
            [{"field": "file", "problem": "xlsx support is not installed"}],
        ) from None
    try:
        workbook = load_workbook(io.BytesIO(raw), read_only=True, data_only=True)
    except (InvalidFileException, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise Invalid.field("file", f"cannot read the workbook: {error}") from None
    try:
        sheet = workbook.worksheets[0]
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\n")
        width = 0
        for index, values in enumerate(sheet.iter_rows(values_only=True)):
            cells = [_cell_text(v).strip() for v in values]
            while cells and cells[-1] == "":
                cells.pop()
            if index == 0:
                width = len(cells)
            elif len(cells) < width and cells:
                cells += [""] * (width - len(cells))
            if index > rows_max + 1:
                raise Invalid.field("file", f"more than {rows_max} rows; at most {rows_max} per upload")
            writer.writerow(cells)
    except Invalid:
        raise
    except Exception as error:
        # The sheet itself is read here, row by row: a damaged part (an XML
        # cut short, a bad cell) is the file's fault, whatever the parser raises.
        raise Invalid.field("file", f"cannot read the workbook's rows ({type(error).__name__}: {error})"[:300]) from None
    finally:
        workbook.close()
    return out.getvalue().encode("utf-8")


def preview_rows(csv_bytes: bytes) -> list[dict]:
    """The non-blank data rows as the employer wrote them, numbered as the
    parser numbers them, for showing errors next to their rows."""
    text = csv_bytes.decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader, None)
    rows = []
    for number, record in enumerate(reader, start=1):
        if not any(cell.strip() for cell in record):
            continue
        cells = [cell.strip() for cell in record]
        row = {name: (cells[i] if i < len(cells) else "") for i, name in enumerate(CSV_HEADER)}
        row["row"] = number
        row["extra"] = cells[len(CSV_HEADER) :]
        rows.append(row)
    return rows
