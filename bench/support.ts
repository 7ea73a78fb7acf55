/**
 * Shared pieces of the benchmarks: starting clusters on a chosen backend, statistics, and
 * JSON output. Benchmarks only ever talk to loopback, and every loop is bounded.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { readConfig, type ConfigOverrides } from "../server/config.ts";
import { startCluster, type ClusterRoles, type RunningCluster } from "../server/cluster.ts";

/** Where a benchmark runs. */
export type BenchBackend = "embedded" | "postgres+redis";

/** PostgreSQL and Redis the benchmark may use (`BENCH_DATABASE_URL`, `BENCH_REDIS_URL`). */
export function serverUrls(): { databaseUrl: string; redisUrl: string } {
  return {
    databaseUrl: process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres",
    redisUrl: process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379",
  };
}

/** The API token of every cluster a benchmark starts. */
const BENCH_TOKEN = "bench-token-0123456789abcdef";

/** Clusters started for one benchmark, and how to remove every trace of them. */
export interface BenchClusters {
  readonly clusters: RunningCluster[];
  cleanup(): Promise<void>;
}

/** Options for {@link startBenchClusters}. */
export interface BenchClusterOptions {
  /** @defaultValue web and worker, as `taskweb start` */
  readonly roles?: ClusterRoles;
  /** Settings beyond the benchmark's own (worker concurrency…). */
  readonly config?: ConfigOverrides;
}

/** Starts one cluster per name on `backend`, each with its own database and queue. */
export async function startBenchClusters(
  backend: BenchBackend,
  names: readonly string[],
  options: BenchClusterOptions = {},
): Promise<BenchClusters> {
  const dir = await mkdtemp(join(tmpdir(), "taskweb-bench-"));
  const run = randomBytes(4).toString("hex");
  const schemas: string[] = [];
  const clusters: RunningCluster[] = [];
  const cleanup = async () => {
    await Promise.all(clusters.map((c) => c.stop()));
    await rm(dir, { recursive: true, force: true });
    if (schemas.length > 0) {
      const client = new pg.Client({ connectionString: serverUrls().databaseUrl });
      await client.connect();
      for (const s of schemas) await client.query(`drop schema if exists "${s}" cascade`);
      await client.end();
      const { Redis } = await import("ioredis");
      const redis = new Redis(serverUrls().redisUrl);
      let cursor = "0";
      do {
        const [next, keys] = await redis.scan(cursor, "MATCH", `bench-${run}-*`, "COUNT", 1000);
        cursor = next;
        if (keys.length > 0) await redis.del(...keys);
      } while (cursor !== "0");
      redis.disconnect();
    }
  };
  try {
    for (const name of names) {
      const schema = `bench_${run}_${name.replace(/-/g, "_")}`;
      const urls = serverUrls();
      const config = readConfig(
        {},
        {
          name,
          port: 0,
          dataDir: join(dir, name),
          adminToken: BENCH_TOKEN,
          allowPrivateAddress: true,
          reconcileIntervalMs: 3_600_000,
          workDir: dir,
          ...(backend === "postgres+redis"
            ? {
                databaseUrl: urls.databaseUrl,
                databaseSchema: schema,
                redisUrl: urls.redisUrl,
                redisPrefix: `bench-${run}-${name}`,
              }
            : {}),
          ...options.config,
        },
      );
      if (backend === "postgres+redis") schemas.push(schema);
      clusters.push(
        await startCluster(config, { roles: options.roles ?? { web: true, worker: true } }),
      );
    }
  } catch (error) {
    await cleanup();
    throw error;
  }
  return { clusters, cleanup };
}

/** Percentile (nearest rank) of sorted values. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

/** Summary statistics in milliseconds, rounded to 0.01 ms. */
export function summarize(values: readonly number[]) {
  const sorted = [...values].sort((x, y) => x - y);
  const round = (n: number) => Math.round(n * 100) / 100;
  return {
    n: sorted.length,
    p50: round(percentile(sorted, 50)),
    p90: round(percentile(sorted, 90)),
    p99: round(percentile(sorted, 99)),
    min: round(sorted[0] ?? Number.NaN),
    max: round(sorted.at(-1) ?? Number.NaN),
    mean: round(sorted.reduce((s, v) => s + v, 0) / Math.max(1, sorted.length)),
  };
}

/** Polls until `probe` returns a value; bounded by `timeoutMs`. */
export async function until<T>(
  probe: () => Promise<T | undefined>,
  timeoutMs: number,
  pollMs = 2,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error("benchmark step timed out");
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
