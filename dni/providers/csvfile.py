"""`dni calls import FILE.csv`: call records from a spreadsheet export, row by row.

Columns are the generic record's names, a preset's field names (`--preset`), or any names
mapped with `--map ours=theirs`. UTF-8 (with or without BOM) or GBK, as Chinese exports often
are. Times without an offset are read in the site's time zone. A bad row is reported with its
line and field and never stops the good ones.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from dni.calls import record_call
from dni.errors import InvalidInput
from dni.fields import storage_problem, whole_number
from dni.providers.cdr import parse_record
from dni.providers.presets import Preset, translate
from dni.sites import SiteConfig

GENERIC = (
    "call_id",
    "from",
    "to",
    "extension",
    "started_at",
    "duration",
    "status",
    "recording_url",
    "ivr",
)


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)


# The largest file an import takes: far above a year of any console's daily report or of a
# shop's orders; a larger one is refused before it is read.
MAX_FILE_BYTES = 100 * 1024 * 1024


def read_file(path: Path) -> bytes:
    """The bytes of a file to import, refused before reading when it is over MAX_FILE_BYTES."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise _too_large()
    return path.read_bytes()


def check_size(data: bytes) -> None:
    if len(data) > MAX_FILE_BYTES:
        raise _too_large()


def _too_large() -> InvalidInput:
    size = f"{MAX_FILE_BYTES // (1024 * 1024)} MB"
    return InvalidInput(f"the file is larger than {size}; split it by date", {"file": "too large"})


def decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise InvalidInput("the file is neither UTF-8 nor GBK", {"file": "encoding"})


def _generic_row(
    row: Mapping[str, str], mapping: Mapping[str, str], zone: ZoneInfo
) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for ours in GENERIC:
        value = (row.get(mapping.get(ours, ours)) or "").strip()
        if value:
            item[ours] = value
    seconds = whole_number(item.get("duration"), digits=True)
    if seconds is not None:
        item["duration"] = seconds  # else left as text, refused as a duration
    started = item.get("started_at", "")
    try:
        moment = datetime.fromisoformat(started)
        if moment.tzinfo is None:
            item["started_at"] = moment.replace(tzinfo=zone).isoformat()
    except ValueError:
        pass
    item.setdefault("status", "completed" if item.get("duration") else "no-answer")
    return item


def import_calls(
    session: Session,
    site: SiteConfig,
    data: bytes,
    now: datetime,
    preset: Preset | None = None,
    mapping: Mapping[str, str] | None = None,
) -> ImportReport:
    """Store every good row (call ids make it idempotent); report the bad ones by line."""
    check_size(data)
    report = ImportReport()
    reader = csv.DictReader(io.StringIO(decode(data)))
    zone = ZoneInfo(site.timezone)
    for line, row in enumerate(reader, start=2):  # line 1 is the header
        try:
            item = translate(preset, row) if preset else _generic_row(row, mapping or {}, zone)
            record = replace(parse_record(item), provider=preset.name if preset else "csv")
            unstorable = storage_problem(dict(row))
            if unstorable is not None:
                raise InvalidInput("unstorable cell", dict([unstorable]))
            # record_call checks the called number before it writes anything.
            outcome = record_call(session, site, replace(record, payload=dict(row)), now)
        except InvalidInput as error:
            problems = "; ".join(f"{name}: {why}" for name, why in error.fields.items())
            report.errors.append(f"line {line}: {problems or error.message}")
            continue
        setattr(report, outcome, getattr(report, outcome) + 1)
    return report
