/**
 * The inbox's rate limits: verified requests count against the signer's origin and refused
 * ones against the client address; past the budget the answer is 429 with `Retry-After`,
 * other origins go on, and nothing changes. On Redis the budgets (and the key-refetch
 * budget) are the cluster's, shared by all its web processes; in memory they are the
 * process's, which is all the embedded default runs.
 */
import type { IncomingHttpHeaders } from "node:http";
import { request as httpRequest } from "node:http";
import { signRequest, type DocumentLoader } from "@fedify/fedify";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startCluster, type RunningCluster } from "../../server/cluster.ts";
import { readConfig } from "../../server/config.ts";
import { createRateLimiter, type RateLimiter } from "../../server/http/rate-limit.ts";
import { createRefetchLimiter } from "../../server/outbound/document-loader.ts";
import { describeServerBackend, serverBackend, testBackends } from "../support/backends.ts";
import { startTestCluster, type TestCluster } from "../support/clusters.ts";
import { expectNothingChanges, taskCompleted } from "../support/inbox-input.ts";
import { clusterRsaKey, signedPost, type SigningKey } from "../support/signing.ts";

describe("rate limiter in memory", () => {
  it("lets a burst through, then refuses with the seconds left in the window", async () => {
    // 2 requests per 4 s window.
    const limiter = createRateLimiter({ name: "t", burst: 2, perSecond: 0.5 });
    expect(await limiter.peek("a")).toEqual({ ok: true });
    expect(await limiter.take("a")).toEqual({ ok: true });
    expect(await limiter.take("a")).toEqual({ ok: true });
    const refused = await limiter.take("a");
    expect(refused.ok).toBe(false);
    if (!refused.ok) {
      expect(refused.retryAfterSeconds).toBeGreaterThanOrEqual(1);
      expect(refused.retryAfterSeconds).toBeLessThanOrEqual(4);
    }
    expect((await limiter.peek("a")).ok).toBe(false);
    expect(await limiter.take("b")).toEqual({ ok: true });
  });

  it("keeps one budget per process: two limiters in memory do not share", async () => {
    const one = createRateLimiter({ name: "t", burst: 1, perSecond: 0.01 });
    const two = createRateLimiter({ name: "t", burst: 1, perSecond: 0.01 });
    expect(await one.take("a")).toEqual({ ok: true });
    expect(await two.take("a")).toEqual({ ok: true });
  });
});

/** A loader that counts the fetches it makes and answers a fixed document. */
function countingLoader(): { loader: DocumentLoader; fetches: () => number } {
  let fetches = 0;
  return {
    loader: (url) => {
      fetches++;
      return Promise.resolve({ contextUrl: null, documentUrl: url, document: { id: url } });
    },
    fetches: () => fetches,
  };
}

