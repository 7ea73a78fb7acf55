/**
 * `/readyz` tells the truth: it answers 503 and names the failing dependency while the
 * cluster cannot reach its queue (Redis killed) or its database (the connection to
 * PostgreSQL cut), and 200 again once they are back, without a restart. `/healthz` only says
 * the process is alive.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { describeServerBackend } from "../support/backends.ts";
import { startTestCluster, waitFor, type TestCluster } from "../support/clusters.ts";
import { startRedisServer, type RedisServer } from "../support/redis-server.ts";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.ts";

interface Readiness {
  status: number;
  checks: Record<string, string>;
}

describeServerBackend("readiness", (backend) => {
  let redis: RedisServer;
  let proxy: TcpProxy;
  let a: TestCluster;

  const readyz = async (): Promise<Readiness> => {
    const response = await fetch(`http://127.0.0.1:${a.current().port}/readyz`, {
      signal: AbortSignal.timeout(10_000),
    });
    return {
      status: response.status,
      checks: ((await response.json()) as { checks: Record<string, string> }).checks,
    };
  };
  const healthz = async () => (await fetch(`http://127.0.0.1:${a.current().port}/healthz`)).status;

  beforeAll(async () => {
    redis = await startRedisServer();
    const db = backend.database();
    const target = new URL(db.url!);
    proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
    const proxied = new URL(db.url!);
    proxied.hostname = "127.0.0.1";
    proxied.port = String(proxy.port);
    a = await startTestCluster(backend, "ready", {
      config: { redisUrl: redis.url, databaseUrl: proxied.href, databaseSchema: db.schema },
    });
  });
  afterAll(async () => {
    await proxy?.up().catch(() => {});
    await a?.destroy();
    await proxy?.close();
    await redis?.kill();
  });

  it("answers 503 naming the queue while Redis is down, and 200 once it is back", async () => {
    expect(await readyz()).toEqual({ status: 200, checks: { database: "ok", queue: "ok" } });
    await redis.kill();
    const down = await waitFor("readyz to notice", async () => {
      const r = await readyz();
      return r.status === 503 ? r : undefined;
    });
    expect(down.checks.database).toBe("ok");
    expect(down.checks.queue).not.toBe("ok");
    expect(await healthz()).toBe(200);
    await redis.start();
    await waitFor("readyz to recover", async () =>
      (await readyz()).status === 200 ? true : undefined,
    );
  });

  it("answers 503 naming the database while PostgreSQL is unreachable, and 200 once it is back", async () => {
    await proxy.down();
    const down = await waitFor("readyz to notice", async () => {
      const r = await readyz();
      return r.status === 503 ? r : undefined;
    });
    expect(down.checks.database).not.toBe("ok");
    expect(down.checks.queue).toBe("ok");
    expect(await healthz()).toBe(200);
    await proxy.up();
    await waitFor("readyz to recover", async () => {
      const r = await readyz();
      return r.status === 200 ? r : undefined;
    });
  });
});
