import { describe, expect, it } from "vitest";
import { DEFAULT_MAX_JSON_BYTES, checkJsonLimits } from "../../protocol/index.ts";

describe("checkJsonLimits", () => {
  it("parses a small document given as text or as bytes", () => {
    const text = '{"type":["Activity","TaskCompleted"],"object":{"a":[1,2,{"b":null}]}}';
    const expected = JSON.parse(text) as unknown;
    expect(checkJsonLimits(text)).toEqual({ ok: true, value: expected });
    expect(checkJsonLimits(new TextEncoder().encode(text))).toEqual({ ok: true, value: expected });
  });

  it("rejects a 100,000-deep array as too-deep quickly and without a stack overflow (TW-LIM-2)", () => {
    const text = "[".repeat(100_000) + "]".repeat(100_000);
    const started = performance.now();
    const result = checkJsonLimits(text);
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(result).toMatchObject({ ok: false, reason: { code: "too-deep" } });
  });

  it("rejects deep nesting even when the document is malformed after it", () => {
    const text = '{"a":'.repeat(50);
    expect(checkJsonLimits(text)).toMatchObject({ ok: false, reason: { code: "too-deep" } });
  });

  it("accepts nesting exactly at the limit and rejects one level more", () => {
    const nested = (depth: number) => "[".repeat(depth) + "]".repeat(depth);
    expect(checkJsonLimits(nested(32)).ok).toBe(true);
    expect(checkJsonLimits(nested(33))).toMatchObject({ ok: false, reason: { code: "too-deep" } });
    expect(checkJsonLimits(nested(3), { maxDepth: 2 })).toMatchObject({
      ok: false,
      reason: { code: "too-deep" },
    });
  });

  it("does not count brackets inside strings, including after escaped quotes", () => {
    const text = JSON.stringify({ name: '[[[[ \\" {{{{ "'.repeat(20) });
    expect(checkJsonLimits(text, { maxDepth: 1 })).toEqual({
      ok: true,
      value: JSON.parse(text) as unknown,
    });
  });

  it("rejects a body over maxBytes before parsing it (TW-LIM-1)", () => {
    const text = JSON.stringify({ padding: "x".repeat(DEFAULT_MAX_JSON_BYTES) });
    expect(checkJsonLimits(text)).toMatchObject({ ok: false, reason: { code: "too-large" } });
    expect(checkJsonLimits(new Uint8Array(DEFAULT_MAX_JSON_BYTES + 1))).toMatchObject({
      ok: false,
      reason: { code: "too-large" },
    });
    expect(checkJsonLimits('{"a":1}', { maxBytes: 4 })).toMatchObject({
      ok: false,
      reason: { code: "too-large" },
    });
  });

  it("measures the limit in UTF-8 bytes, not characters", () => {
    const text = JSON.stringify("é".repeat(10)); // 12 characters, 22 bytes
    expect(checkJsonLimits(text, { maxBytes: 21 })).toMatchObject({
      ok: false,
      reason: { code: "too-large" },
    });
    expect(checkJsonLimits(text, { maxBytes: 22 }).ok).toBe(true);
  });

  it("rejects text that is not JSON and bytes that are not UTF-8", () => {
    expect(checkJsonLimits("{'single': 'quotes'}")).toMatchObject({
      ok: false,
      reason: { code: "not-json" },
    });
    expect(checkJsonLimits("")).toMatchObject({ ok: false, reason: { code: "not-json" } });
    expect(checkJsonLimits(new Uint8Array([0x7b, 0xff, 0x7d]))).toMatchObject({
      ok: false,
      reason: { code: "not-json" },
    });
  });

  it("ignores a leading byte order mark", () => {
    expect(checkJsonLimits("\uFEFF[1]")).toEqual({ ok: true, value: [1] });
    expect(checkJsonLimits(new Uint8Array([0xef, 0xbb, 0xbf, 0x5b, 0x31, 0x5d]))).toEqual({
      ok: true,
      value: [1],
    });
  });
});
