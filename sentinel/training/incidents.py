"""Incident history files: CSV or JSONL of ``service, start, end[, cause]``.

    >>> read_incidents("incidents.csv")
    (Incident(service='checkout', start_ts=1763899200.0, end_ts=1763900100.0, cause='db'),)

CSV has a header row naming the columns (`service`, `start`, `end`, optional `cause`; more
columns are ignored); JSONL has one object per line with those keys. Times are Unix seconds
or RFC 3339 with a time zone; `end` is when the service was healthy again (exclusive). Every
error names the file, the line and the field. A file ending in ``.jsonl`` / ``.json`` (or
whose first non-blank character is ``{``) is JSONL, anything else CSV.

`incidents_from_metric` turns a 0/1 incident flag in sample history into such records (how
the ASD figures get their incidents file).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from sentinel.core.incidents import Incident
from sentinel.core.samples import MAX_TS, MIN_TS, parse_ts, service_problem
from sentinel.errors import DataError

MAX_FILE_BYTES = 64 << 20
FIELDS = ("service", "start", "end", "cause")


def read_incidents(path: str | Path) -> tuple[Incident, ...]:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise DataError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB; is it an incident list?")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"incidents file {path}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"incidents file {path}: not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise DataError(f"incidents file {path}: cannot read it ({exc.strerror})") from exc
    jsonl = path.suffix in (".jsonl", ".json") or text.lstrip().startswith("{")
    rows = _jsonl_rows(text, path) if jsonl else _csv_rows(text, path)
    return tuple(_incident(row, where) for where, row in rows)


def _jsonl_rows(text: str, path: Path) -> Iterator[tuple[str, Mapping[str, object]]]:
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{where}: not a JSON object ({exc})") from exc
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object with service, start, end[, cause]")
        yield where, row


def _csv_rows(text: str, path: Path) -> Iterator[tuple[str, Mapping[str, object]]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [f for f in FIELDS[:3] if f not in header]
    if missing:
        raise DataError(f"{path}:1: the header row must name the columns service, start, end "
                        f"(and optionally cause); missing {', '.join(missing)}, got {header}")
    reader.fieldnames = header
    for row in reader:
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        yield f"{path}:{reader.line_num}", row


def _incident(row: Mapping[str, object], where: str) -> Incident:
    service = row.get("service")
    if isinstance(service, str):
        service = service.strip()
    problem = service_problem(service)
    if problem:
        raise DataError(f"{where}: field service: {problem}")
    start, end = (_time(row.get(name), name, where) for name in ("start", "end"))
    if end < start:
        raise DataError(f"{where}: field end: {row.get('end')!r} is before start {row.get('start')!r}")
    cause = row.get("cause") or ""
    if not isinstance(cause, str):
        raise DataError(f"{where}: field cause: expected text, got {cause!r}")
    return Incident(service, start, end, cause.strip())  # type: ignore[arg-type]


def _time(value: object, name: str, where: str) -> float:
    if isinstance(value, str):
        value = value.strip()
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: field {name}: missing (Unix seconds or RFC 3339)")
    parsed = parse_ts(value)
    if parsed is None and isinstance(value, str):
        try:
            parsed = parse_ts(float(value))
        except ValueError:
            parsed = None
    if parsed is None:
        raise DataError(f"{where}: field {name}: {str(value)[:80]!r} is neither Unix seconds nor "
                        "RFC 3339 with a time zone (e.g. 2025-11-23T12:00:00Z)")
    if not MIN_TS <= parsed <= MAX_TS:
        raise DataError(f"{where}: field {name}: {value!r} lies outside 2000..2100 "
                        "(milliseconds instead of seconds?)")
    return parsed


def incidents_from_metric(series: Iterable[tuple[str, np.ndarray, np.ndarray]], step_seconds: int
                          ) -> list[Incident]:
    """Incidents where a 0/1 flag is on: per (service, step ts, flag values), each run of
    steps with flag >= 1 is one incident from its first step to the end of its last."""
    out = []
    for service, ts, flag in series:
        on = np.nan_to_num(flag, nan=0.0) >= 1
        edges = np.diff(np.concatenate(([0], on.astype(np.int8), [0])))
        for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True):
            out.append(Incident(service, float(ts[s]), float(ts[e]) + step_seconds))
    return out


def write_incidents_csv(incidents: Iterable[Incident], path: Path) -> int:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        count = 0
        for i in incidents:
            writer.writerow([i.service, f"{i.start_ts:.0f}", f"{i.end_ts:.0f}", i.cause])
            count += 1
    return count
