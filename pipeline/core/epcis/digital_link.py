"""GS1 keys as canonical GS1 Digital Link URIs: what the CBV 2.0 event hash compares identifiers by.

An EPC URI (`urn:epc:id:sgtin:0614141.107346.2017`), an EPC class or pattern
URI, or any GS1 Digital Link URI becomes one constrained canonical form
(`https://id.gs1.org/01/10614141073464/21/2017`): the finest identification
level only, no query string or CPV. The rules follow the normaliser of the
GS1-referenced event hash generator (RalphTro/epcis-event-hash-generator, MIT),
which produced the reference vectors; anything else gives None.

>>> canonical_digital_link("urn:epc:id:sgtin:0614141.107346.2017")
'https://id.gs1.org/01/10614141073464/21/2017'
>>> canonical_digital_link("urn:epc:id:sgln:0614141.07346.0")
'https://id.gs1.org/414/0614141073467'
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

# One URI-safe character of an EPC serial (GS1 AI encodable character set 82, percent-escaped).
_C = r"(\%2[125-9A-Fa-f]|\%3[0-9A-Fa-f]|\%4[1-9A-Fa-f]|\%5[0-9AaFf]|\%6[1-9A-Fa-f]|\%7[0-9Aa]|[!\')(*+,.0-9:;=A-Za-z_-])"
_CPI = r"(\%2[3dfDF]|\%3[0-9]|\%4[1-9A-Fa-f]|\%5[0-9Aa]|[0-9A-Z-])"
_X = r"[\x22\x27\x2D\x2E\x30-\x39\x3B-\x3F\x41-\x5A\x5F\x61-\x7A]"  # AI character set, unescaped


def _split(total: int, tail: str = "") -> str:
    """Company prefix of 6..12 digits followed by a reference that makes `total` digits in all."""
    parts = [rf"(\d{{{p}}}\.\d{{{total - p}}}{tail})" for p in range(6, 12)]
    last = "" if total == 12 else rf"\d{{{total - 12}}}"
    return "(" + "|".join(parts + [rf"(\d{{12}}\.{last}{tail})"]) + ")"


def _prefixed(width: int, chars: str = _C) -> str:
    """Company prefix of 6..12 digits, then up to `width - prefix` further characters."""
    return "(" + "|".join(rf"(\d{{{p}}}\.{chars}{{1,{width - p}}})" for p in range(6, 13)) + ")"


def check_digit(digits: str) -> int:
    """The GS1 mod-10 check digit of a key without it (GTIN, GLN, SSCC, GSRN, ...).

    >>> check_digit("1061414107346")
    4
    """
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return math.ceil(total / 10) * 10 - total


def _escape(text: str) -> str:
    for ch, code in (("!", "%21"), ("(", "%28"), (")", "%29"), ("*", "%2A"), ("+", "%2B"), (",", "%2C"), (":", "%3A")):
        text = text.replace(ch, code)
    return text


def _gtin(cp: str, ref: str) -> str:
    raw = ref[0:1] + cp + ref[1:]
    return raw + str(check_digit(raw))


def _keyed(cp: str, ref: str) -> str:
    raw = cp + ref
    return raw + str(check_digit(raw))


def _parts(uri: str, scheme: str) -> tuple[str, str, str]:
    """(company prefix, reference, rest) of `urn:epc:<scheme>:CP.REF[.REST]`."""
    body = uri[len(scheme):]
    cp, _, rest = body.partition(".")
    ref, _, tail = rest.partition(".")
    return cp, ref, tail


def _sgtin(u: str) -> str:
    cp, ref, serial = _parts(u, "urn:epc:id:sgtin:")
    return f"https://id.gs1.org/01/{_gtin(cp, ref)}/21/{_escape(serial)}"


def _sscc(u: str) -> str:
    cp, ref, _ = _parts(u, "urn:epc:id:sscc:")
    raw = ref[0:1] + cp + ref[1:]
    return f"https://id.gs1.org/00/{raw}{check_digit(raw)}"


def _sgln(u: str) -> str:
    cp, ref, ext = _parts(u, "urn:epc:id:sgln:")
    gln = _keyed(cp, ref)
    return f"https://id.gs1.org/414/{gln}" if ext == "0" else f"https://id.gs1.org/414/{gln}/254/{_escape(ext)}"


def _grai(u: str) -> str:
    cp, ref, serial = _parts(u, "urn:epc:id:grai:")
    return f"https://id.gs1.org/8003/{_keyed('0' + cp, ref)}{_escape(serial)}"


def _giai(u: str) -> str:
    cp, _, ref = u[len("urn:epc:id:giai:"):].partition(".")
    return f"https://id.gs1.org/8004/{cp}{_escape(ref)}"


def _ginc(u: str) -> str:
    cp, _, ref = u[len("urn:epc:id:ginc:"):].partition(".")
    return f"https://id.gs1.org/401/{cp}{_escape(ref)}"


def _gdti(u: str) -> str:
    cp, ref, serial = _parts(u, "urn:epc:id:gdti:")
    return f"https://id.gs1.org/253/{_keyed(cp, ref)}{_escape(serial)}"


def _cpi(u: str, scheme: str, with_serial: bool) -> str:
    cp, _, rest = u[len(scheme):].partition(".")
    ref, _, serial = rest.rpartition(".")
    out = f"https://id.gs1.org/8010/{_escape(cp + ref)}"
    return out + f"/8011/{serial}" if with_serial else out


def _itip(u: str, scheme: str, with_serial: bool) -> str:
    cp, _, rest = u[len(scheme):].partition(".")
    ref, piece, total, *serial = rest.split(".", 3)
    out = f"https://id.gs1.org/8006/{_gtin(cp, ref)}{piece}{total}"
    return out + f"/21/{_escape(serial[0])}" if with_serial else out


def _simple(scheme: str, ai: str) -> Callable[[str], str]:
    def convert(u: str) -> str:
        cp, ref, _ = _parts(u, scheme)
        return f"https://id.gs1.org/{ai}/{_keyed(cp, ref)}"
    return convert


def _serial_after(scheme: str, ai: str) -> Callable[[str], str]:
    def convert(u: str) -> str:
        cp, ref, serial = _parts(u, scheme)
        return f"https://id.gs1.org/{ai}/{_keyed(cp, ref)}{serial}"
    return convert


def _class(scheme: str, ai_suffix: str) -> Callable[[str], str]:
    def convert(u: str) -> str:
        cp, ref, rest = _parts(u, scheme)
        return f"https://id.gs1.org/01/{_gtin(cp, ref)}{ai_suffix.format(_escape(rest))}"
    return convert


_EPC_RULES: list[tuple[re.Pattern[str], Callable[[str], str]]] = [(re.compile(p), f) for p, f in [
    (rf"^urn:epc:id:sgtin:{_split(13)}\.{_C}{{1,20}}$", _sgtin),
    (rf"^urn:epc:id:sscc:{_split(17, '$')}", _sscc),
    (rf"^urn:epc:id:sgln:{_split(12)}\.{_C}{{1,20}}$", _sgln),
    (rf"^urn:epc:id:grai:{_split(12)}\.{_C}{{1,16}}$", _grai),
    (rf"^urn:epc:id:giai:{_prefixed(30)}$", _giai),
    (rf"^urn:epc:id:gsrn:{_split(17, '$')}", _simple("urn:epc:id:gsrn:", "8018")),
    (rf"^urn:epc:id:gsrnp:{_split(17, '$')}", _simple("urn:epc:id:gsrnp:", "8017")),
    (rf"^urn:epc:id:gdti:{_split(12)}{_C}{{1,20}}$", _gdti),
    (rf"^urn:epc:id:cpi:{_prefixed(30, _CPI)}\.[\d]{{1,12}}$", lambda u: _cpi(u, "urn:epc:id:cpi:", True)),
    (rf"^urn:epc:id:sgcn:{_split(12)}\.[\d]{{1,12}}$", _serial_after("urn:epc:id:sgcn:", "255")),
    (rf"^urn:epc:id:ginc:{_prefixed(30)}$", _ginc),
    (rf"^urn:epc:id:gsin:{_split(16, '$')}", _simple("urn:epc:id:gsin:", "402")),
    (rf"^urn:epc:id:itip:{_split(13)}\.[\d]{{2}}\.[\d]{{2}}\.{_C}{{1,20}}$", lambda u: _itip(u, "urn:epc:id:itip:", True)),
    (rf"^urn:epc:id:upui:{_split(13)}\.{_C}{{1,28}}$", _class("urn:epc:id:upui:", "/235/{}")),
    (rf"^urn:epc:id:pgln:{_split(12)}$", _simple("urn:epc:id:pgln:", "417")),
    (rf"^urn:epc:class:lgtin:{_split(13)}\.{_C}{{1,20}}$", _class("urn:epc:class:lgtin:", "/10/{}")),
    (rf"^urn:epc:idpat:sgtin:{_split(13)}\.\*$", _class("urn:epc:idpat:sgtin:", "")),
    (rf"^urn:epc:idpat:grai:{_split(12)}\.\*$",
     lambda u: "https://id.gs1.org/8003/" + _keyed("0" + _parts(u, "urn:epc:idpat:grai:")[0],
                                                  _parts(u, "urn:epc:idpat:grai:")[1])),
    (rf"^urn:epc:idpat:gdti:{_split(12)}\.\*$", _simple("urn:epc:idpat:gdti:", "253")),
    (rf"^urn:epc:idpat:sgcn:{_split(12)}\.\*$", _simple("urn:epc:idpat:sgcn:", "255")),
    (rf"^urn:epc:idpat:cpi:{_prefixed(30, _CPI)}\.\*$", lambda u: _cpi(u, "urn:epc:idpat:cpi:", False)),
    (rf"^urn:epc:idpat:itip:{_split(13)}\.[\d]{{2}}\.[\d]{{2}}\.\*$", lambda u: _itip(u, "urn:epc:idpat:itip:", False)),
    (rf"^urn:epc:idpat:upui:{_split(13)}\.\*$", _class("urn:epc:idpat:upui:", "")),
]]

_DL = re.compile(
    r"^https?:(\/\/((([^\/?#]*)@)?([^\/?#:]*)(:([^\/?#]*))?))?((([^?#]*)(\/(01|gtin|8006|itip|8010|cpid|414|gln|417"
    r"|party|8017|gsrnp|8018|gsrn|255|gcn|00|sscc|253|gdti|401|ginc|402|gsin|8003|grai|8004|giai)\/)(\d{4}[^\/]+)"
    r"(\/[^/]+\/[^/]+)?[/]?(\?([^?\n]*))?(#([^\n]*))?)|(\/[A-Za-z_-]{10}$))"
)
_CANONICAL_HOST = re.compile(
    r"^https:\/\/id.gs1.org\/(01|8006|8010|414|417|8017|8018|255|00|253|401|402|8003|8004)\/(\d{4}[^\/]+)"
    r"(\/[^\/]+\/[^\/]+)?[\/]?(\?([^?\n]*))?(#([^\n]*))?|(\/[A-Za-z_-]{10}$)"
)
_SHORT_NAMES = (("gtin", "01"), ("itip", "8006"), ("cpid", "8010"), ("gln", "414"), ("party", "417"),
                ("gsrnp", "8017"), ("gsrn", "8018"), ("gcn", "255"), ("sscc", "00"), ("gdti", "253"),
                ("ginc", "401"), ("gsin", "402"), ("grai", "8003"), ("giai", "8004"), ("cpv", "22"),
                ("lot", "10"), ("ser", "21"))
_PRIMARY_KEYS = ("00", "01", "253", "255", "401", "402", "414", "417", "8003", "8004", "8006", "8010", "8017", "8018")
_VALID = [re.compile(p + "$") for p in (
    r"https:\/\/id.gs1.org\/00\/(\d{18})", rf"https:\/\/id.gs1.org\/01\/(\d{{14}})\/21\/({_X}{{0,20}})",
    rf"https:\/\/id.gs1.org\/01\/(\d{{14}})\/10\/({_X}{{0,20}})", r"https:\/\/id.gs1.org\/01\/(\d{14})",
    rf"https:\/\/id.gs1.org\/01\/(\d{{14}})\/235\/({_X}{{0,28}})",
    rf"https:\/\/id.gs1.org\/253\/(\d{{13}})({_X}{{0,17}})", r"https:\/\/id.gs1.org\/255\/(\d{13})(\d{0,12})",
    rf"https:\/\/id.gs1.org\/401\/({_X}{{0,30}})", r"https:\/\/id.gs1.org\/402\/(\d{17})",
    r"https:\/\/id.gs1.org\/414\/(\d{13})", rf"https:\/\/id.gs1.org\/414\/(\d{{13}})\/254\/({_X}{{0,20}})",
    r"https:\/\/id.gs1.org\/417\/(\d{13})", rf"https:\/\/id.gs1.org\/8003\/(\d{{14}})({_X}{{0,16}})",
    rf"https:\/\/id.gs1.org\/8004\/({_X}{{0,30}})", rf"https:\/\/id.gs1.org\/8006\/(\d{{18}})\/21\/({_X}{{0,20}})",
    rf"https:\/\/id.gs1.org\/8006\/(\d{{18}})\/10\/({_X}{{0,20}})", r"https:\/\/id.gs1.org\/8006\/(\d{18})",
    r"https:\/\/id.gs1.org\/8010\/([\x23\x2D\x2F\x30-\x39\x41-\x5A]{0,30})\/8011/(\d{0,12})",
    r"https:\/\/id.gs1.org\/8010\/([\x23\x2D\x2F\x30-\x39\x41-\x5A]{0,30})",
    r"https:\/\/id.gs1.org\/8017\/(\d{18})", r"https:\/\/id.gs1.org\/8018\/(\d{18})",
)]
_KEY = r"https:\/\/id.gs1.org\/(?:8006\/\d{18}|01\/\d{14})"


def _digital_link(uri: str) -> str | None:
    if _DL.match(uri) is None:
        return None
    uri = uri.split("?", 1)[0]
    for short, ai in _SHORT_NAMES:
        uri = uri.replace(f"/{short}/", f"/{ai}/")
    if _CANONICAL_HOST.match(uri) is None:
        for ai in _PRIMARY_KEYS:
            at = uri.find(f"/{ai}/")
            if at != -1:
                uri = "https://id.gs1.org" + uri[at:]
                break
    if re.match(r"^https:\/\/id.gs1.org\/01\/\d{14}", uri) is None:
        for digits, pad in ((13, "0"), (12, "00"), (8, "000000")):
            if re.match(rf"^https:\/\/id.gs1.org\/01\/\d{{{digits}}}", uri) is not None:
                uri = uri.replace("/01/", f"/01/{pad}")
                break
    after_cpv = uri[uri.find("/22/") + 4:]
    if re.match(rf"{_KEY}\/22\/({_X}{{0,20}})$", uri):
        uri = uri[: uri.find("/22/")] + after_cpv[after_cpv.find("/"):-1]
    if re.match(rf"{_KEY}\/22\/([\x2F\x22\x27\x2D\x2E\x30-\x39\x3B-\x3F\x41-\x5A\x5F\x61-\x7A]{{0,20}})$", uri):
        uri = uri[: uri.find("/22/")] + after_cpv[after_cpv.find("/"):]
    if re.match(rf"{_KEY}\/10\/({_X}{{0,20}})\/21\/({_X}{{0,20}})$", uri):
        after_lot = uri[uri.find("/10/") + 4:]
        uri = uri[: uri.find("/10/")] + after_lot[after_lot.find("/"):]
    return uri if any(v.match(uri) for v in _VALID) else None


def canonical_digital_link(uri: str) -> str | None:
    """The canonical GS1 Digital Link URI of a GS1 key URI, or None when it is not one."""
    if "." not in uri:
        return None
    for pattern, convert in _EPC_RULES:
        if pattern.match(uri):
            return convert(uri)
    return _digital_link(uri)
