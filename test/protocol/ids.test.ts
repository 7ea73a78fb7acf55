import { describe, expect, it } from "vitest";
import { isTaskId, newSlugId } from "../../protocol/index.ts";

describe("newSlugId", () => {
  it("returns 22 URL-safe characters starting with a letter", () => {
    for (let index = 0; index < 1000; index++) {
      const id = newSlugId();
      expect(id).toMatch(/^[A-Za-f][A-Za-z0-9_-]{21}$/);
      expect(isTaskId(id)).toBe(true);
    }
  });

  it("encodes a version-4 UUID", () => {
    const bytes = Buffer.from(newSlugId(), "base64url");
    expect(bytes).toHaveLength(16);
    expect((bytes[6] ?? 0) >> 4).toBe(4);
    expect((bytes[8] ?? 0) >> 6).toBe(0b10);
  });

  it("does not repeat", () => {
    const ids = new Set(Array.from({ length: 10_000 }, () => newSlugId()));
    expect(ids.size).toBe(10_000);
  });
});

describe("isTaskId", () => {
  it("accepts 1 to 64 characters of A-Z a-z 0-9 _ - (TW-ID-1)", () => {
    expect(isTaskId("T1")).toBe(true);
    expect(isTaskId("a".repeat(64))).toBe(true);
    expect(isTaskId("fQ3eqT1aRm2Qm0bZkJd4Ww")).toBe(true);
  });

  it("rejects empty, long and path-unsafe ids", () => {
    for (const value of ["", "a".repeat(65), "a/b", "a b", "a.b", "a:b", "é", 7, undefined]) {
      expect(isTaskId(value)).toBe(false);
    }
  });
});
