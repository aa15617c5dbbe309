// RFC 8785 (JCS) canonical JSON in the browser: the bytes the ledger hashes.
//
// JCS is defined in terms of ECMAScript, so the browser's own primitives are
// the reference: numbers are written by Number.prototype.toString (§3.2.2.3),
// strings by JSON.stringify's quoting (§3.2.2.2: only the two-character
// escapes and \u00xx for other controls, everything else raw UTF-8), and
// object keys sort by UTF-16 code units, which is what Array.prototype.sort
// compares (§3.2.3). The tests check this file against the same golden
// vectors as the Python encoder.
"use strict";
(function (root) {
  const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

  function quote(s) {
    if (LONE_SURROGATE.test(s)) throw new TypeError("JCS: string holds a lone surrogate: " + JSON.stringify(s));
    return JSON.stringify(s);
  }

  function serialize(value, path) {
    if (value === null) return "null";
    switch (typeof value) {
      case "boolean":
        return value ? "true" : "false";
      case "number":
        if (!Number.isFinite(value)) throw new TypeError("JCS: " + value + " at " + path + " is not a JSON number");
        return String(value); // -0 is written "0", as the RFC asks
      case "string":
        return quote(value);
      case "object": {
        if (Array.isArray(value)) {
          return "[" + value.map((v, i) => serialize(v, path + "[" + i + "]")).join(",") + "]";
        }
        const keys = Object.keys(value).sort();
        return "{" + keys.map((k) => quote(k) + ":" + serialize(value[k], path + "." + k)).join(",") + "}";
      }
      default:
        throw new TypeError("JCS: a " + typeof value + " at " + path + " has no JSON form");
    }
  }

  /** The canonical JSON text of a parsed JSON value. */
  function canonicalize(value) {
    return serialize(value, "$");
  }

  /** The canonical UTF-8 bytes of a parsed JSON value. */
  function canonicalBytes(value) {
    return new TextEncoder().encode(canonicalize(value));
  }

  root.provenance = Object.assign(root.provenance || {}, { jcs: { canonicalize, canonicalBytes } });
})(typeof window !== "undefined" ? window : globalThis);
