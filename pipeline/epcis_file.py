"""EPCIS files for `provenance produce --file`: an EPCISDocument (JSON or JSON-LD), or NDJSON of events.

Every event is validated against the official schema first, as `POST /capture`
does, and the file is refused whole (nothing sent) if one is invalid. Events go
to `epcis-events` one per record, as one-event documents keeping the
document's fields, keyed like captured events so related ones share a partition.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.epcis.document import InvalidCapture, decode_body, read_capture
from pipeline.core.epcis.record import event_record, partition_key
from pipeline.core.epcis.standard import EVENT_TYPES
from pipeline.errors import ConfigError, InvalidEvent

KeyValue = tuple[bytes | None, bytes]
_EPCIS_TYPES = {"EPCISDocument", *EVENT_TYPES}


def _first_line(path: Path) -> bytes:
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                return line
    return b""


def _is_epcis(value: object) -> bool:
    return isinstance(value, dict) and value.get("type") in _EPCIS_TYPES


def epcis_records(path: Path) -> list[KeyValue] | None:
    """The records of an EPCIS file, or None when the file is not EPCIS (ShipmentEvent JSONL, say)."""
    if str(path) == "-":
        return None  # stdin: ShipmentEvent JSONL
    try:
        first = _first_line(path)
        try:
            if not _is_epcis(json.loads(first)):
                return None  # one JSON object a line, not EPCIS: ShipmentEvent JSONL, read as a stream
        except ValueError:
            pass  # not one value a line: a pretty-printed document, read whole below
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"no such file: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        whole = decode_body(raw)
        if not _is_epcis(whole):
            return None
        bodies = [whole]
    except InvalidCapture:  # not one JSON value: NDJSON, one event or document a line
        bodies = [decode_body(line.encode()) for line in raw.decode("utf-8").splitlines() if line.strip()]
    records: list[KeyValue] = []
    problems = []
    for n, body in enumerate(bodies, 1):
        try:
            capture = read_capture(body)
        except InvalidCapture as exc:
            problems.append(f"line {n}: {exc.reason}")
            continue
        for i, errors in sorted(capture.problems.items()):
            problems += [f"line {n} event {i}: {e.pointer}: {e.message}" for e in errors[:3]]
        records += [(partition_key(c.event), event_record(capture.document, c.event)) for c in capture.events]
    if problems:
        raise InvalidEvent(f"{path}: {len(problems)} problem(s), nothing sent: " + "; ".join(problems[:5]))
    return records
