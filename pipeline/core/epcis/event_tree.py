"""EPCIS JSON-LD events as the element trees the CBV 2.0 event hash walks.

The hash is defined over the XML data model, so a JSON event is first turned
into `(name, text, children)` triples the way the XML would read: list items
named after their list (`epcList` → `epc`), `childEPCs` grouped, quantity
elements renamed, namespaced keys written `{namespace-url}local`, and bare
CBV values (`shipping`) replaced by the web-vocabulary URI the JSON-LD context
expands them to. This follows the GS1-referenced generator
(RalphTro/epcis-event-hash-generator, MIT), whose output the reference vectors are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# (name, text, children): one element of the XML view of an event.
Element = tuple[Any, str, list[Any]]

_UNSORTED = ("bizTransaction", "source", "destination")
_PAIRED_LISTS = ("sourceList", "destinationList", "bizTransactionList")
_INTERNAL_DOMAIN = "{https://repository-x.example.com/}"


class TreeBuilder:
    """Turns one document's events into element trees; holds the namespaces its `@context` declares."""

    def __init__(self, context: Any, expanded_values: set[str]) -> None:
        self.namespaces: dict[str, str] = {}
        self.expanded = expanded_values
        if isinstance(context, list):
            for c in context:
                if isinstance(c, str):
                    self.namespaces[c] = "{" + c + "}"
                elif isinstance(c, dict):
                    for key, value in c.items():
                        self.namespaces[key] = "{" + str(value) + "}"

    def ignore_key(self) -> str:
        """The document key that lists fields left out of the hash (a convention of the generator)."""
        for key, value in self.namespaces.items():
            if value == _INTERNAL_DOMAIN:
                return key + ":ignoreFields"
        return ":ignoreFields"

    def _replace_ns(self, text: Any, is_value: bool = False) -> Any:
        if not isinstance(text, str):
            return text
        prefix, sep, rest = text.partition(":")
        if sep and prefix in self.namespaces:
            url = self.namespaces[prefix]
            return (url.replace("{", "").replace("}", "") if is_value else url) + rest
        return text

    def bare_values(self, value: Any) -> Any:
        """Bare CBV strings replaced by the one expanded vocabulary URI ending in `-value` or `/value`."""
        if isinstance(value, str):
            matches = [x for x in self.expanded if x.endswith("-" + value) or x.endswith("/" + value)]
            return matches[0] if len(matches) == 1 else value
        if isinstance(value, list):
            return [self.bare_values(v) for v in value]
        if isinstance(value, dict):
            return {k: self.bare_values(v) for k, v in value.items()}
        return value

    def element(self, obj: Any, ignore: list[str] | None = None) -> Element:
        """The element tree of a JSON value (children sorted, except in paired lists)."""
        node: Element = ("", "", [])
        if isinstance(obj, list):
            for child in obj:
                node[2].append(self.element(child))
        elif isinstance(obj, dict):
            if "type" in obj:
                node = (obj["type"], "", [])
            if "#text" in obj:
                node = (node[0], obj["#text"], node[2])
            skip = {"#text", "rdfs:comment", "comment", *(ignore or ())}
            for key, val in obj.items():
                if key in skip:
                    continue
                if key.startswith("@xmlns"):
                    self.namespaces[key[7:]] = "{" + str(val) + "}"
                    node = (self._replace_ns(node[0]), node[1], node[2])
                    continue
                child = self.element(val)
                key = self._replace_ns(key)
                if isinstance(val, list):
                    node[2].extend((key, e[1], e[2]) for e in child[2])
                else:
                    node[2].append((key, child[1], child[2]))
        else:
            return "", str(self._replace_ns(_python_str(obj), True)), []
        if not any(k in obj for k in _UNSORTED):
            node[2].sort()
        return node


def _python_str(value: Any) -> Any:
    """Scalars as the generator's Python `str()` writes them (`True`, `None`, `12.0`)."""
    return value if isinstance(value, str) else str(value)


def correct_structure(node: Element) -> Element:
    """The XML shape of a JSON element tree (list item names, childEPCs, quantity elements)."""
    children: list[Any] = list(node[2]) if len(node) > 2 else []
    lists: dict[str, list[Element]] = {}
    for e in [e for e in children if not isinstance(e[0], tuple) and e[0].endswith("List")]:
        lists.setdefault(e[0], []).append((e[0][:-4], e[1], e[2]))
        children.remove(e)
    for name, items in lists.items():
        if name in _PAIRED_LISTS:
            # (type, value) pairs; the generator fails on an item without its type, which is hashed alone here.
            children.append((name, "", [tuple(e[2][:2]) if len(e[2]) >= 2 else e[2][0] for e in items if e[2]]))
        else:
            children.append((name, "", items))
    child_epcs: list[Any] = [("epc", e[1], []) for e in children if e[0] == "childEPCs"]
    children = [e for e in children if e[0] != "childEPCs"]
    if child_epcs:
        children.append(("childEPCs", "", child_epcs))
    corrected = [e if e[0] in _PAIRED_LISTS else correct_structure(e) for e in children]
    name = node[0]
    if name in ("inputEPC", "outputEPC"):
        return "epc", node[1], corrected
    if name in ("inputQuantity", "outputQuantity", "childQuantity") or (name == "quantity" and corrected):
        return "quantityElement", node[1], corrected
    return name, node[1], corrected


def expanded_vocabulary(document: dict[str, Any], expand: Callable[[Any], Any]) -> set[str]:
    """Every CBV or GS1 web-vocabulary URI in the document's JSON-LD expansion."""
    found: set[str] = set()
    stack = [expand(document)]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if v.startswith(("https://ref.gs1.org/cbv", "https://gs1.org/voc")):
                found.add(v)
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
    return found