describe("budgets shared on Redis", () => {
  const server = serverBackend();
  if ("skip" in server) {
    it.skip(`runs only with Redis: ${server.skip}`, () => {});
    return;
  }
  const clients: Redis[] = [];
  /** A connection of its own, as each web process of a cluster has. */
  const connect = async () => {
    const client = new Redis(server.redisUrl as string);
    clients.push(client);
    // Until it is connected a limiter spends from its in-memory fallback.
    await new Promise((resolve) => client.once("ready", resolve));
    return client;
  };
  afterAll(() => {
    for (const client of clients) client.disconnect();
  });

  it("spends one budget from two processes with the same prefix; another prefix has its own", async () => {
    const prefix = server.redisPrefix();
    const connections = await Promise.all([connect(), connect(), connect()]);
    const [one, two, other] = [prefix, prefix, server.redisPrefix()].map((p, i) =>
      createRateLimiter({
        name: "inbox-origin",
        burst: 3,
        perSecond: 0.01,
        store: { kind: "redis", client: connections[i]!, prefix: p },
      }),
    ) as [RateLimiter, RateLimiter, RateLimiter];
    expect(await one.take("https://a.example")).toEqual({ ok: true });
    expect(await two.take("https://a.example")).toEqual({ ok: true });
    expect(await one.take("https://a.example")).toEqual({ ok: true });
    const refused = await two.take("https://a.example");
    expect(refused.ok).toBe(false);
    if (!refused.ok) expect(refused.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect((await one.peek("https://a.example")).ok).toBe(false);
    expect(await two.take("https://b.example")).toEqual({ ok: true });
    expect(await other.take("https://a.example")).toEqual({ ok: true });
    // Every key a budget leaves in Redis expires with its window (300 s here) [TW-RATE-3].
    const keys = await connections[0]!.keys(`${prefix}:rate:*`);
    expect(keys.length).toBeGreaterThanOrEqual(2);
    for (const key of keys) {
      const ttl = await connections[0]!.pttl(key);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(300_000);
    }
  });

  it("fetches a key again once per interval across two processes", async () => {
    const prefix = server.redisPrefix();
    const connections = await Promise.all([connect(), connect()]);
    const processes = [0, 1].map((i) => {
      const counted = countingLoader();
      const limited = createRefetchLimiter(counted.loader, {
        intervalMs: 600_000,
        store: { kind: "redis", client: connections[i]!, prefix },
      });
      return { fetch: (url: string) => limited(url), fetches: counted.fetches };
    }) as [
      { fetch: DocumentLoader; fetches: () => number },
      { fetch: DocumentLoader; fetches: () => number },
    ];
    const key = "https://a.example/actor#main-key";
    // Each process's first fetch of the key is its own.
    await processes[0].fetch(key);
    await processes[1].fetch(key);
    expect([processes[0].fetches(), processes[1].fetches()]).toEqual([1, 1]);
    // The first refetch in the cluster goes out; every later one, in either process, is
    // answered from that process's last copy.
    expect(await processes[1].fetch(key)).toMatchObject({ document: { id: key } });
    for (let i = 0; i < 5; i++) {
      await processes[0].fetch(key);
      await processes[1].fetch(key);
    }
    expect(processes[0].fetches() + processes[1].fetches()).toBe(3);
  });
});

describeServerBackend("inbox rate limits of two web processes", (backend) => {
  let a: TestCluster;
  let b: TestCluster;
  let A: RunningCluster;
  let B: RunningCluster;
  let second: RunningCluster;
  let aKey: SigningKey;

  beforeAll(async () => {
    [a, b] = await Promise.all([
      startTestCluster(backend, "a"),
      startTestCluster(backend, "b", {
        config: { inboxRateLimit: { burst: 3, perSecond: 0.01 } },
      }),
    ]);
    A = a.current();
    B = b.current();
    aKey = await clusterRsaKey(A);
    // A second web process of B: same database, same Redis prefix, same public URL.
    second = await startCluster(
      readConfig({}, { ...B.config, port: 0, publicUrl: B.urls.origin }),
      { roles: { web: true, worker: false } },
    );
  }, 60_000);
  afterAll(async () => {
    await second?.stop();
    await Promise.all([a?.destroy(), b?.destroy()]);
  });

  it("answers 429 from the second process once the origin spent its budget at the first", async () => {
    const post = async (port: number, i: number) =>
      await signedPostVia(port, B.urls.inbox, taskCompleted(A, A.urls.task(`t${i}`)), aKey);
    expect((await post(B.port, 0)).status).toBe(202);
    expect((await post(second.port, 1)).status).toBe(202);
    expect((await post(B.port, 2)).status).toBe(202);
    const limited = await post(second.port, 3);
    expect(limited.status).toBe(429);
    expect(Number(limited.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    expect(JSON.parse(limited.text)).toMatchObject({ code: "rate-limited" });
    expect((await post(B.port, 4)).status).toBe(429);
  });
});

/**
 * Signs a POST to `url` (a cluster's public URL) and sends it to the process listening on
 * `port` on loopback, as a load balancer in front of several web processes would.
 */
async function signedPostVia(
  port: number,
  url: string,
  body: unknown,
  key: SigningKey,
): Promise<{ status: number; text: string; headers: IncomingHttpHeaders }> {
  const text = JSON.stringify(body);
  const signed = await signRequest(
    new Request(url, {
      method: "POST",
      headers: { "content-type": "application/activity+json" },
      body: text,
    }),
    key.privateKey,
    key.keyId,
    { spec: "rfc9421" },
  );
  const target = new URL(url);
  const headers: Record<string, string> = { host: target.host };
  signed.headers.forEach((value, name) => (headers[name] = value));
  return await new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: "127.0.0.1", port, path: target.pathname, method: "POST", headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            text: Buffer.concat(chunks).toString(),
            headers: res.headers,
          }),
        );
      },
    );
    req.on("error", reject);
    req.end(text);
  });
}

