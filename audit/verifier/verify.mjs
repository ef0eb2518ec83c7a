#!/usr/bin/env node
// Check a BYOK Portal audit export offline: an independent verifier written from
// docs/audit-format.md alone (Node.js 20, standard library only: no npm packages).
//
//   node verify.mjs EXPORT.json[.gz] --public-key KEY.pem [--allow-gaps] [--chain org:<id>]
//
// Exit status, as `python -m audit.verify`: 0 OK, 1 FAILED, 2 ERROR (unusable input),
// 3 NOT YET SIGNED (intact, newest events after the newest digest), 4 UNSIGNED (intact, no
// digest covers any event yet).

import { createHash, createPublicKey, verify as verifySignature } from "node:crypto";
import { readFileSync, realpathSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { gunzipSync } from "node:zlib";

const EXIT = { OK: 0, FAILED: 1, ERROR: 2, NOT_YET_SIGNED: 3, UNSIGNED: 4 };
const MAX_DOCUMENT_DEPTH = 500;
const DIGEST_DOMAIN = "byok-portal-audit-digest/v1\n";
const DIGEST_SIGNED_FIELDS = [
  "digestVersion", "chain", "sequence", "headHash", "signedAt", "keyId", "previousSignature",
];
const ED25519_SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

class Unusable extends Error {}
class NoBytes extends Error {}

// --- JSON, keeping each number's text (format 1 writes integers and other numbers apart) ----

class JsonNumber {
  constructor(text) { this.text = text; }
  get isInteger() { return !/[.eE]/.test(this.text); }
  get double() { return Number(this.text); }
}

function parseJson(text) {
  let at = 0;
  const fail = (what) => { throw new Unusable(`not JSON: ${what} at character ${at}`); };
  const space = () => { while (at < text.length && " \t\n\r".includes(text[at])) at += 1; };
  function value(depth) {
    space();
    const c = text[at];
    if (c === "{") return object(depth + 1);
    if (c === "[") return array(depth + 1);
    if (c === '"') return string();
    if (c === "-" || (c >= "0" && c <= "9")) return number();
    for (const [word, result] of [["true", true], ["false", false], ["null", null]]) {
      if (text.startsWith(word, at)) { at += word.length; return result; }
    }
    return fail("an unexpected character");
  }
  function nested(depth) {
    if (depth > MAX_DOCUMENT_DEPTH) {
      throw new Unusable(`the export is nested deeper than ${MAX_DOCUMENT_DEPTH} levels`);
    }
  }
  function object(depth) {
    nested(depth);
    at += 1;
    const result = new Map();
    space();
    if (text[at] === "}") { at += 1; return result; }
    for (;;) {
      space();
      if (text[at] !== '"') fail("a missing object key");
      const key = string();
      space();
      if (text[at] !== ":") fail("a missing colon");
      at += 1;
      result.set(key, value(depth));
      space();
      if (text[at] === ",") { at += 1; continue; }
      if (text[at] === "}") { at += 1; return result; }
      fail("a missing comma or brace");
    }
  }
  function array(depth) {
    nested(depth);
    at += 1;
    const result = [];
    space();
    if (text[at] === "]") { at += 1; return result; }
    for (;;) {
      result.push(value(depth));
      space();
      if (text[at] === ",") { at += 1; continue; }
      if (text[at] === "]") { at += 1; return result; }
      fail("a missing comma or bracket");
    }
  }
  function string() {
    at += 1;
    let out = "";
    for (;;) {
      const c = text[at];
      if (c === undefined) fail("an unterminated string");
      if (c === '"') { at += 1; return out; }
      if (c < " ") fail("a control character in a string");
      if (c !== "\\") { out += c; at += 1; continue; }
      const e = text[at + 1];
      const simple = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };
      if (e in simple) { out += simple[e]; at += 2; continue; }
      if (e === "u" && /^[0-9a-fA-F]{4}$/.test(text.slice(at + 2, at + 6))) {
        out += String.fromCharCode(parseInt(text.slice(at + 2, at + 6), 16));
        at += 6;
        continue;
      }
      fail("a bad escape");
    }
  }
  function number() {
    const pattern = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?/y;
    pattern.lastIndex = at;
    const match = pattern.exec(text);
    if (!match) fail("a bad number");
    at += match[0].length;
    return new JsonNumber(match[0]);
  }
  const result = value(0);
  space();
  if (at !== text.length) fail("extra data");
  return result;
}

