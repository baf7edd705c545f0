// JSON read and written exactly as the `vsgd` CLI's serde_json (1.0.x, default features) does,
// so that `replay.mjs` prints the same bytes as `vsgd replay`:
// - numbers are parsed like serde_json without `float_roundtrip`: the decimal significand is
//   accumulated in a u64 (digits past its range are dropped), converted to f64 and then
//   multiplied or divided by a power of ten — NOT always the correctly rounded value that
//   JSON.parse gives (they differ in the last bit for some 17+ digit inputs);
// - integers keep their kind (u64, i64) for `asU64`;
// - objects are Maps (serde_json's default Map is a BTreeMap: printed with sorted keys);
// - f64 values are printed like zmij (serde_json's formatter): the shortest round-trip digits,
//   fixed notation for decimal exponents -5..=15 (integers get ".0"), otherwise
//   `d.ddde+X` / `de-X`; non-finite values print as `null`.

/** A JSON number with its serde_json kind: "u" (u64), "i" (negative i64) or "f" (f64). */
export class JsonNumber {
  constructor(kind, value, big = null) {
    this.kind = kind;
    /** As serde_json's `as_f64`. */
    this.value = value;
    /** The integer, for kinds "u" and "i". */
    this.big = big;
  }
  /** serde_json's `as_u64`: the integer for kind "u", otherwise null. */
  asU64() {
    return this.kind === "u" ? this.big : null;
  }
}

const POW10 = Array.from({ length: 309 }, (_, k) => Number(`1e${k}`));
const U64_MAX = (1n << 64n) - 1n;
const I32_MAX = 2147483647;

class ParseError extends Error {}

/** f64_from_parts of serde_json (no float_roundtrip). */
function fromParts(positive, significand, exponent) {
  let f = Number(significand); // u64 as f64: round to nearest, ties to even
  for (;;) {
    const e = Math.abs(exponent);
    if (e < POW10.length) {
      if (exponent >= 0) {
        f *= POW10[e];
        if (!Number.isFinite(f)) throw new ParseError("number out of range");
      } else {
        f /= POW10[e];
      }
      break;
    }
    if (f === 0) break;
    if (exponent >= 0) throw new ParseError("number out of range");
    f /= 1e308;
    exponent += 308;
  }
  return positive ? f : -f;
}

/** Parses JSON text into plain values: Map, Array, string, boolean, null, JsonNumber. */
export function parse(text) {
  let i = 0;
  let depth = 0;
  const peek = () => text.charCodeAt(i); // NaN past the end
  const isDigit = (c) => c >= 48 && c <= 57;
  const ws = () => {
    for (;;) {
      const c = peek();
      if (c === 32 || c === 10 || c === 9 || c === 13) i++;
      else return;
    }
  };
  const fail = (msg) => {
    throw new ParseError(`${msg} at offset ${i}`);
  };

  function exponentPart(positive, significand, startingExp) {
    i++; // e or E
    let positiveExp = true;
    if (text[i] === "+") i++;
    else if (text[i] === "-") {
      positiveExp = false;
      i++;
    }
    if (!isDigit(peek())) fail("invalid number");
    let exp = 0;
    while (isDigit(peek())) {
      const d = peek() - 48;
      if (exp >= Math.floor(I32_MAX / 10) && (exp > Math.floor(I32_MAX / 10) || d > I32_MAX % 10)) {
        // Exponent overflow: 0 for a zero significand or a negative exponent, else an error.
        if (significand !== 0n && positiveExp) fail("number out of range");
        while (isDigit(peek())) i++;
        return positive ? 0 : -0;
      }
      exp = exp * 10 + d;
      i++;
    }
    // i32 saturating add/sub
    let finalExp = positiveExp ? startingExp + exp : startingExp - exp;
    finalExp = Math.max(-I32_MAX - 1, Math.min(I32_MAX, finalExp));
    return fromParts(positive, significand, finalExp);
  }

  function decimalPart(positive, significand, expBefore) {
    i++; // .
    let expAfter = 0;
    while (isDigit(peek())) {
      const d = BigInt(peek() - 48);
      const next = significand * 10n + d;
      if (next > U64_MAX) {
        // Ignore every further digit.
        while (isDigit(peek())) i++;
        const exponent = expBefore + expAfter;
        if (text[i] === "e" || text[i] === "E") return exponentPart(positive, significand, exponent);
        return fromParts(positive, significand, exponent);
      }
      significand = next;
      expAfter -= 1;
      i++;
    }
    if (expAfter === 0) fail("invalid number");
    const exponent = expBefore + expAfter;
    if (text[i] === "e" || text[i] === "E") return exponentPart(positive, significand, exponent);
    return fromParts(positive, significand, exponent);
  }

  function afterInteger(positive, significand) {
    const c = text[i];
    if (c === ".") return new JsonNumber("f", decimalPart(positive, significand, 0));
    if (c === "e" || c === "E") return new JsonNumber("f", exponentPart(positive, significand, 0));
    if (positive) return new JsonNumber("u", Number(significand), significand);
    if (significand === 0n || significand > 1n << 63n) {
      // -0, or below i64::MIN: a float
      return new JsonNumber("f", -Number(significand));
    }
    return new JsonNumber("i", -Number(significand), -significand);
  }

  function number() {
    let positive = true;
    if (text[i] === "-") {
      positive = false;
      i++;
    }
    const c = peek();
    if (c === 48) {
      i++;
      if (isDigit(peek())) fail("invalid number");
      return afterInteger(positive, 0n);
    }
    if (!(c >= 49 && c <= 57)) fail("invalid number");
    let significand = BigInt(c - 48);
    i++;
    while (isDigit(peek())) {
      const next = significand * 10n + BigInt(peek() - 48);
      if (next > U64_MAX) {
        // parse_long_integer: the remaining integer digits only raise the exponent.
        let exponent = 0;
        while (isDigit(peek())) {
          i++;
          exponent++;
        }
        if (text[i] === ".") return new JsonNumber("f", decimalPart(positive, significand, exponent));
        if (text[i] === "e" || text[i] === "E") {
          return new JsonNumber("f", exponentPart(positive, significand, exponent));
        }
        return new JsonNumber("f", fromParts(positive, significand, exponent));
      }
      significand = next;
      i++;
    }
    return afterInteger(positive, significand);
  }

  function string() {
    const start = i;
    i++;
    for (;;) {
      const c = peek();
      if (Number.isNaN(c)) fail("EOF while parsing a string");
      if (c === 34) break;
      if (c < 0x20) fail("control character (\\u0000-\\u001F) found while parsing a string");
      i += c === 92 ? 2 : 1;
    }
    i++;
    try {
      return JSON.parse(text.slice(start, i));
    } catch {
      i = start;
      return fail("invalid escape");
    }
  }

  function literal(word, value) {
    if (text.startsWith(word, i)) {
      i += word.length;
      return value;
    }
    return fail("expected ident");
  }

  function value() {
    ws();
    const c = text[i];
    if (c === "{" || c === "[") {
      if (++depth > 128) fail("recursion limit exceeded");
      const v = c === "{" ? object() : array();
      depth--;
      return v;
    }
    if (c === '"') return string();
    if (c === "t") return literal("true", true);
    if (c === "f") return literal("false", false);
    if (c === "n") return literal("null", null);
    if (c === "-" || (c >= "0" && c <= "9")) return number();
    if (c === undefined) fail("EOF while parsing a value");
    return fail("expected value");
  }

  function array() {
    i++;
    const out = [];
    ws();
    if (text[i] === "]") {
      i++;
      return out;
    }
    for (;;) {
      out.push(value());
      ws();
      if (text[i] === ",") {
        i++;
        continue;
      }
      if (text[i] === "]") {
        i++;
        return out;
      }
      fail("expected `,` or `]`");
    }
  }

  function object() {
    i++;
    const out = new Map();
    ws();
    if (text[i] === "}") {
      i++;
      return out;
    }
    for (;;) {
      ws();
      if (text[i] !== '"') fail("key must be a string");
      const key = string();
      ws();
      if (text[i] !== ":") fail("expected `:`");
      i++;
      out.set(key, value());
      ws();
      if (text[i] === ",") {
        i++;
        continue;
      }
      if (text[i] === "}") {
        i++;
        return out;
      }
      fail("expected `,` or `}`");
    }
  }

  const v = value();
  ws();
  if (i < text.length) fail("trailing characters");
  return v;
}

