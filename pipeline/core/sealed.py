"""Sealed events as the analytics process sees them: the event, and where the ledger holds it.

Models read only what the ledger already holds, so every output can name the
`log_id` and `leaf_index` of the events it was computed from. One
`ledger.entries` message is a bundle of entries of one log in leaf order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.core import wire
from pipeline.errors import InvalidChallenge


@dataclass(frozen=True, slots=True)
class SealedEvent:
    """One accepted event with its ledger position; `time` is its event_time in epoch seconds."""

    event: dict[str, Any]
    log_id: str
    leaf_index: int
    time: float

    @property
    def event_id(self) -> str:
        return str(self.event["event_id"])

    @property
    def shipment_id(self) -> str:
        return str(self.event["shipment_id"])

    @property
    def event_type(self) -> str:
        return str(self.event["event_type"])


def parse_time(text: str) -> float:
    """RFC 3339 text (as the schema accepts it) to epoch seconds.

    >>> parse_time("2026-03-01T08:00:00Z")
    1772352000.0
    >>> parse_time("2026-03-01T09:00:00+01:00")
    1772352000.0
    """
    return datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00")).timestamp()


def decode_bundle(value: bytes) -> list[SealedEvent]:
    """The sealed events of one `ledger.entries` message, in leaf order.

    >>> body = {"log_id": "shipment-events/0", "entries": [{"log_id": "shipment-events/0", "leaf_index": 3,
    ...     "payload": '{"event_id":"e","shipment_id":"s","event_type":"created","event_time":"2026-03-01T08:00:00Z"}'}]}
    >>> [(e.log_id, e.leaf_index, e.event_type) for e in decode_bundle(json.dumps(body).encode())]
    [('shipment-events/0', 3, 'created')]
    """
    out = []
    for entry in wire.decode_entries(value):
        try:
            if "epcis" in entry:  # an EPCIS event: its ShipmentEvent view, where it has one
                if entry.get("view") is None:
                    continue
                event = entry["view"]
            else:
                event = json.loads(entry["payload"])
            out.append(SealedEvent(event, str(entry["log_id"]), int(entry["leaf_index"]),
                                   parse_time(event["event_time"])))
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidChallenge(f"malformed sealed entry: {exc}") from None
    return out