const isObject = (v) => v instanceof Map;
const isInt = (v) => v instanceof JsonNumber && v.isInteger;
const intOf = (v) => BigInt(v.text);
const get = (map, key) => (map.has(key) ? map.get(key) : null);

// --- Canonical bytes (docs/audit-format.md, sections 2 and 3) -------------------------------

const ESCAPES = { '"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t" };

function quote(text) {
  if (!text.isWellFormed()) throw new NoBytes("a string with a lone surrogate");
  let out = '"';
  for (const c of text) {
    if (c in ESCAPES) out += ESCAPES[c];
    else if (c < " ") out += "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0");
    else out += c;
  }
  return out + '"';
}

function finiteDouble(number) {
  const x = number.double;
  if (!Number.isFinite(x)) throw new NoBytes("a number beyond the range of a double");
  return x;
}

// Format 2: RFC 8785, every number an IEEE-754 double written as ECMAScript writes it.
function jcs(value) {
  if (value === null) return "null";
  if (value === true) return "true";
  if (value === false) return "false";
  if (typeof value === "string") return quote(value);
  if (value instanceof JsonNumber) return String(finiteDouble(value)); // -0 gives "0"
  if (Array.isArray(value)) return "[" + value.map(jcs).join(",") + "]";
  const keys = [...value.keys()].sort(); // UTF-16 code unit order
  return "{" + keys.map((k) => quote(k) + ":" + jcs(value.get(k))).join(",") + "}";
}

// Shortest round-trip digits of a positive double x: x = 0.digits × 10^point.
function shortestDigits(x) {
  const [mantissa, exponent = "0"] = String(x).split("e");
  const [whole, fraction = ""] = mantissa.split(".");
  const all = whole + fraction;
  const leadingZeros = all.length - all.replace(/^0+/, "").length;
  const digits = all.slice(leadingZeros).replace(/0+$/, "");
  return { digits, point: whole.length + Number(exponent) - leadingZeros };
}

