"""Deterministic export files: the same rows always render to the same bytes.

- CSV: UTF-8 (no BOM), a header row, RFC 4180 quoting, CRLF line ends. A text cell that
  a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or CR) is
  prefixed with `'` (OWASP's CSV-injection advice): tenant data such as display names is
  chosen by users, and the file is opened in Excel by the customer.
- XLSX (openpyxl): fixed document properties and timestamps and fixed ZIP entry times, so
  a workbook rendered twice is byte-identical (for the same openpyxl and zlib); text
  cells are always written as text, never as formulas.

Files are written atomically (temporary file in the same directory, fsync, rename),
mode 0600 in a 0700 directory.
"""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.errors import DapError

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a ZIP entry can carry
CellValue = str | int | float | bool | None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def safe_text(value: str) -> str:
    """A text cell that no spreadsheet will evaluate as a formula."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def render_csv(columns: Sequence[str], rows: Iterable[Sequence[CellValue]]) -> bytes:
    return b"".join(csv_chunks(columns, rows))


def csv_chunks(columns: Sequence[str], rows: Iterable[Sequence[CellValue]],
               batch: int = 2000) -> Iterator[bytes]:
    """The CSV as UTF-8 pieces of `batch` rows: the same bytes as `render_csv`."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    pending = 0
    for row in rows:
        # plain text cells (almost all) pass as they are; the rest go through _csv_cell
        writer.writerow([v if type(v) is str and not v.startswith(_FORMULA_START)
                         else _csv_cell(v) for v in row])
        pending += 1
        if pending == batch:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue().encode("utf-8")


def _csv_cell(value: CellValue) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return safe_text(value)


@dataclass(frozen=True)
class Sheet:
    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[CellValue]]
    widths: dict[int, float] = field(default_factory=dict)  # 0-based column -> width


class _FixedTimeZip(zipfile.ZipFile):
    """A ZipFile whose entries all carry one fixed time and mode: reproducible archives."""

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o600 << 16
        return info

    def writestr(self, zinfo_or_arcname: str | zipfile.ZipInfo, data: Any,
                 compress_type: int | None = None, compresslevel: int | None = None) -> None:
        name = (zinfo_or_arcname.filename if isinstance(zinfo_or_arcname, zipfile.ZipInfo)
                else zinfo_or_arcname)
        super().writestr(self._info(name), data, compresslevel=6)

    def write(self, filename: Any, arcname: Any = None, compress_type: int | None = None,
              compresslevel: int | None = None) -> None:
        # openpyxl streams each worksheet to a temporary file and adds it with write()
        with open(filename, "rb") as handle:
            self.writestr(str(arcname or filename), handle.read())


def render_xlsx(sheets: Sequence[Sheet], *, timestamp: datetime,
                creator: str = "dap-agent", title: str = "") -> bytes:
    """A workbook of `sheets`, byte-identical for the same input and `timestamp`."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter
    from openpyxl.writer.excel import ExcelWriter

    workbook = Workbook(write_only=True)
    moment = timestamp.astimezone(UTC).replace(tzinfo=None, microsecond=0)
    props = workbook.properties
    props.creator = creator
    props.lastModifiedBy = creator
    props.title = title or None
    props.created = moment
    props.modified = moment
    bold = Font(bold=True)
    for sheet in sheets:
        ws = workbook.create_sheet(title=sheet.title[:31])
        for index, width in sheet.widths.items():
            ws.column_dimensions[get_column_letter(index + 1)].width = width
        ws.freeze_panes = "A2"
        header = []
        for name in sheet.columns:
            cell = WriteOnlyCell(ws, value=name)
            cell.font = bold
            header.append(cell)
        ws.append(header)
        for row in sheet.rows:
            ws.append([_xlsx_cell(ws, value, WriteOnlyCell) for value in row])
    buffer = io.BytesIO()
    archive = _FixedTimeZip(buffer, "w", zipfile.ZIP_DEFLATED, allowZip64=True)
    ExcelWriter(workbook, archive).save()  # not save_workbook(): that stamps "modified" now
    return buffer.getvalue()


def _xlsx_cell(ws: Any, value: CellValue, cell_type: Any) -> Any:
    if not isinstance(value, str):
        return value
    cell = cell_type(ws, value=value)
    cell.data_type = "s"  # text stays text: openpyxl would turn "=..." into a formula
    return cell


def check_delivered(state_dir: Path, month: str, csv_sha256: str) -> None:
    """A delivered month's re-rendered CSV against the checksum the audit log recorded
    when it was delivered (`month-delivered`): the snapshot's own checksum can be edited
    together with its rows, the log's entry cannot without breaking the chain or seals."""
    from agent.audit import AuditLog

    log = AuditLog(state_dir / "audit.jsonl")
    entry = log.delivery(month)
    if entry is None:
        raise DapError(f"{month} is marked delivered but the audit log {log.path} has no "
                       "month-delivered entry for it: the snapshot or the log was altered (a "
                       "delivery interrupted before it was audited is recorded by the next "
                       "`dap-agent run active-users`); nothing written")
    if entry.get("export_sha256") != csv_sha256:
        raise DapError(f"re-rendered export of {month} has sha256 {csv_sha256}, but the audit "
                       f"log recorded {entry.get('export_sha256')} at its delivery (entry "
                       f"{entry.get('seq')}): the snapshot was altered; nothing written")
