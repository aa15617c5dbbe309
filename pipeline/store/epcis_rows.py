"""EPCIS entries into DuckDB: `epcis_events`, identity (duplicate, conflict, correction), and lookups.

Called by `Database.ingest` inside its transaction for entries of the EPCIS
logs. Identity is by event id (the producer's eventID, else the CBV 2.0 hash):

- an event whose id is recorded with the same CBV 2.0 hash is a duplicate: its
  leaf goes to `duplicate_leaves` (the log keeps every leaf), no new row;
- an event whose id is recorded with another hash is a conflict: the HTTP
  capture refuses it with 409 before it reaches the ledger; one that came
  straight from Kafka is kept in `duplicate_leaves` too, and logged;
- an event carrying `errorDeclaration` under a recorded id is a correction of
  it (a second, identical declaration is a duplicate); so is every event named
  by a declaration's `correctiveEventIDs`, linked in `epcis_links`.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import duckdb

from pipeline.core.log_ids import parse_log_id

log = logging.getLogger(__name__)

COLUMNS = ("event_id", "epcis_type", "event_hash", "id_source", "event_time", "biz_step", "declaration",
           "log_id", "leaf_index", "leaf_hash", "kafka_partition", "kafka_offset", "original", "context",
           "view", "recorded_at")



def _partition(text: str) -> int:
    name = parse_log_id(text)
    if name is None:
        raise ValueError(f"{text!r} is not a log id")
    return name.partition

def insert_epcis_entries(cur: duckdb.DuckDBPyConnection, entries: list[dict[str, Any]], now: datetime) -> tuple[int, int]:
    """Write EPCIS entries in leaf order; return (rows added, leaves kept as duplicates or conflicts)."""
    ids = sorted({e["event_id"] for e in entries})
    known: dict[tuple[str, bool], list[tuple[str, str]]] = {}
    for event_id, declaration, event_hash, leaf in cur.execute(
        "SELECT event_id, declaration, event_hash, leaf_hash FROM epcis_events WHERE event_id IN "
        "(SELECT unnest($1::VARCHAR[]))", [ids]
    ).fetchall():
        known.setdefault((event_id, bool(declaration)), []).append((event_hash, leaf))
    added = kept = 0
    for e in entries:
        meta = e["epcis"]
        declaration = bool(meta.get("declaration"))
        seen = known.get((e["event_id"], declaration), [])
        if declaration:
            repeat = any(leaf == e["leaf_hash"] for _, leaf in seen)
        else:
            repeat = bool(seen)
            if seen and seen[0][0] != meta["event_hash"]:
                log.error("%s: leaf %d is a different event under recorded id %s (kept in duplicate_leaves)",
                          e["log_id"], e["leaf_index"], e["event_id"])
        if repeat:
            kept += cur.execute(
                "INSERT INTO duplicate_leaves VALUES (?, ?, ?, ?, ?, ?::JSON, ?) ON CONFLICT DO NOTHING RETURNING 1",
                [e["log_id"], e["leaf_index"], e["event_id"], e["leaf_hash"], e["kafka_offset"], e["payload"], now],
            ).fetchall().__len__()
            continue
        original = json.loads(e["payload"])
        row = cur.execute(
            "INSERT INTO epcis_events VALUES (?, ?, ?, ?, ?::TIMESTAMPTZ, ?, ?, ?, ?, ?, ?, ?, ?::JSON, ?::JSON,"
            " ?::JSON, ?) ON CONFLICT DO NOTHING RETURNING 1",
            [e["event_id"], meta["type"], meta["event_hash"], meta.get("id_source", "eventID"), e["event_time"],
             original.get("bizStep"), declaration, e["log_id"], e["leaf_index"], e["leaf_hash"],
             _partition(e["log_id"]), e["kafka_offset"], e["payload"], json.dumps(meta.get("context")),
             json.dumps(e.get("view")) if e.get("view") is not None else None, now],
        ).fetchall()
        if not row:
            continue
        added += 1
        known.setdefault((e["event_id"], declaration), []).append((meta["event_hash"], e["leaf_hash"]))
        if declaration:
            links = [(e["event_id"], e["event_id"], "errorDeclaration", e["log_id"], e["leaf_index"])]
            links += [(e["event_id"], str(c), "correctiveEventID", e["log_id"], e["leaf_index"])
                      for c in meta.get("corrective_ids") or []]
            cur.executemany("INSERT INTO epcis_links VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", links)
    return added, kept


def epcis_event(db: Any, event_id: str) -> dict[str, Any] | None:
    """The recorded original of an EPCIS event id (or its declaration when only that is recorded), with
    its corrections: the declarations under its id and the corrective events they name."""
    rows = db.fetch_dicts(
        "SELECT * FROM epcis_events WHERE event_id = ? ORDER BY declaration, log_id, leaf_index", [event_id])
    if not rows:
        return None
    original = next((r for r in rows if not r["declaration"]), rows[0])
    declarations = [r for r in rows if r["declaration"] and r is not original]
    corrective = db.fetch_dicts(
        "SELECT l.target_id AS event_id, l.declared_by, e.log_id, e.leaf_index, e.original FROM epcis_links l"
        " LEFT JOIN epcis_events e ON e.event_id = l.target_id AND NOT e.declaration"
        " WHERE l.declared_by = ? AND l.relation = 'correctiveEventID' ORDER BY l.target_id", [event_id])
    corrected_by = db.fetch_dicts(
        "SELECT DISTINCT declared_by FROM epcis_links WHERE target_id = ? AND relation = 'correctiveEventID'",
        [event_id])
    return {
        "event": _decoded(original),
        "corrections": {
            "declarations": [_decoded(r) for r in declarations],
            "corrective_events": [{"event_id": c["event_id"], "recorded": c["log_id"] is not None,
                                   "log_id": c["log_id"], "leaf_index": c["leaf_index"],
                                   "event": json.loads(c["original"]) if c["original"] else None}
                                  for c in corrective],
            "corrects": [r["declared_by"] for r in corrected_by],
        },
    }


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in ("original", "context", "view"):
        if isinstance(out.get(key), str):
            out[key] = json.loads(out[key])
    return out