// Python's repr of a double (format 1).
function pythonRepr(x) {
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  if (x < 0) return "-" + pythonRepr(-x);
  const { digits, point } = shortestDigits(x);
  const e = point - 1; // x = d.ddd × 10^e
  if (e >= -4 && e <= 15) {
    if (point <= 0) return "0." + "0".repeat(-point) + digits;
    if (point >= digits.length) return digits + "0".repeat(point - digits.length) + ".0";
    return digits.slice(0, point) + "." + digits.slice(point);
  }
  const head = digits[0] + (digits.length > 1 ? "." + digits.slice(1) : "");
  return `${head}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
}

function byCodePoint(a, b) {
  const pa = [...a], pb = [...b];
  for (let i = 0; i < Math.min(pa.length, pb.length); i += 1) {
    const d = pa[i].codePointAt(0) - pb[i].codePointAt(0);
    if (d !== 0) return d;
  }
  return pa.length - pb.length;
}

// Format 1: Python's json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).
function pythonDumps(value) {
  if (value === null) return "null";
  if (value === true) return "true";
  if (value === false) return "false";
  if (typeof value === "string") return quote(value);
  if (value instanceof JsonNumber) {
    if (value.isInteger) return BigInt(value.text).toString();
    const x = value.double;
    if (!Number.isFinite(x)) return x > 0 ? "Infinity" : "-Infinity";
    return pythonRepr(x);
  }
  if (Array.isArray(value)) return "[" + value.map(pythonDumps).join(",") + "]";
  const keys = [...value.keys()].sort(byCodePoint);
  return "{" + keys.map((k) => quote(k) + ":" + pythonDumps(value.get(k))).join(",") + "}";
}

function recordBytes(record, hashFormat) {
  if (hashFormat === 2n) return Buffer.from(jcs(record), "utf8");
  if (hashFormat === 1n) return Buffer.from(pythonDumps(record), "utf8");
  throw new NoBytes("unknown hash format");
}

function linkHash(chain, sequence, prevHash, record, hashFormat) {
  return createHash("sha256")
    .update(Buffer.from(`${chain}\n${sequence}\n${prevHash}\n`, "utf8"))
    .update(recordBytes(record, hashFormat))
    .digest("hex");
}

function digestMessage(digest) {
  const fields = new Map(DIGEST_SIGNED_FIELDS.map((name) => [name, get(digest, name)]));
  return Buffer.concat([Buffer.from(DIGEST_DOMAIN, "utf8"), Buffer.from(jcs(fields), "utf8")]);
}

// --- Input ------------------------------------------------------------------------------------

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function loadPublicKey(text) {
  text = text.trim();
  let key;
  try {
    if (text.startsWith("-----BEGIN")) {
      key = createPublicKey(text);
    } else {
      if (!BASE64.test(text)) throw new Error("not base64");
      const raw = Buffer.from(text, "base64");
      if (raw.length !== 32) throw new Error("not 32 bytes");
      key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: "der", type: "spki" });
    }
  } catch (error) {
    throw new Unusable(`Cannot read the public key: ${error.message}`);
  }
  if (key.asymmetricKeyType !== "ed25519") throw new Unusable("The public key is not an Ed25519 key.");
  const raw = key.export({ format: "der", type: "spki" }).subarray(-32);
  return { key, keyId: createHash("sha256").update(raw).digest("hex").slice(0, 16) };
}

function loadExport(path) {
  let data = readFileSync(path);
  let document;
  try {
    if (data[0] === 0x1f && data[1] === 0x8b) data = gunzipSync(data);
    const text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(data);
    document = parseJson(text);
  } catch (error) {
    if (error instanceof Unusable) throw new Unusable(`${path} is ${error.message}`);
    throw new Unusable(`${path} is not JSON: ${error.message}`);
  }
  if (!isObject(document) || !Array.isArray(get(document, "Records"))) {
    throw new Unusable(`${path} is not an audit export: no "Records" list.`);
  }
  if (!Array.isArray(get(document, "Chain"))) throw new Unusable(`${path} has no "Chain".`);
  if (document.has("Digests") && !Array.isArray(document.get("Digests"))) {
    throw new Unusable(`${path}: "Digests" is not a list.`);
  }
  return document;
}

function chainName(document, chainArg) {
  const names = new Set();
  const add = (v) => { if (typeof v === "string") names.add(v); };
  add(get(document, "ChainName"));
  for (const e of document.get("Chain")) if (isObject(e)) add(get(e, "chain"));
  for (const d of get(document, "Digests") || []) if (isObject(d)) add(get(d, "chain"));
  if (chainArg) names.add(chainArg);
  if (names.size > 1) throw new Unusable(`The export mixes chains: ${[...names].sort().join(", ")}.`);
  if (names.size === 0) throw new Unusable("The export's chain is unknown: pass --chain org:<id>.");
  return [...names][0];
}

// --- Checks (docs/audit-format.md, sections 3 and 4) ------------------------------------------

function checkLinks(document, chain, report, allowGaps) {
  const records = document.get("Records");
  const entries = document.get("Chain");
  report.events = records.length;
  const links = new Map(); // sequence (as text) -> stored hash
  if (records.length !== entries.length) {
    report.problems.push(`${records.length} records but ${entries.length} chain entries.`);
    return links;
  }
  let walk = [];
  for (let i = 0; i < records.length; i += 1) {
    const record = records[i], entry = entries[i];
    if (!isObject(record) || !isObject(entry)) {
      report.problems.push(`Position ${i + 1}: not a JSON object.`);
      return links;
    }
    const id = get(record, "eventID");
    if (typeof id !== "string" || id !== get(entry, "eventID")) {
      report.problems.push(`Position ${i + 1}: the record is not the chain entry's event.`);
      return links;
    }
    if (!isInt(get(entry, "sequence"))) {
      report.problems.push(`Position ${i + 1}: the chain entry has no sequence.`);
      return links;
    }
    const format = entry.has("hashFormat") ? entry.get("hashFormat") : new JsonNumber("1");
    walk.push({
      sequence: intOf(entry.get("sequence")), prevHash: get(entry, "prevHash"),
      hash: get(entry, "hash"), format, record,
    });
  }
  if (walk.length >= 2 && walk[0].sequence > walk[walk.length - 1].sequence) walk = walk.reverse();
  let previous = null;
  for (const link of walk) {
    const where = `Link ${link.sequence} (event ${get(link.record, "eventID")})`;
    if (previous !== null) {
      if (link.sequence <= previous.sequence) {
        report.problems.push(`${where} comes after link ${previous.sequence}: re-ordered or duplicated.`);
        return links;
      }
      if (link.sequence !== previous.sequence + 1n && !allowGaps) {
        const missing = link.sequence - previous.sequence - 1n;
        report.problems.push(`${missing} event(s) missing between link ${previous.sequence} and link ${link.sequence}.`);
      } else if (link.sequence === previous.sequence + 1n && !sameText(link.prevHash, previous.hash)) {
        report.problems.push(`${where} does not point to link ${previous.sequence}.`);
      }
    }
    if (!isInt(link.format) || ![1n, 2n].includes(intOf(link.format))) {
      report.problems.push(`${where} has an unknown hash format.`);
    } else if (!rehashes(chain, link)) {
      report.problems.push(`${where}: the record was changed after it was written.`);
    }
    links.set(String(link.sequence), link.hash);
    report.sequences.push(link.sequence);
    previous = link;
  }
  return links;
}

