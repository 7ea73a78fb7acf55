/**
 * Size and nesting bounds for JSON bodies, checked before any JSON-LD processor or signature
 * verifier sees them: a deeply nested body makes recursive processors overflow their stack
 * (a bare Fedify inbox answers 500 to one), and a huge one costs memory before it is refused.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { fail, ok } from "./result.ts";
import type { ParseResult } from "./result.ts";

/** Default largest accepted body: 1 MiB. */
export const DEFAULT_MAX_JSON_BYTES = 1024 * 1024;

/** Default deepest accepted nesting of arrays and objects. */
export const DEFAULT_MAX_JSON_DEPTH = 32;

/** Bounds for {@link checkJsonLimits}. */
export interface JsonLimitsOptions {
  /**
   * Largest accepted body in bytes (UTF-8).
   *
   * @defaultValue 1048576 (1 MiB)
   */
  readonly maxBytes?: number;
  /**
   * Deepest accepted nesting: a scalar has depth 0, `[]` and `{}` depth 1, `[[1]]` depth 2.
   *
   * @defaultValue 32
   */
  readonly maxDepth?: number;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;

/**
 * Parses a JSON body after checking its size and nesting depth.
 *
 * The depth is measured by one iterative scan of the text before `JSON.parse` runs, so a
 * body of 100,000 nested brackets is refused in linear time without recursion. A leading
 * byte order mark is ignored, as RFC 8259 allows.
 *
 * @param text - The body, as received bytes (must be UTF-8) or as a string.
 * @param options - The bounds; see {@link JsonLimitsOptions}.
 * @returns The parsed JSON value, or `too-large`, `too-deep` or `not-json`.
 */
export function checkJsonLimits(
  text: string | Uint8Array,
  options: JsonLimitsOptions = {},
): ParseResult<unknown> {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_JSON_BYTES;
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_JSON_DEPTH;
  // Every UTF-16 code unit encodes to at least one UTF-8 byte, so a string longer than the
  // limit is refused without measuring it.
  const size =
    typeof text === "string"
      ? text.length > maxBytes
        ? text.length
        : Buffer.byteLength(text, "utf8")
      : text.byteLength;
  if (size > maxBytes) {
    return fail(
      "too-large",
      `the body has ${size} bytes or more, over the limit of ${maxBytes}; send a smaller document`,
    );
  }
  let source: string;
  if (typeof text === "string") {
    source = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  } else {
    try {
      source = new TextDecoder("utf-8", { fatal: true }).decode(text);
    } catch {
      return fail("not-json", "the body is not valid UTF-8; send JSON encoded as UTF-8");
    }
  }
  let depth = 0;
  let inString = false;
  for (let index = 0; index < source.length; index++) {
    const code = source.charCodeAt(index);
    if (inString) {
      if (code === BACKSLASH) index++;
      else if (code === QUOTE) inString = false;
    } else if (code === QUOTE) {
      inString = true;
    } else if (code === OPEN_BRACKET || code === OPEN_BRACE) {
      depth++;
      if (depth > maxDepth) {
        return fail(
          "too-deep",
          `arrays and objects are nested more than ${maxDepth} levels deep (at character ${index}); flatten the document`,
        );
      }
    } else if (code === CLOSE_BRACKET || code === CLOSE_BRACE) {
      // Unbalanced input can drive this below zero; JSON.parse then refuses it.
      depth--;
    }
  }
  try {
    return ok(JSON.parse(source) as unknown);
  } catch (error) {
    const detail = error instanceof Error ? `: ${error.message}` : "";
    return fail("not-json", `the body is not valid JSON${detail}`);
  }
}
