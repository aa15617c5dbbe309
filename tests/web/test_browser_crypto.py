"""The page's JCS encoder and proof verifier, run in Chromium against the Python reference.

The same golden vectors as the Python encoder, random JSON values against
`rfc8785`, the RFC 9162 vectors, and real bundles from a ledger file: each
verifies, and each tampering fails at the step `provenance verify` names.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from conftest import ROOT
from ledger_fixture import Ledger, build_ledger

from pipeline.core.bundle import StepFailed, verify_bundle
from pipeline.errors import InvalidChallenge
from pipeline.store.dashboard import WEB_ROOT

ORIGIN = "http://localhost"  # a secure context, so WebCrypto is there; every request is answered below
PAGE = "<!doctype html><meta charset=utf-8><script src=/web/jcs.js></script><script src=/web/verify.js></script>"
# A 32-byte hash from hex in the page; anything else throws, as the verifier's own parsing does.
HEX32_JS = """h => { if (!/^[0-9a-f]{64}$/.test(h)) throw new Error("not a 32-byte hash");
                    return Uint8Array.from(h.match(/../g), x => parseInt(x, 16)); }"""
VECTORS = json.loads((ROOT / "tests" / "vectors" / "rfc9162_vectors.json").read_text())


def _golden() -> dict[str, tuple[str, bytes]]:
    spec = importlib.util.spec_from_file_location("canonical_vectors", ROOT / "tests" / "unit" / "test_canonical.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.GOLDEN)


@pytest.fixture(scope="module")
def page(browser: Any) -> Iterator[Any]:
    """A page that has loaded jcs.js and verify.js from the package, with no server behind it."""
    pg = browser.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))

    def answer(route: Any) -> None:
        path = route.request.url[len(ORIGIN):].split("?")[0]
        if path == "/":
            route.fulfill(body=PAGE, content_type="text/html")
        elif path.startswith("/web/") and (WEB_ROOT / path[5:]).is_file():
            route.fulfill(path=str(WEB_ROOT / path[5:]))
        else:
            route.fulfill(status=404, body="")

    pg.route(f"{ORIGIN}/**", answer)
    pg.goto(f"{ORIGIN}/")
    assert pg.evaluate("window.isSecureContext && typeof provenance.verify.verifyBundle") == "function"
    yield pg
    assert errors == []
    pg.close()


def js_canonical(page: Any, texts: list[str]) -> list[Any]:
    """Each JSON text parsed and canonicalised in the browser: a list of byte lists, or the error message."""
    return page.evaluate("""texts => texts.map(t => {
        try { return Array.from(provenance.jcs.canonicalBytes(JSON.parse(t))); } catch (e) { return String(e.message); }
    })""", texts)


def test_jcs_golden_vectors(page: Any) -> None:
    golden = _golden()
    assert len(golden) >= 8
    out = js_canonical(page, [text for text, _ in golden.values()])
    for (name, (_, expected)), got in zip(golden.items(), out):
        assert bytes(got) == expected, f"{name}: {bytes(got)!r} != {expected!r}"


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    chars = ["a", "Z", "é", "\x00", "\x1f", "\x7f", "\n", '"', "\\", "/", "\u2028", "\ufb33", "\uffff",
             "\U0001f600", "\U0010ffff", "北"]
    pick = rng.randrange(9 if depth < 3 else 6)
    if pick == 0:
        return rng.choice([None, True, False])
    if pick == 1:
        return rng.randint(-(2**53) + 1, 2**53 - 1)
    if pick == 2:
        return rng.choice([rng.uniform(-1e6, 1e6), rng.random() * 10 ** rng.randint(-320, 308), 0.1, 5.0, -0.0, 1e21])
    if pick in (3, 4, 5):
        return "".join(rng.choice(chars) for _ in range(rng.randrange(6)))
    if pick in (6, 7):
        return {"".join(rng.choice(chars) for _ in range(rng.randrange(4))): _random_value(rng, depth + 1)
                for _ in range(rng.randrange(5))}
    return [_random_value(rng, depth + 1) for _ in range(rng.randrange(5))]


def test_jcs_matches_the_reference_on_random_values(page: Any) -> None:
    rng = random.Random(8785)
    values = [_random_value(rng) for _ in range(400)]
    # Raw UTF-8 text, as the store sends bundles. (Chromium 150's JSON.parse misreads a one-character
    # escaped key such as "\\u5317" once it has parsed the key "\\\\": a V8 bug, not the encoder's.)
    out = js_canonical(page, [json.dumps(v, ensure_ascii=False) for v in values])
    for value, got in zip(values, out):
        assert bytes(got) == rfc8785.dumps(value), value


def test_jcs_refuses_what_has_no_canonical_form(page: Any) -> None:
    assert "lone surrogate" in js_canonical(page, ['"\\ud800x"'])[0]
    assert "lone surrogate" in js_canonical(page, ['{"\\udc00": 1}'])[0]
    assert "not a JSON number" in page.evaluate("() => { try { provenance.jcs.canonicalize([1, NaN]); }"
                                                " catch (e) { return e.message; } }")


def test_inclusion_vectors(page: Any) -> None:
    cases = VECTORS["inclusion"] + VECTORS["inclusion_negative"] + VECTORS["upstream_probes"]["inclusion"]
    got = page.evaluate("""async cases => {
        const V = provenance.verify, hx = """ + HEX32_JS + """;
        const out = [];
        for (const c of cases) {
            try { hx(c.root); out.push(V.toHex(await V.rootFromInclusion(hx(c.leaf_hash), c.leaf_index, c.tree_size,
                                                                         c.path.map(hx))) === c.root); }
            catch (e) { out.push(false); }
        }
        return out; }""", cases)
    assert got == [not c.get("must_fail", False) for c in cases]


def test_consistency_vectors(page: Any) -> None:
    """The browser needs consistency only between growing trees (a later signed block), 0 < size1 < size2."""
    cases = [c for c in VECTORS["consistency"] + VECTORS["consistency_negative"]
             + VECTORS["upstream_probes"]["consistency"] if 0 < c["size1"] < c["size2"]]
    assert sum(not c.get("must_fail", False) for c in cases) >= 4 and sum(c.get("must_fail", False) for c in cases) >= 4
    got = page.evaluate("""async cases => {
        const V = provenance.verify, hx = """ + HEX32_JS + """;
        const out = [];
        for (const c of cases) {
            try { hx(c.root2); const [a, b] = await V.rootsFromConsistency(c.size1, c.size2, hx(c.root1), c.path.map(hx));
                  out.push(V.toHex(a) === c.root1 && V.toHex(b) === c.root2); }
            catch (e) { out.push(false); }
        }
        return out; }""", cases)
    assert got == [not c.get("must_fail", False) for c in cases]


# ---- whole bundles, against `provenance verify` -----------------------------------------


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    return build_ledger(tmp_path_factory.mktemp("browser-ledger"), partitions=2, events=300)


def js_verify(page: Any, bundles: list[dict[str, Any]], vkey: str) -> list[dict[str, Any]]:
    return page.evaluate("async ([bs, key]) => Promise.all(bs.map(b => provenance.verify.verifyBundle(b, key)))",
                         [bundles, vkey])


def python_step(bundle: dict[str, Any], ledger: Ledger) -> str | None:
    try:
        verify_bundle(bundle, ledger.verifier)
    except StepFailed as exc:
        return exc.step
    except InvalidChallenge:
        return "bundle"
    return None


def test_real_bundles_verify_in_the_browser(page: Any, ledger: Ledger) -> None:
    ids = [i for log in ledger.log_ids for i in ledger.event_ids[log][::17]]
    bundles = [ledger.bundle(i) for i in ids]
    assert any(b["checkpoint"].get("consistency_path") for b in bundles)  # some are covered by a later block
    assert any("consistency_path" not in b["checkpoint"] for b in bundles)
    for bundle, result in zip(bundles, js_verify(page, bundles, ledger.vkey)):
        assert result["ok"], result
        steps = [s["step"] for s in result["steps"]]
        assert steps == ["leaf hash", "inclusion proof", "block hash", "checkpoint signature", "checkpoint coverage"]
        assert result["steps"][3]["detail"] == f"signed by {'+'.join(ledger.vkey.split('+')[:2])}"  # really checked
        assert python_step(bundle, ledger) is None


def _flip(h: str) -> str:
    return ("1" if h[0] == "0" else "0") + h[1:]


def _tamper_note(b: dict[str, Any]) -> None:
    lines = b["checkpoint"]["note"].split("\n")
    lines[1] = str(int(lines[1]) + 1)  # the sequence: the signature no longer covers the text
    b["checkpoint"]["note"] = "\n".join(lines)


TAMPERINGS: dict[str, Callable[[dict[str, Any]], None]] = {
    "event field": lambda b: b["event"].update(carrier=b["event"]["carrier"] + "x"),
    "event field added": lambda b: b["event"].update(extra=1),
    "leaf hash": lambda b: b.update(leaf_hash=_flip(b["leaf_hash"])),
    "path hash": lambda b: b["inclusion_path"].__setitem__(0, _flip(b["inclusion_path"][0])),
    "path dropped": lambda b: b["inclusion_path"].pop(),
    "leaf index": lambda b: b.update(leaf_index=b["leaf_index"] + 1),
    "root": lambda b: b.update(root=_flip(b["root"])),
    "block root": lambda b: b["block"].update(root=_flip(b["block"]["root"])),
    "block time": lambda b: b["block"].update(created_at="2020-01-01T00:00:00Z"),
    "block hash": lambda b: b["block"].update(block_hash=_flip(b["block"]["block_hash"])),
    "checkpoint sequence": _tamper_note,
    "chain header": lambda b: b["checkpoint"]["chain"][0].update(last_offset=b["checkpoint"]["chain"][0]["last_offset"] + 1),
    "consistency path": lambda b: b["checkpoint"]["consistency_path"].__setitem__(
        0, _flip(b["checkpoint"]["consistency_path"][0])),
}


def test_tampered_bundles_fail_at_the_same_step_as_provenance_verify(page: Any, ledger: Ledger) -> None:
    ids = [i for log in ledger.log_ids for i in ledger.event_ids[log][::29]]
    later = next(b for b in map(ledger.bundle, ids) if b["checkpoint"].get("chain") and b["inclusion_path"])
    cases, expected = [], []
    for name, tamper in TAMPERINGS.items():
        bundle = copy.deepcopy(later)
        tamper(bundle)
        step = python_step(bundle, ledger)
        assert step is not None, f"{name}: the Python verifier accepts it"
        cases.append(bundle)
        expected.append((name, step))
    results = js_verify(page, cases, ledger.vkey)
    assert [(name, r.get("failed")) for (name, _), r in zip(expected, results)] == expected
    assert all(not r["ok"] and r["steps"][-1]["ok"] is False for r in results)
    # A key that is not the log's: the signature step names it.
    attacker = js_verify(page, [later], ledger.attacker.verifier_key)[0]
    assert attacker["failed"] == "checkpoint signature"
