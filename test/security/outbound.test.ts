/**
 * The checked fetch every outbound request goes through: private and special-use addresses
 * are refused unless allowlisted, each redirect hop is checked again, and documents are
 * bounded in size, depth, time and count. A listener on loopback proves that a refused
 * request never reaches it.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isSpecialUseAddress, parseAllowlist } from "../../server/outbound/address-policy.ts";
import {
  createOutboundFetch,
  OutboundFetchError,
  withFetchBudget,
} from "../../server/outbound/checked-fetch.ts";
import {
  createCheckedDocumentLoader,
  createRefetchLimiter,
} from "../../server/outbound/document-loader.ts";
import { readConfig } from "../../server/config.ts";

describe("address policy", () => {
  it.each([
    "127.0.0.1",
    "127.0.0.2",
    "0.0.0.0",
    "10.1.2.3",
    "100.64.0.1",
    "169.254.169.254",
    "172.16.0.1",
    "192.168.1.1",
    "198.18.0.1",
    "224.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::ffff:8.8.8.8",
    "64:ff9b::7f00:1",
    "2002:7f00:1::",
    "2001:0:4136:e378::1",
    "fc00::1",
    "fe80::1",
    "ff02::1",
  ])("refuses %s", (address) => {
    expect(isSpecialUseAddress(address)).toBe(true);
  });

  it.each(["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])("permits %s", (address) => {
    expect(isSpecialUseAddress(address)).toBe(false);
  });

  it("admits only what an entry names: a CIDR, an address, or an address and port", () => {
    const list = parseAllowlist(["127.0.0.1/32", "10.0.0.5", "[::1]:8080", "192.168.0.9:443"]);
    expect(list.allows("127.0.0.1", 1)).toBe(true);
    expect(list.allows("127.0.0.2", 1)).toBe(false);
    expect(list.allows("::ffff:127.0.0.1", 1)).toBe(true);
    expect(list.allows("10.0.0.5", 80)).toBe(true);
    expect(list.allows("::1", 8080)).toBe(true);
    expect(list.allows("::1", 8081)).toBe(false);
    expect(list.allows("192.168.0.9", 80)).toBe(false);
    expect(list.allows("169.254.169.254", 80)).toBe(false);
  });

  it("refuses allowlist entries that are names or malformed, at configuration time", () => {
    expect(() => readConfig({ TASKWEB_PRIVATE_ADDRESS_ALLOWLIST: "localhost" })).toThrow(
      /names are not allowed/,
    );
    expect(() => readConfig({ TASKWEB_PRIVATE_ADDRESS_ALLOWLIST: "10.0.0.0/33" })).toThrow(
      /not a valid CIDR/,
    );
    expect(readConfig({}).privateAddressAllowlist).toEqual([]);
    expect(
      readConfig({ TASKWEB_PRIVATE_ADDRESS_ALLOWLIST: "127.0.0.1/32, [::1]:7300" })
        .privateAddressAllowlist,
    ).toEqual(["127.0.0.1/32", "[::1]:7300"]);
  });

  it("never lets the dedupe retention go below 30 days", () => {
    expect(readConfig({}).dedupeRetentionDays).toBe(30);
    expect(() => readConfig({ TASKWEB_DEDUPE_RETENTION_DAYS: "7" })).toThrow(/≥ 30/);
    expect(() => readConfig({}, { dedupeRetentionDays: 29 })).toThrow(/at least 30 days/);
  });
});

describe("checked fetch", () => {
  let server: Server;
  let port: number;
  let base: string;
  const hits: string[] = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      hits.push(req.url ?? "");
      const url = new URL(req.url ?? "/", "http://x");
      if (url.pathname === "/doc") {
        res.writeHead(200, { "content-type": "application/activity+json" });
        res.end(JSON.stringify({ id: `${base}/doc`, type: "Note" }));
      } else if (url.pathname === "/plain") {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ id: `${base}/plain`, type: "Note" }));
      } else if (url.pathname === "/big") {
        res.writeHead(200, { "content-type": "application/activity+json" });
        res.end(JSON.stringify({ pad: "x".repeat(2 * 1024 * 1024) }));
      } else if (url.pathname === "/deep") {
        res.writeHead(200, { "content-type": "application/activity+json" });
        res.end(`${"[".repeat(100)}${"]".repeat(100)}`);
      } else if (url.pathname === "/to") {
        res.writeHead(302, { location: url.searchParams.get("u") ?? "/" });
        res.end();
      } else if (url.pathname === "/loop") {
        res.writeHead(302, { location: "/loop" });
        res.end();
      } else if (url.pathname === "/echo") {
        const chunks: Buffer[] = [];
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("end", () => {
          res.writeHead(202, { "content-type": "text/plain" });
          res.end(`${req.method} ${req.headers["content-length"]} ${Buffer.concat(chunks)}`);
        });
      } else if (url.pathname === "/drip") {
        res.writeHead(200, { "content-type": "application/activity+json" });
        res.write("{");
        // Never ends: the total time limit must cut it.
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
    base = `http://127.0.0.1:${port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  const fetchWith = (entries: string[], extra: { timeoutMs?: number } = {}) =>
    createOutboundFetch({ allowlist: parseAllowlist(entries), ...extra });

  async function refused(promise: Promise<unknown>, reason: string): Promise<void> {
    const error = await promise.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(OutboundFetchError);
    expect((error as OutboundFetchError).reason).toBe(reason);
  }

  it("reaches an allowlisted address and nothing else", async () => {
    const fetch = fetchWith([`127.0.0.1:${port}`]);
    expect((await fetch(`${base}/doc`)).status).toBe(200);
    hits.length = 0;
    for (const target of [
      `http://127.0.0.2:${port}/doc`,
      "http://169.254.169.254/latest/meta-data/",
      `http://[::ffff:127.0.0.1]:${port + 1}/doc`,
      `http://127.0.0.1:${port + 1}/doc`,
      `http://localhost:${port + 1}/doc`,
      "http://0.0.0.0/",
      "http://10.0.0.1/",
    ]) {
      await refused(fetch(target), "private-address");
    }
    for (const target of ["file:///etc/passwd", "data:,{}", "gopher://127.0.0.1/"]) {
      await refused(fetch(target), "bad-scheme");
    }
    expect(hits).toEqual([]);
  });

  it("checks every redirect hop again, and stops after three", async () => {
    const fetch = fetchWith([`127.0.0.1:${port}`]);
    hits.length = 0;
    await refused(
      fetch(`${base}/to?u=${encodeURIComponent("http://169.254.169.254/latest/")}`),
      "private-address",
    );
    await refused(
      fetch(`${base}/to?u=${encodeURIComponent(`http://127.0.0.2:${port}/doc`)}`),
      "private-address",
    );
    expect(hits).toEqual([
      `/to?u=${encodeURIComponent("http://169.254.169.254/latest/")}`,
      `/to?u=${encodeURIComponent(`http://127.0.0.2:${port}/doc`)}`,
    ]);
    hits.length = 0;
    await refused(fetch(`${base}/loop`), "too-many-redirects");
    expect(hits).toHaveLength(4);
    const followed = await fetch(`${base}/to?u=/doc`);
    expect(followed.status).toBe(200);
  });

  it("POSTs a delivery to an allowlisted address only, and never follows its redirect", async () => {
    const fetch = fetchWith([`127.0.0.1:${port}`]);
    const body = JSON.stringify({ type: "Follow" });
    hits.length = 0;
    const sent = await fetch(`${base}/echo`, { method: "POST", body });
    expect(sent.status).toBe(202);
    expect(await sent.text()).toBe(`POST ${Buffer.byteLength(body)} ${body}`);
    // A redirect is the answer: the body is not sent on to wherever it points.
    const redirected = await fetch(`${base}/to?u=${encodeURIComponent(`${base}/echo`)}`, {
      method: "POST",
      body,
    });
    expect(redirected.status).toBe(302);
    expect(hits).toEqual(["/echo", `/to?u=${encodeURIComponent(`${base}/echo`)}`]);
    hits.length = 0;
    // A name that resolves to loopback, on a port the allowlist does not admit.
    const elsewhere = fetchWith([`127.0.0.1:${port + 1}`]);
    await refused(
      elsewhere(`http://localhost:${port}/echo`, { method: "POST", body }),
      "private-address",
    );
    await refused(elsewhere(`${base}/echo`, { method: "POST", body }), "private-address");
    expect(hits).toEqual([]);
  });

  it("bounds documents: media type, size, depth and time", async () => {
    const fetch = fetchWith([`127.0.0.1:${port}`], { timeoutMs: 500 });
    const loader = createCheckedDocumentLoader(fetch);
    expect((await loader(`${base}/doc`)).document).toMatchObject({ type: "Note" });
    await refused(loader(`${base}/plain`), "network");
    await refused(loader(`${base}/big`), "too-large");
    await refused(loader(`${base}/deep`), "too-large");
    const started = Date.now();
    await refused(loader(`${base}/drip`), "network");
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it("spends one budget across everything an inbound activity causes", async () => {
    const fetch = fetchWith([`127.0.0.1:${port}`]);
    await withFetchBudget(3, async () => {
      await fetch(`${base}/doc`);
      await fetch(`${base}/to?u=/doc`); // two requests: the redirect and its target
      await refused(fetch(`${base}/doc`), "budget-exhausted");
    });
    expect((await fetch(`${base}/doc`)).status).toBe(200);
  });

  it("fetches a key again at most once per interval after its first fetch", async () => {
    const loader = createRefetchLimiter(
      createCheckedDocumentLoader(fetchWith([`127.0.0.1:${port}`])),
      { intervalMs: 60_000 },
    );
    hits.length = 0;
    await loader(`${base}/doc#main-key`); // first fetch
    await loader(`${base}/doc#main-key`); // one refetch (a rotated key)
    // Within the interval, the document fetched last is answered from memory.
    expect((await loader(`${base}/doc#main-key`)).document).toMatchObject({ type: "Note" });
    expect((await loader(`${base}/doc#key-2`)).document).toMatchObject({ type: "Note" });
    expect(hits).toEqual(["/doc", "/doc"]);
    // A refetch that failed is not answered from memory: the next one waits for the interval.
    const failing = createRefetchLimiter(
      createCheckedDocumentLoader(fetchWith([`127.0.0.1:${port}`])),
      { intervalMs: 60_000 },
    );
    await failing(`${base}/missing#k`).catch(() => undefined);
    await failing(`${base}/missing#k`).catch(() => undefined);
    await refused(failing(`${base}/missing#k`), "budget-exhausted");
  });
});