const sameText = (a, b) => typeof a === "string" && a === b;

function rehashes(chain, link) {
  if (typeof link.prevHash !== "string") return false;
  try {
    return linkHash(chain, link.sequence, link.prevHash, link.record, intOf(link.format)) === link.hash;
  } catch (error) {
    if (error instanceof NoBytes) return false;
    throw error;
  }
}

function signatureValid(key, digest) {
  const signature = get(digest, "signature");
  if (typeof signature !== "string" || !BASE64.test(signature)) return false;
  try {
    return verifySignature(null, digestMessage(digest), key, Buffer.from(signature, "base64"));
  } catch {
    return false;
  }
}

function checkDigests(document, chain, key, links, report, allowGaps) {
  const digests = get(document, "Digests") || [];
  report.digests = digests.length;
  if (links.size === 0) return;
  const sequences = [...links.keys()].map(BigInt);
  const first = sequences.reduce((a, b) => (b < a ? b : a));
  const last = sequences.reduce((a, b) => (b > a ? b : a));
  let previous = null;
  for (const digest of digests) {
    if (!isObject(digest) || !isInt(get(digest, "sequence"))) {
      report.problems.push("A digest is not a JSON object with a sequence.");
      continue;
    }
    const sequence = intOf(digest.get("sequence"));
    const when = `The digest of link ${sequence}`;
    if (get(digest, "chain") !== chain) { report.problems.push(`${when} is for another chain.`); continue; }
    if (get(digest, "keyId") !== report.keyId) {
      report.problems.push(`${when} was signed by another key (the public key given is ${report.keyId}).`);
      continue;
    }
    if (!signatureValid(key, digest)) { report.problems.push(`${when} has an invalid signature.`); continue; }
    if (previous !== null) {
      if (sequence <= previous.sequence) report.problems.push(`${when} is out of order.`);
      else if (!sameText(get(digest, "previousSignature"), previous.signature)) {
        report.problems.push(`${when} does not follow the digest of link ${previous.sequence}: a digest between them is missing.`);
      }
    }
    previous = { sequence, signature: get(digest, "signature") };
    if (sequence < first || sequence > last) {
      report.notes.push(`${when} is outside the exported links ${first}–${last}.`);
      continue;
    }
    if (!links.has(String(sequence))) {
      const message = `Link ${sequence} is missing from the export, yet the digest names it.`;
      (allowGaps ? report.notes : report.problems).push(message);
      continue;
    }
    if (!sameText(links.get(String(sequence)), get(digest, "headHash"))) {
      report.problems.push(`Link ${sequence} does not match the digest of link ${sequence}: the chain was rewritten.`);
      continue;
    }
    if (report.newestCovered === null || sequence > report.newestCovered) report.newestCovered = sequence;
  }
}