/** An f64 as serde_json prints it (zmij): `1.0`, `0.001234`, `1.5e+20`, `1e-7`; non-finite: null. */
export function formatF64(x) {
  if (!Number.isFinite(x)) return "null";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  // JavaScript's Number::toString gives the shortest round-trip digits (closest, ties even),
  // as zmij does; only the layout differs.
  const s = Math.abs(x).toString();
  const e = s.indexOf("e");
  const mant = e >= 0 ? s.slice(0, e) : s;
  const exp10 = e >= 0 ? Number(s.slice(e + 1)) : 0;
  const dot = mant.indexOf(".");
  const intPart = dot >= 0 ? mant.slice(0, dot) : mant;
  let digits = intPart + (dot >= 0 ? mant.slice(dot + 1) : "");
  // value = 0.DIGITS × 10^point
  let point = intPart.length + exp10;
  const lead = digits.length - digits.replace(/^0+/, "").length;
  digits = digits.slice(lead).replace(/0+$/, "");
  point -= lead;
  const dexp = point - 1; // decimal exponent of the first digit
  const n = digits.length;
  let out;
  if (dexp >= -5 && dexp <= 15) {
    if (n - 1 <= dexp) out = `${digits}${"0".repeat(dexp - n + 1)}.0`;
    else if (dexp >= 0) out = `${digits.slice(0, dexp + 1)}.${digits.slice(dexp + 1)}`;
    else out = `0.${"0".repeat(-dexp - 1)}${digits}`;
  } else {
    const frac = n > 1 ? `.${digits.slice(1)}` : "";
    out = `${digits[0]}${frac}e${dexp < 0 ? "-" : "+"}${Math.abs(dexp)}`;
  }
  return x < 0 ? `-${out}` : out;
}

/**
 * Compact JSON as serde_json's `to_string` of a `Value` writes it: Maps (and plain objects)
 * with sorted keys, numbers as f64 (`formatF64`) unless they are BigInts (integers), strings
 * escaped as serde_json does.
 */
export function stringify(v) {
  if (v === null || v === undefined) return "null";
  if (typeof v === "number") return formatF64(v);
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "string") return quote(v);
  if (v instanceof JsonNumber) return v.kind === "f" ? formatF64(v.value) : v.big.toString();
  if (Array.isArray(v) || ArrayBuffer.isView(v)) {
    return `[${Array.from(v, stringify).join(",")}]`;
  }
  const entries = v instanceof Map ? [...v.entries()] : Object.entries(v);
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, x]) => `${quote(k)}:${stringify(x)}`).join(",")}}`;
}

function quote(s) {
  // serde_json escapes ", \, and control characters (\b \f \n \r \t by name, others \u00XX).
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0);
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (c < 0x20) {
      const named = { 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t" }[c];
      out += named ?? `\\u${c.toString(16).padStart(4, "0")}`;
    } else out += ch;
  }
  return `${out}"`;
}
