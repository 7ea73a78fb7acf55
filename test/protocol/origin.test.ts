import { describe, expect, it } from "vitest";
import { originOf, parseHttpUrl, sameOrigin } from "../../protocol/index.ts";

describe("parseHttpUrl", () => {
  it("accepts absolute http and https URLs", () => {
    expect(parseHttpUrl("https://a.example/clusters/a")).toMatchObject({ ok: true });
    expect(parseHttpUrl(new URL("http://127.0.0.1:3101/x"))).toMatchObject({ ok: true });
  });

  it("rejects relative, non-http and credential-carrying URLs without throwing", () => {
    for (const value of [
      "/clusters/a",
      "urn:uuid:1",
      "ftp://a.example/x",
      "javascript:alert(1)",
      "https://user:pw@a.example/",
      "https://user@a.example/",
      "",
      42,
      null,
    ]) {
      expect(parseHttpUrl(value, "/id")).toMatchObject({
        ok: false,
        reason: { code: "bad-url", path: "/id" },
      });
    }
  });
});

describe("originOf", () => {
  it("gives scheme, host and port, omitting the default port", () => {
    expect(originOf("https://A.Example:443/x?y#z")).toEqual({
      ok: true,
      value: "https://a.example",
    });
    expect(originOf("http://127.0.0.1:3101/x")).toEqual({
      ok: true,
      value: "http://127.0.0.1:3101",
    });
  });

  it("fails on something that is not an http(s) URL", () => {
    expect(originOf("mailto:a@b.example")).toMatchObject({ ok: false });
  });
});

describe("sameOrigin", () => {
  it("compares scheme, host and port", () => {
    expect(sameOrigin("https://a.example/x", "https://a.example:443/y")).toBe(true);
    expect(sameOrigin("https://a.example/x", "http://a.example/x")).toBe(false);
    expect(sameOrigin("https://a.example/x", "https://a.example:8443/x")).toBe(false);
    expect(sameOrigin("https://a.example/x", "https://b.a.example/x")).toBe(false);
  });

  it("is false when either side does not parse", () => {
    expect(sameOrigin("not a url", "not a url")).toBe(false);
  });
});