describe("inbox rate limits on embedded", () => {
  const backend = testBackends()[0]!;
  let a: TestCluster;
  let b: TestCluster;
  let A: RunningCluster;
  let B: RunningCluster;
  let aKey: SigningKey;
  let bKey: SigningKey;

  beforeAll(async () => {
    [a, b] = await Promise.all([
      startTestCluster(backend, "a"),
      startTestCluster(backend, "b", {
        config: {
          inboxRateLimit: { burst: 3, perSecond: 0.1 },
          inboxRefusedRateLimit: { burst: 3, perSecond: 0.1 },
        },
      }),
    ]);
    A = a.current();
    B = b.current();
    aKey = await clusterRsaKey(A);
    // B's own key stands for a second origin: its requests count against B's origin.
    bKey = await clusterRsaKey(B);
  });
  afterAll(async () => {
    await Promise.all([a?.destroy(), b?.destroy()]);
  });

  const fromOrigins = (url: string) => url.startsWith(A.urls.actor) || url.startsWith(B.urls.actor);

  it("answers 429 with Retry-After once an origin spent its burst; other origins go on", async () => {
    for (let i = 0; i < 3; i++) {
      const response = await signedPost(B.urls.inbox, taskCompleted(A, A.urls.task(`t${i}`)), {
        key: aKey,
      });
      expect(response.status).toBe(202);
    }
    const limited = await expectNothingChanges(
      b,
      async () => {
        const body = JSON.stringify(taskCompleted(A, A.urls.task("t3")));
        const response = await signedPost(B.urls.inbox, body, { key: aKey });
        return response;
      },
      429,
      "rate-limited",
      { allowOutbound: fromOrigins },
    );
    expect(JSON.parse(limited.text ?? "{}")).toMatchObject({ code: "rate-limited" });
    const raw = await fetch(B.urls.inbox, { method: "POST" });
    expect(raw.status).toBe(415); // the address bucket is separate and still full
    expect(
      (await signedPost(B.urls.inbox, taskCompleted(B, B.urls.task("x")), { key: bKey })).status,
    ).toBe(202);
  });

  it("sends Retry-After in seconds", async () => {
    const response = await fetch(B.urls.inbox, {
      method: "POST",
      headers: { "content-type": "application/activity+json" },
      body: "{}",
    });
    expect(response.status).toBe(400);
    const next = await fetch(B.urls.inbox, {
      method: "POST",
      headers: { "content-type": "application/activity+json" },
      body: "{}",
    });
    expect(next.status).toBe(400);
    // Three refusals from this address: the next request is refused before it is read.
    const limited = await fetch(B.urls.inbox, {
      method: "POST",
      headers: { "content-type": "application/activity+json" },
      body: JSON.stringify(taskCompleted(A, A.urls.task("x"))),
    });
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
  });

  it("refuses a flood of forged requests from one address without touching the signer's bucket", async () => {
    await expectNothingChanges(
      b,
      () => signedPost(B.urls.inbox, taskCompleted(A, A.urls.task("y")), { key: bKey }),
      429,
      "rate-limited",
    );
  });
});