function status(report) {
  if (report.problems.length) return EXIT.FAILED;
  const unsigned = unsignedLinks(report);
  if (report.sequences.length === 0 || unsigned.length === 0) return EXIT.OK;
  return report.newestCovered === null ? EXIT.UNSIGNED : EXIT.NOT_YET_SIGNED;
}

const unsignedLinks = (report) =>
  report.sequences.filter((s) => report.newestCovered === null || s > report.newestCovered);

function every(seconds) {
  if (seconds === null || seconds <= 0n) return "periodically";
  for (const [unit, name] of [[3600n, "hour"], [60n, "minute"], [1n, "second"]]) {
    if (seconds % unit === 0n) {
      const count = seconds / unit;
      return count === 1n ? `every ${name}` : `every ${count} ${name}s`;
    }
  }
  return "periodically";
}

function nextDigest(document) {
  const schedule = get(document, "DigestSchedule");
  const at = isObject(schedule) ? get(schedule, "nextDigestAt") : null;
  const interval = isObject(schedule) ? get(schedule, "intervalSeconds") : null;
  const cadence = every(isInt(interval) ? intOf(interval) : null);
  if (typeof at === "string") {
    return `Digests are signed ${cadence}; the next one was due at about ${at} when this was exported: export again after it.`;
  }
  return `Digests are signed ${cadence}: export again after the next one.`;
}

function main(argv) {
  const args = { allowGaps: false, chain: null, publicKey: null, export: null };
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === "--allow-gaps") args.allowGaps = true;
    else if (argv[i] === "--chain") args.chain = argv[++i];
    else if (argv[i] === "--public-key") args.publicKey = argv[++i];
    else args.export = argv[i];
  }
  if (!args.export || !args.publicKey) {
    console.error("usage: node verify.mjs EXPORT.json --public-key KEY [--allow-gaps] [--chain org:<id>]");
    return EXIT.ERROR;
  }
  const report = { problems: [], notes: [], events: 0, digests: 0, sequences: [], newestCovered: null, keyId: "" };
  let document;
  try {
    const { key, keyId } = loadPublicKey(readFileSync(args.publicKey, "utf8"));
    report.keyId = keyId;
    document = loadExport(args.export);
    const chain = chainName(document, args.chain);
    const links = checkLinks(document, chain, report, args.allowGaps);
    checkDigests(document, chain, key, links, report, args.allowGaps);
  } catch (error) {
    if (!(error instanceof Unusable) && !error.code) throw error; // a bug: fail loudly
    console.error(`ERROR: ${error.message}`);
    return EXIT.ERROR;
  }
  for (const note of report.notes) console.log(`note: ${note}`);
  const verdict = status(report);
  const unsigned = unsignedLinks(report);
  const span = unsigned.length ? `links ${unsigned[0]}–${unsigned[unsigned.length - 1]}` : "";
  const hint = args.allowGaps
    ? " In a filtered export a digest vouches only for the link it names: export the whole log to have every event vouched for."
    : "";
  if (verdict === EXIT.FAILED) {
    for (const problem of report.problems) console.log(`FAILED: ${problem}`);
    console.log(`FAILED: ${report.problems.length} problem(s) found.`);
  } else if (verdict === EXIT.OK) {
    console.log(`OK: ${report.events} event(s) intact; ${report.digests} digest(s) verified, signed by key ${report.keyId}.`);
  } else if (verdict === EXIT.UNSIGNED) {
    console.log(`UNSIGNED: the chain is intact (${report.events} event(s), ${span}), but no signed digest covers any of them yet, so nothing vouches for them against a rewrite. ${nextDigest(document)}${hint}`);
  } else {
    console.log(`NOT YET SIGNED: the chain is intact (${report.events} event(s)); every event up to link ${report.newestCovered} is vouched for by digests signed by key ${report.keyId}, but the newest ${unsigned.length} event(s) (${span}) are not signed yet. ${nextDigest(document)}${hint}`);
  }
  return verdict;
}

export { jcs, linkHash, main, parseJson, pythonDumps };

// Run as a program (not when imported, e.g. by the test suite's cross-checks).
if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  process.exitCode = main(process.argv.slice(2));
}
