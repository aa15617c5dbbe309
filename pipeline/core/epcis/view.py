"""ShipmentEvent views of EPCIS events, so the analytics see EPCIS traffic in the shape they know.

A view exists where the mapping is meaningful: the event's bizStep (or, for
errorDeclaration-free events, a disposition that means trouble) maps to a
ShipmentEvent `event_type`. The view names the EPCIS event it came from and
which ShipmentEvent fields were mapped from which EPCIS fields, and which took
a default; the table is in docs/epcis.md. The view is derived data: the ledger
records the EPCIS event as sent, never the view.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from pipeline.core.epcis.document import CapturedEvent
from pipeline.schema import validate_object
from pipeline.errors import InvalidEvent

# CBV 2.0 bizStep (bare name) → ShipmentEvent event_type.
BIZ_STEPS = {
    "commissioning": "created", "creating_class_instance": "created", "packing": "created",
    "loading": "picked_up", "collecting": "picked_up", "picking": "picked_up",
    "shipping": "departed", "departing": "departed", "transporting": "departed",
    "arriving": "arrived", "receiving": "arrived", "accepting": "arrived", "unloading": "arrived",
    "retail_selling": "delivered", "dispensing": "delivered",
    "void_shipping": "cancelled", "decommissioning": "cancelled", "destroying": "cancelled",
}
# CBV 2.0 dispositions that make an event a ShipmentEvent `exception` whatever its bizStep.
EXCEPTION_DISPOSITIONS = {"damaged", "stolen", "disposed", "recalled", "non_conforming", "destroyed", "expired"}
_VOCAB = re.compile(r"^(?:urn:epcglobal:cbv:(?:bizstep|disp):|https://ref\.gs1\.org/cbv/(?:BizStep|Disp)-|cbv:(?:BizStep|Disp)-)")
_SGTIN = re.compile(r"^urn:epc:id:sgtin:(\d+)\.(\d+)\.")
_DL_GTIN = re.compile(r"^https?://[^/]+/(?:01|gtin)/(\d{8,14})")
UNKNOWN = "unknown"


def cbv_name(value: Any) -> str:
    """A CBV value's bare name, whatever its form (`urn:epcglobal:cbv:bizstep:x`, web URI, bare).

    >>> cbv_name("https://ref.gs1.org/cbv/BizStep-shipping"), cbv_name("urn:epcglobal:cbv:disp:in_transit")
    ('shipping', 'in_transit')
    """
    return _VOCAB.sub("", value) if isinstance(value, str) else ""


def sku_of(epc: str) -> str:
    """The trade item an instance identifier belongs to (its GTIN class), or the identifier itself."""
    m = _SGTIN.match(epc)
    if m:
        return f"urn:epc:idpat:sgtin:{m.group(1)}.{m.group(2)}.*"
    m = _DL_GTIN.match(epc)
    return f"gtin:{m.group(1).zfill(14)}" if m else epc


def _first_id(value: Any) -> str | None:
    return value.get("id") if isinstance(value, dict) and isinstance(value.get("id"), str) else None


def _party(items: Any, kinds: tuple[str, ...]) -> tuple[str | None, str | None]:
    """The first source/destination of the preferred kinds (location before owning party), and its kind."""
    if not isinstance(items, list):
        return None, None
    for kind in kinds:
        for item in items:
            if isinstance(item, dict) and cbv_name(item.get("type", "")).split("SDT-")[-1] == kind:
                value = item.get("source", item.get("destination"))
                if isinstance(value, str):
                    return value, kind
    return None, None


def shipment_key(event: dict[str, Any]) -> tuple[str, str]:
    """What the view calls the shipment, and which field said so."""
    for bt in event.get("bizTransactionList") or []:
        if isinstance(bt, dict) and isinstance(bt.get("bizTransaction"), str):
            return bt["bizTransaction"], "bizTransactionList[0].bizTransaction"
    if isinstance(event.get("parentID"), str):
        return event["parentID"], "parentID"
    for name in ("epcList", "childEPCs", "inputEPCList", "outputEPCList"):
        if event.get(name):
            return str(event[name][0]), f"{name}[0]"
    return UNKNOWN, "(default)"


def _items(event: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    counts: Counter[str] = Counter()
    used: list[str] = []
    for name in ("epcList", "childEPCs", "outputEPCList"):
        for epc in event.get(name) or []:
            if isinstance(epc, str):
                counts[sku_of(epc)] += 1
                if name not in used:
                    used.append(name)
    for name in ("quantityList", "childQuantityList", "outputQuantityList"):
        for q in event.get(name) or []:
            qty = q.get("quantity") if isinstance(q, dict) else None
            if isinstance(q, dict) and isinstance(q.get("epcClass"), str) and isinstance(qty, (int, float)) \
                    and qty > 0 and float(qty).is_integer():
                counts[q["epcClass"]] += int(qty)
                if name not in used:
                    used.append(name)
    return [{"sku": sku, "quantity": n} for sku, n in counts.items()], used


def shipment_view(captured: CapturedEvent) -> dict[str, Any] | None:
    """The ShipmentEvent view of one captured event, or None where no event_type applies."""
    event = captured.event
    if captured.is_declaration:
        return None
    step, disposition = cbv_name(event.get("bizStep")), cbv_name(event.get("disposition"))
    if disposition in EXCEPTION_DISPOSITIONS:
        event_type, type_from = "exception", "disposition"
    elif step in BIZ_STEPS:
        event_type, type_from = BIZ_STEPS[step], "bizStep"
    else:
        return None
    mapped: dict[str, str] = {"event_id": "eventID" if captured.id_source == "eventID" else "(CBV 2.0 event hash)",
                              "event_type": type_from, "event_time": "eventTime"}
    defaulted: list[str] = []
    shipment_id, mapped["shipment_id"] = shipment_key(event)
    site = _first_id(event.get("bizLocation")) or _first_id(event.get("readPoint"))
    site_from = "bizLocation.id" if _first_id(event.get("bizLocation")) else "readPoint.id"
    origin, o_kind = _party(event.get("sourceList"), ("location", "possessing_party", "owning_party"))
    destination, d_kind = _party(event.get("destinationList"), ("location", "possessing_party", "owning_party"))
    carrier, c_kind = _party(event.get("sourceList"), ("possessing_party",))
    view: dict[str, Any] = {
        "event_id": captured.event_id, "shipment_id": shipment_id, "event_type": event_type,
        "event_time": captured.event_time,
        "origin": origin or site or UNKNOWN, "destination": destination or site or UNKNOWN,
        "carrier": carrier or UNKNOWN, "mode": "road",
    }
    mapped["origin"] = f"sourceList[{o_kind}]" if origin else (site_from if site else "(default)")
    mapped["destination"] = f"destinationList[{d_kind}]" if destination else (site_from if site else "(default)")
    if carrier:
        mapped["carrier"] = f"sourceList[{c_kind}]"
    else:
        defaulted.append("carrier")
    defaulted.append("mode")
    if site:
        view["location"] = {"site_id": site}
        mapped["location.site_id"] = site_from
    items, used = _items(event)
    if items:
        view["items"] = items
        mapped["items"] = "+".join(used)
    attributes: dict[str, Any] = {"epcis": {"event_id": captured.event_id, "type": captured.event_type,
                                            "event_hash": captured.event_hash, "mapped": mapped,
                                            "defaulted": defaulted}}
    for key in ("bizStep", "disposition", "action"):
        if key in event:
            attributes["epcis"][key] = event[key]
    sensors = [r for el in event.get("sensorElementList") or [] if isinstance(el, dict)
               for r in el.get("sensorReport") or [] if isinstance(r, dict)]
    if sensors:
        attributes["sensors"] = sensors
        mapped["attributes.sensors"] = "sensorElementList[].sensorReport"
    view["attributes"] = attributes
    try:
        validate_object(view)
    except InvalidEvent:
        return None  # a value the ShipmentEvent schema refuses (an over-long identifier, say): no view
    return view
