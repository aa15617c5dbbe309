// Checking a proof bundle in the browser, with WebCrypto and nothing from the server but the bundle.
//
// The same steps as `provenance verify` (pipeline/core/bundle.py), named the
// same way: the leaf hash is SHA-256(0x00 ‖ JCS(event)) (RFC 9162 §2.1.1),
// the inclusion path leads from it to the tree root (RFC 9162 §2.1.3.2),
// the block names that root and its hash is SHA-256(JCS(header)), and the
// signed checkpoint covers the block (directly, or through a chain of later
// headers and a consistency proof, RFC 9162 §2.1.4.2). The checkpoint's
// Ed25519 signature is checked when the browser's WebCrypto has Ed25519 and
// a verifier key is given.
"use strict";
(function (root) {
  const HEADER_FIELDS = ["log_id", "height", "prev_block_hash", "tree_size", "root", "first_offset",
    "last_offset", "first_event_time", "last_event_time", "created_at"];
  const HEX32 = /^[0-9a-f]{64}$/;

  class StepFailed extends Error {
    constructor(step, detail) {
      super(step + ": " + detail);
      this.step = step;
      this.detail = detail;
    }
  }

  const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  const fromB64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

  function fromHex(s, what) {
    if (typeof s !== "string" || !HEX32.test(s)) throw new StepFailed("bundle", what + " is not a 32-byte lowercase hex hash");
    const out = new Uint8Array(32);
    for (let i = 0; i < 32; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
    return out;
  }

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  }

  function subtle() {
    if (!root.crypto || !root.crypto.subtle) {
      throw new StepFailed("browser", "WebCrypto is only available on https:// or http://localhost pages; " +
        "open the dashboard there, or use `provenance verify`");
    }
    return root.crypto.subtle;
  }

  async function sha256(bytes) {
    return new Uint8Array(await subtle().digest("SHA-256", bytes));
  }
  const leafHash = (leaf) => sha256(concat(Uint8Array.of(0), leaf));
  const nodeHash = (l, r) => sha256(concat(Uint8Array.of(1), l, r));
  const bitLength = (n) => (n === 0 ? 0 : Math.floor(Math.log2(n)) + 1);
  const popCount = (n) => { let c = 0; for (; n > 0; n = Math.floor(n / 2)) c += n % 2; return c; };
  // Leaf indices stay below 2^53 (JSON numbers); plain division keeps the bit arithmetic exact there.
  const shr = (n) => Math.floor(n / 2);
  const odd = (n) => n % 2 === 1;

  /** The root that `path` proves leaf `index` of a tree of `size` leaves under. */
  async function rootFromInclusion(leaf, index, size, path) {
    if (!(Number.isSafeInteger(index) && Number.isSafeInteger(size) && index >= 0 && index < size)) {
      throw new StepFailed("inclusion proof", `leaf index ${index} is outside a tree of size ${size}`);
    }
    let inner = 0;
    for (let a = index, b = size - 1; a !== b; a = shr(a), b = shr(b)) inner++;
    let above = index;
    for (let i = 0; i < inner; i++) above = shr(above);
    const expected = inner + popCount(above);
    if (path.length !== expected) {
      throw new StepFailed("inclusion proof", `path has ${path.length} hashes, a leaf ${index} of size ${size} needs ${expected}`);
    }
    let fn = index, sn = size - 1, r = leaf;
    for (const p of path) {
      if (odd(fn) || fn === sn) {
        r = await nodeHash(p, r);
        while (!odd(fn) && fn !== 0) { fn = shr(fn); sn = shr(sn); }
      } else {
        r = await nodeHash(r, p);
      }
      fn = shr(fn); sn = shr(sn);
    }
    return r;
  }

  /** The (old, new) roots a consistency path proves for 0 < size1 < size2. */
  async function rootsFromConsistency(size1, size2, root1, path) {
    if (!(size1 > 0 && size1 < size2)) throw new StepFailed("checkpoint consistency", `no path from size ${size1} to ${size2}`);
    let fn = size1 - 1, sn = size2 - 1;
    while (odd(fn)) { fn = shr(fn); sn = shr(sn); }
    const hashes = fn === 0 ? [root1, ...path] : path.slice();
    if (!hashes.length) throw new StepFailed("checkpoint consistency", "empty consistency path");
    let fr = hashes[0], sr = hashes[0];
    for (const c of hashes.slice(1)) {
      if (sn === 0) throw new StepFailed("checkpoint consistency", "consistency path is too long");
      if (odd(fn) || fn === sn) {
        fr = await nodeHash(c, fr);
        sr = await nodeHash(c, sr);
        while (!odd(fn) && fn !== 0) { fn = shr(fn); sn = shr(sn); }
      } else {
        sr = await nodeHash(sr, c);
      }
      fn = shr(fn); sn = shr(sn);
    }
    if (sn !== 0) throw new StepFailed("checkpoint consistency", "consistency path is too short");
    return [fr, sr];
  }

  /** SHA-256(JCS(header)) in hex, the header being exactly the ten block fields. */
  async function blockHash(block) {
    const header = {};
    const extra = Object.keys(block).filter((k) => k !== "block_hash" && !HEADER_FIELDS.includes(k));
    const missing = HEADER_FIELDS.filter((k) => !(k in block));
    if (extra.length || missing.length) {
      throw new StepFailed("block hash", `header fields: missing [${missing}], unknown [${extra}]`);
    }
    for (const k of HEADER_FIELDS) header[k] = block[k];
    return toHex(await sha256(root.provenance.jcs.canonicalBytes(header)));
  }

  /** The note's signed text, its log lines, and its signature lines. */
  function parseCheckpoint(note) {
    const cut = note.lastIndexOf("\n\n");
    if (cut < 0) throw new StepFailed("checkpoint", "the note has no signature block");
    const text = note.slice(0, cut + 1);
    const lines = text.split("\n").slice(0, -1);
    const logs = {};
    for (const line of lines.slice(2)) {
      const f = line.split(" ");
      if (f.length === 5) logs[f[0]] = { height: Number(f[1]), tree_size: Number(f[2]), root: toHex(fromB64(f[3])), block_hash: f[4] };
    }
    const signatures = note.slice(cut + 2).split("\n").filter((l) => l.startsWith("\u2014 ")).map((l) => {
      const [, name, sig] = l.split(" ");
      return { name, raw: fromB64(sig) };
    });
    return { text, origin: lines[0], sequence: Number(lines[1]), logs, signatures };
  }

  async function checkSignature(cp, vkey) {
    // <name>+<key id, 8 hex>+<base64(0x01 ‖ key)>; the base64 part may itself hold "+".
    const m = /^([^+\s]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/=]+)$/.exec(vkey.trim());
    if (!m) throw new StepFailed("checkpoint signature", `not a verifier key: ${vkey.slice(0, 40)}`);
    const [, name, keyIdHex, b64] = m;
    const pub = fromB64(b64);
    if (pub.length !== 33 || pub[0] !== 1) throw new StepFailed("checkpoint signature", "the verifier key is not an Ed25519 key");
    const mine = cp.signatures.find((s) => s.name === name && toHex(s.raw.slice(0, 4)) === keyIdHex);
    if (!mine) throw new StepFailed("checkpoint signature", `no signature by ${name}+${keyIdHex}`);
    let key;
    try {
      key = await subtle().importKey("raw", pub.slice(1), { name: "Ed25519" }, false, ["verify"]);
    } catch (e) {
      if (e.name === "NotSupportedError") return "not checked: this browser's WebCrypto has no Ed25519";
      throw new StepFailed("checkpoint signature", `the verifier key cannot be used: ${e.message}`);
    }
    const ok = await subtle().verify({ name: "Ed25519" }, key, mine.raw.slice(4), new TextEncoder().encode(cp.text));
    if (!ok) throw new StepFailed("checkpoint signature", `the signature by ${name}+${keyIdHex} does not verify`);
    return `signed by ${name}+${keyIdHex}`;
  }

  async function checkCoverage(bundle, blockHashHex, vkey) {
    const raw = bundle.checkpoint;
    if (!raw || typeof raw.note !== "string") return null;
    const cp = parseCheckpoint(raw.note);
    const out = [];
    if (vkey) out.push({ step: "checkpoint signature", ok: true, detail: await checkSignature(cp, vkey) });
    const entry = cp.logs[bundle.log_id];
    const block = bundle.block;
    if (!entry) throw new StepFailed("checkpoint coverage", `checkpoint ${cp.sequence} names no block of ${bundle.log_id}`);
    if (entry.height < block.height) throw new StepFailed("checkpoint coverage", `checkpoint ${cp.sequence} stops at block ${entry.height}`);
    if (entry.height === block.height) {
      if (entry.block_hash !== blockHashHex) throw new StepFailed("checkpoint coverage", `checkpoint ${cp.sequence} signs block ${entry.height} as ${entry.block_hash}`);
    } else {
      let prev = { height: block.height, hash: blockHashHex };
      let last = block;
      for (const [i, h] of (raw.chain || []).entries()) {
        if (h.log_id !== block.log_id || h.height !== prev.height + 1 || h.prev_block_hash !== prev.hash) {
          throw new StepFailed("checkpoint chain", `chain[${i}] (block ${h.height}) does not follow block ${prev.height}`);
        }
        prev = { height: h.height, hash: await blockHash(h) };
        last = h;
      }
      if (prev.height !== entry.height || prev.hash !== entry.block_hash || last.tree_size !== entry.tree_size || last.root !== entry.root) {
        throw new StepFailed("checkpoint chain", `the chain ends at block ${prev.height}, the checkpoint signs block ${entry.height}`);
      }
      const path = (raw.consistency_path || []).map((h, i) => fromHex(h, `consistency_path[${i}]`));
      const [old, now] = await rootsFromConsistency(bundle.tree_size, entry.tree_size, fromHex(bundle.root, "root"), path);
      if (toHex(old) !== bundle.root || toHex(now) !== entry.root) {
        throw new StepFailed("checkpoint consistency", `the tree of size ${bundle.tree_size} is not a prefix of size ${entry.tree_size}`);
      }
    }
    out.push({ step: "checkpoint coverage", ok: true, detail: `checkpoint ${cp.sequence} covers block ${block.height}` +
      (entry.height > block.height ? ` (through block ${entry.height})` : "") });
    return out;
  }

  /**
   * Check a bundle; resolves to {ok, steps: [{step, ok, detail}], failed?: step name}.
   * `vkey` (the log's C2SP verifier key) is optional: without it the signature step is left out.
   */
  async function verifyBundle(bundle, vkey) {
    const steps = [];
    const pass = (step, detail) => steps.push({ step, ok: true, detail });
    try {
      if (!bundle || typeof bundle !== "object" || bundle.version !== 1) throw new StepFailed("bundle", "not a version 1 proof bundle");
      if (!bundle.event || typeof bundle.event !== "object") throw new StepFailed("bundle", "bundle.event is not an object");
      if (!bundle.block || typeof bundle.block !== "object") throw new StepFailed("bundle", "bundle.block is not an object");
      if (!Array.isArray(bundle.inclusion_path)) throw new StepFailed("bundle", "inclusion_path is not a list");
      const claimedLeaf = fromHex(bundle.leaf_hash, "leaf_hash");
      const rootHash = fromHex(bundle.root, "root");
      const path = bundle.inclusion_path.map((h, i) => fromHex(h, `inclusion_path[${i}]`));

      let leaf;
      try {
        leaf = await leafHash(root.provenance.jcs.canonicalBytes(bundle.event));
      } catch (e) {
        throw e instanceof StepFailed ? e : new StepFailed("leaf hash", "the event has no canonical form: " + e.message);
      }
      if (toHex(leaf) !== toHex(claimedLeaf)) {
        throw new StepFailed("leaf hash", `SHA-256(0x00 ‖ JCS(event)) = ${toHex(leaf)}, the bundle says ${bundle.leaf_hash}`);
      }
      pass("leaf hash", toHex(leaf));

      const computed = await rootFromInclusion(leaf, bundle.leaf_index, bundle.tree_size, path);
      if (toHex(computed) !== toHex(rootHash)) {
        throw new StepFailed("inclusion proof", `the path leads to root ${toHex(computed)}, the bundle says ${bundle.root}`);
      }
      pass("inclusion proof", `leaf ${bundle.leaf_index} of ${bundle.tree_size} in ${bundle.log_id}, ${path.length} hashes to the root`);

      const b = bundle.block;
      if (b.log_id !== bundle.log_id || b.tree_size !== bundle.tree_size || b.root !== bundle.root) {
        throw new StepFailed("block", `block ${b.height} of ${b.log_id} (size ${b.tree_size}, root ${b.root}) is not the proof's tree`);
      }
      const hash = await blockHash(b);
      if (hash !== b.block_hash) throw new StepFailed("block hash", `SHA-256(JCS(header)) = ${hash}, the bundle says ${b.block_hash}`);
      pass("block hash", `block ${b.height} of ${b.log_id}: ${hash}`);

      const coverage = await checkCoverage(bundle, hash, vkey);
      if (coverage) steps.push(...coverage);
      else steps.push({ step: "checkpoint", ok: null, detail: "no signed checkpoint covers this block yet" });
      return { ok: true, steps };
    } catch (e) {
      const step = e instanceof StepFailed ? e.step : "bundle";
      steps.push({ step, ok: false, detail: e instanceof StepFailed ? e.detail : String(e.message || e) });
      return { ok: false, failed: step, steps };
    }
  }

  root.provenance = Object.assign(root.provenance || {}, {
    verify: { verifyBundle, rootFromInclusion, rootsFromConsistency, blockHash, leafHash, sha256, toHex, parseCheckpoint, StepFailed },
  });
})(typeof window !== "undefined" ? window : globalThis);
