/**
 * SHA-256 digests as taskweb uses them: artifact `sha256` values are 64 lowercase hex digits,
 * and HTTP bodies carry an RFC 9530 `Content-Digest: sha-256=:<base64>:` header.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { fail, ok } from "./result.ts";
import type { ParseResult } from "./result.ts";

const SHA256_HEX = /^[0-9a-f]{64}$/;

/**
 * Whether a value is a SHA-256 digest in taskweb's wire form: exactly 64 lowercase hex
 * digits. Upper case is refused so that equal digests are equal strings.
 *
 * @param value - The candidate.
 * @returns `true` for a well-formed digest.
 */
export function isSha256Hex(value: unknown): value is string {
  return typeof value === "string" && SHA256_HEX.test(value);
}

/**
 * The SHA-256 of some bytes as 64 lowercase hex digits. A string is hashed as its UTF-8
 * encoding.
 *
 * @param data - The content.
 * @returns The hex digest.
 */
export function sha256Hex(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

/** An incremental SHA-256 that also counts bytes, for checking a download's digest and size. */
export interface Sha256Hasher {
  /**
   * Adds a chunk of content.
   *
   * @param chunk - The next bytes; a string is hashed as UTF-8.
   * @returns This hasher, for chaining.
   */
  update(chunk: Uint8Array | string): Sha256Hasher;
  /** Bytes hashed so far. */
  readonly size: number;
  /**
   * Finishes the hash. The hasher cannot be updated afterwards.
   *
   * @returns The digest as 64 lowercase hex digits.
   */
  digestHex(): string;
}

/**
 * Starts an incremental SHA-256, for content that arrives in chunks (an artifact upload or
 * download) and must not be held in memory whole.
 *
 * @returns A fresh {@link Sha256Hasher}.
 */
export function createSha256(): Sha256Hasher {
  const hash = createHash("sha256");
  let size = 0;
  const hasher: Sha256Hasher = {
    update(chunk) {
      size += typeof chunk === "string" ? Buffer.byteLength(chunk, "utf8") : chunk.byteLength;
      hash.update(chunk);
      return hasher;
    },
    get size() {
      return size;
    },
    digestHex() {
      return hash.digest("hex");
    },
  };
  return hasher;
}

/**
 * Hashes a stream of chunks (a web `ReadableStream`, a Node stream, any async iterable).
 *
 * @param source - The content.
 * @returns The digest as 64 lowercase hex digits and the number of bytes read.
 */
export async function sha256OfStream(
  source: AsyncIterable<Uint8Array>,
): Promise<{ sha256: string; size: number }> {
  const hasher = createSha256();
  for await (const chunk of source) hasher.update(chunk);
  return { size: hasher.size, sha256: hasher.digestHex() };
}

/**
 * Formats an RFC 9530 `Content-Digest` header value for a SHA-256 digest.
 *
 * @param sha256 - The digest as 64 lowercase hex digits.
 * @returns The header value, `sha-256=:<base64>:`.
 * @throws TypeError when `sha256` is not 64 lowercase hex digits; this is a programming
 *   error, not untrusted input.
 */
export function formatContentDigest(sha256: string): string {
  if (!isSha256Hex(sha256)) {
    throw new TypeError("formatContentDigest expects a SHA-256 as 64 lowercase hex digits");
  }
  return `sha-256=:${Buffer.from(sha256, "hex").toString("base64")}:`;
}

/**
 * The `Content-Digest` header value for a body.
 *
 * @param body - The body; a string is hashed as UTF-8.
 * @returns The header value, `sha-256=:<base64>:`.
 */
export function contentDigestOf(body: Uint8Array | string): string {
  return formatContentDigest(sha256Hex(body));
}

// An RFC 8941 dictionary member whose value is a byte sequence, with optional parameters.
const DICTIONARY_MEMBER =
  /^([a-z*][a-z0-9_\-.*]*)=:([A-Za-z0-9+/]*={0,2}):((?:;[a-z*][a-z0-9_\-.*]*(?:=[^;]*)?)*)$/;

/**
 * Parses an RFC 9530 `Content-Digest` header value and returns its SHA-256 digest. Other
 * algorithms may be listed beside it and are ignored; a header without `sha-256` is refused,
 * because it is the only algorithm taskweb requires every implementation to check.
 *
 * @param header - The header value, e.g. `sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:`.
 * @returns The digest as 64 lowercase hex digits, or a `bad-digest` failure.
 */
export function parseContentDigest(header: string): ParseResult<string> {
  let sha256: string | undefined;
  for (const rawMember of header.split(",")) {
    const member = rawMember.trim();
    const match = DICTIONARY_MEMBER.exec(member);
    if (match === null) {
      return fail(
        "bad-digest",
        `Content-Digest member ${JSON.stringify(member)} is not of the form algorithm=:base64:`,
      );
    }
    const [, algorithm, base64] = match;
    if (algorithm !== "sha-256" || base64 === undefined) continue;
    const bytes = Buffer.from(base64, "base64");
    if (bytes.byteLength !== 32 || bytes.toString("base64") !== base64) {
      return fail("bad-digest", "the sha-256 Content-Digest must be 32 bytes in padded base64");
    }
    // Per RFC 8941 the last occurrence of a dictionary key wins.
    sha256 = bytes.toString("hex");
  }
  if (sha256 === undefined) {
    return fail("bad-digest", "Content-Digest has no sha-256 member; send sha-256=:<base64>:");
  }
  return ok(sha256);
}

/**
 * Checks a body against its `Content-Digest` header.
 *
 * @param header - The `Content-Digest` header value.
 * @param body - The body as received.
 * @returns The body's SHA-256 as hex when it matches, or a `bad-digest` failure.
 */
export function checkContentDigest(header: string, body: Uint8Array | string): ParseResult<string> {
  const expected = parseContentDigest(header);
  if (!expected.ok) return expected;
  const actual = sha256Hex(body);
  if (actual !== expected.value) {
    return fail(
      "bad-digest",
      "the body does not match its Content-Digest; resend the body unchanged",
    );
  }
  return ok(actual);
}
