import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import {
  checkContentDigest,
  contentDigestOf,
  createSha256,
  formatContentDigest,
  isSha256Hex,
  parseContentDigest,
  sha256Hex,
  sha256OfStream,
} from "../../protocol/index.ts";

// FIPS 180-2 and RFC 9530 test values.
const EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
const EMPTY_HEADER = "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:";
const HELLO_HEADER = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"; // {"hello": "world"}

describe("sha256Hex", () => {
  it("hashes the empty string and abc to the FIPS 180-2 values", () => {
    expect(sha256Hex("")).toBe(EMPTY);
    expect(sha256Hex("abc")).toBe(ABC);
    expect(sha256Hex(new TextEncoder().encode("abc"))).toBe(ABC);
  });
});

describe("createSha256", () => {
  it("gives the same digest chunk by chunk and counts the bytes", () => {
    const hasher = createSha256().update("a").update(new TextEncoder().encode("b")).update("c");
    expect(hasher.size).toBe(3);
    expect(hasher.digestHex()).toBe(ABC);
  });

  it("hashes a stream", async () => {
    const stream = Readable.from([Buffer.from("a"), Buffer.from("bc")]);
    expect(await sha256OfStream(stream)).toEqual({ sha256: ABC, size: 3 });
  });
});

describe("isSha256Hex", () => {
  it("accepts 64 lowercase hex digits only", () => {
    expect(isSha256Hex(ABC)).toBe(true);
    expect(isSha256Hex(ABC.toUpperCase())).toBe(false);
    expect(isSha256Hex(ABC.slice(1))).toBe(false);
    expect(isSha256Hex(`${ABC}0`)).toBe(false);
    expect(isSha256Hex(42)).toBe(false);
  });
});

describe("Content-Digest", () => {
  it("formats the RFC 9530 values (TW-DIG-2)", () => {
    expect(formatContentDigest(EMPTY)).toBe(EMPTY_HEADER);
    expect(contentDigestOf('{"hello": "world"}')).toBe(HELLO_HEADER);
  });

  it("refuses to format something that is not a digest", () => {
    expect(() => formatContentDigest("abc")).toThrow(TypeError);
  });

  it("parses sha-256 among other algorithms and parameters", () => {
    expect(parseContentDigest(EMPTY_HEADER)).toEqual({ ok: true, value: EMPTY });
    const several = `sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:, ${EMPTY_HEADER};note=1`;
    expect(parseContentDigest(several)).toEqual({ ok: true, value: EMPTY });
  });

  it("rejects a header without sha-256, or with a malformed one", () => {
    for (const header of [
      "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
      "sha-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
      "sha-256=:AAAA:",
      "SHA-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",
      "",
    ]) {
      expect(parseContentDigest(header)).toMatchObject({
        ok: false,
        reason: { code: "bad-digest" },
      });
    }
  });

  it("checks a body against its header (TW-DIG-2)", () => {
    expect(checkContentDigest(HELLO_HEADER, '{"hello": "world"}').ok).toBe(true);
    expect(checkContentDigest(HELLO_HEADER, '{"hello": "world!"}')).toMatchObject({
      ok: false,
      reason: { code: "bad-digest" },
    });
  });
});
