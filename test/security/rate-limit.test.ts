/**
 * The inbox's rate limits, against a real cluster with small buckets: verified requests
 * count against the signer's origin and refused ones against the client address; past the
 * bucket the answer is 429 with `Retry-After`, other origins go on, and nothing changes.
 * The buckets live in the web process, the same on every backend, so this suite runs on
 * the embedded default only.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunningCluster } from "../../server/cluster.ts";
import { createRateLimiter } from "../../server/http/rate-limit.ts";
import { testBackends } from "../support/backends.ts";
import { startTestCluster, type TestCluster } from "../support/clusters.ts";
import { expectNothingChanges, taskCompleted } from "../support/inbox-input.ts";
import { clusterRsaKey, signedPost, type SigningKey } from "../support/signing.ts";

describe("token buckets", () => {
  it("lets a burst through, then refills at the configured rate", () => {
    let now = 0;
    const limiter = createRateLimiter({ burst: 2, perSecond: 0.5, now: () => now });
    expect(limiter.take("a")).toEqual({ ok: true });
    expect(limiter.take("a")).toEqual({ ok: true });
    expect(limiter.take("a")).toEqual({ ok: false, retryAfterSeconds: 2 });
    expect(limiter.take("b")).toEqual({ ok: true });
    now = 2000;
    expect(limiter.take("a")).toEqual({ ok: true });
    expect(limiter.peek("a")).toEqual({ ok: false, retryAfterSeconds: 2 });
  });

  it("keeps at most maxKeys buckets, however many peers appear", () => {
    const limiter = createRateLimiter({ burst: 5, perSecond: 1, maxKeys: 100, now: () => 0 });
    for (let i = 0; i < 10_000; i++) limiter.take(`peer-${i}`);
    expect(limiter.size).toBeLessThanOrEqual(100);
  });
});

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
