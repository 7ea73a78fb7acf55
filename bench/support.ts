/**
 * Shared pieces of the benchmarks: starting clusters on a chosen backend, statistics, and
 * JSON output. Benchmarks only ever talk to loopback, and every loop is bounded.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
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
export const BENCH_TOKEN = "bench-token-0123456789abcdef";

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
          privateAddressAllowlist: ["127.0.0.1/32"],
          // Throughput is measured, not the inbox's rate limit.
          inboxRateLimit: { burst: 1_000_000, perSecond: 1_000_000 },
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

/** The `taskweb` command, as a user runs it. */
const TASKWEB_BIN = fileURLToPath(new URL("../bin/taskweb.js", import.meta.url));

/** Output kept per child process, for the error that reports it. */
const MAX_OUTPUT_CHARS = 64 * 1024;

/** Child processes still running; none may outlive the benchmark. */
const children = new Set<ChildProcess>();
let exitHooked = false;

function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  const killAll = () => {
    for (const child of children) child.kill("SIGKILL");
  };
  process.once("exit", killAll);
  for (const [signal, code] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const) {
    process.once(signal, () => {
      killAll();
      process.exit(code);
    });
  }
}

/** A `taskweb` process started by a benchmark. */
export interface TaskwebProcess {
  readonly pid: number | undefined;
  /** The end of what it printed on stdout and stderr. */
  output(): string;
  /** Resolves once its stdout contains `text`; rejects when it exits first or after `timeoutMs`. */
  waitForOutput(text: string, timeoutMs: number): Promise<void>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. Safe to call twice. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Starts `taskweb args…` with the Node running the benchmark, `env` added to the
 * environment. The process is killed if the benchmark exits without stopping it.
 */
export function spawnTaskweb(
  args: readonly string[],
  env: Readonly<Record<string, string>>,
): TaskwebProcess {
  hookExit();
  const child = spawn(process.execPath, [TASKWEB_BIN, ...args], {
    env: { ...process.env, LOG_LEVEL: "warning", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  let stdout = "";
  let output = "";
  const keep = (text: string) => (output = (output + text).slice(-MAX_OUTPUT_CHARS));
  child.stdout.on("data", (chunk: Buffer) => {
    const text = chunk.toString("utf8");
    stdout = (stdout + text).slice(-MAX_OUTPUT_CHARS);
    keep(text);
  });
  child.stderr.on("data", (chunk: Buffer) => keep(chunk.toString("utf8")));
  let exitedWith: string | undefined;
  const exited = new Promise<void>((resolve) => {
    const done = (how: string) => {
      exitedWith ??= how;
      children.delete(child);
      resolve();
    };
    child.once("exit", (code, signal) => done(signal ?? `code ${code}`));
    child.once("error", (error) => done(String(error)));
  });
  return {
    pid: child.pid,
    output: () => output,
    async waitForOutput(text, timeoutMs) {
      try {
        await until(
          async () => {
            if (stdout.includes(text)) return true;
            if (exitedWith !== undefined) throw new Error(`exited (${exitedWith})`);
            return undefined;
          },
          timeoutMs,
          50,
        );
      } catch (error) {
        throw new Error(
          `taskweb ${args.join(" ")} (pid ${child.pid}) did not print ${JSON.stringify(text)}: ${
            error instanceof Error ? error.message : String(error)
          }\n${output}`,
          { cause: error },
        );
      }
    },
    async stop(graceMs = 30_000) {
      if (exitedWith === undefined) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}

/** A cluster that runs tasks, and how its work is spread over processes. */
export interface WorkingCluster {
  /** The cluster in this process: it answers the API, and without worker processes runs tasks. */
  readonly web: RunningCluster;
  /** `taskweb worker` processes beside it; 0 when this process runs the tasks. */
  readonly workerProcesses: number;
  /** Tasks each process that runs tasks runs at once. */
  readonly workerConcurrency: number;
  cleanup(): Promise<void>;
}

/**
 * Starts a cluster named `name` that runs tasks. With `workerProcesses` 0 it is one process
 * (this one), as `taskweb start`; otherwise this process is its web side, as `taskweb web`,
 * and `workerProcesses` separate `taskweb worker` processes run the tasks, as in production.
 * Separate workers need postgres+redis: the embedded database belongs to one process.
 */
export async function startWorkingCluster(
  backend: BenchBackend,
  name: string,
  options: { readonly workerProcesses: number; readonly workerConcurrency: number },
): Promise<WorkingCluster> {
  const { workerProcesses, workerConcurrency } = options;
  if (workerProcesses > 0 && backend !== "postgres+redis") {
    throw new Error("Separate worker processes need postgres+redis.");
  }
  const { clusters, cleanup } = await startBenchClusters(backend, [name], {
    roles: { web: true, worker: workerProcesses === 0 },
    config: { workerConcurrency },
  });
  const web = clusters[0]!;
  const workers: TaskwebProcess[] = [];
  const stopAll = async () => {
    try {
      await Promise.all(workers.map((w) => w.stop()));
    } finally {
      await cleanup();
    }
  };
  try {
    const config = web.config;
    const env: Record<string, string> = {
      DATABASE_URL: config.databaseUrl ?? "",
      DATABASE_SCHEMA: config.databaseSchema ?? "",
      REDIS_URL: config.redisUrl ?? "",
      REDIS_PREFIX: config.redisPrefix,
      TASKWEB_NAME: config.name,
      TASKWEB_PUBLIC_URL: web.urls.origin,
      TASKWEB_ADMIN_TOKEN: web.adminToken,
      TASKWEB_PRIVATE_ADDRESS_ALLOWLIST: "127.0.0.1/32",
      TASKWEB_RECONCILE_INTERVAL_MS: String(config.reconcileIntervalMs),
      WORKER_CONCURRENCY: String(workerConcurrency),
      ...(config.workDir != null ? { TASKWEB_WORK_DIR: config.workDir } : {}),
    };
    for (let i = 0; i < workerProcesses; i++) workers.push(spawnTaskweb(["worker"], env));
    // `taskweb worker` prints its banner once it is consuming.
    await Promise.all(workers.map((w) => w.waitForOutput("(worker)", 120_000)));
  } catch (error) {
    await stopAll();
    throw error;
  }
  return { web, workerProcesses, workerConcurrency, cleanup: stopAll };
}

/** A graph document as `taskweb graph submit` sends it. */
export interface GraphBody {
  readonly text: string;
  readonly mediaType: "application/json" | "application/yaml";
  readonly bytes: number;
}

/** The API's limit on JSON bodies; a larger graph goes as YAML (limit 5 MiB), as the CLI does. */
const MAX_JSON_BODY_BYTES = 1024 * 1024;

/** Serialises a task graph, choosing the media type as `taskweb graph submit` does. */
export function graphBody(graph: unknown): GraphBody {
  const text = JSON.stringify(graph);
  const bytes = Buffer.byteLength(text, "utf8");
  // YAML 1.2 reads JSON as it is.
  return {
    text,
    bytes,
    mediaType: bytes <= MAX_JSON_BODY_BYTES ? "application/json" : "application/yaml",
  };
}

/** `POST /api/v1/task-groups`; throws unless the group was created. */
export async function postTaskGraph(cluster: RunningCluster, body: GraphBody): Promise<void> {
  const response = await fetch(`${cluster.urls.origin}/api/v1/task-groups`, {
    method: "POST",
    headers: { authorization: `Bearer ${cluster.adminToken}`, "content-type": body.mediaType },
    body: body.text,
  });
  const text = await response.text();
  if (response.status !== 201) {
    throw new Error(`POST /api/v1/task-groups answered ${response.status}: ${text.slice(0, 2000)}`);
  }
}

/** Tasks of a group by state, once all resolved or when the time ran out. */
export interface GroupProgress {
  readonly complete: boolean;
  readonly resolved: number;
  readonly counts: Readonly<Record<string, number>>;
}

const RESOLVED_STATES = ["completed", "failed", "exception"] as const;

/** Polls the group's task states until all `total` resolved, for at most `timeoutMs`. */
export async function waitForGroup(
  cluster: RunningCluster,
  taskGroupId: string,
  total: number,
  timeoutMs: number,
  pollMs = 100,
): Promise<GroupProgress> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const rows = await cluster.database.db
      .selectFrom("tasks")
      .select(["state", (eb) => eb.fn.countAll<string | number>().as("n")])
      .where("task_group_id", "=", taskGroupId)
      .groupBy("state")
      .execute();
    const counts = Object.fromEntries(rows.map((r) => [r.state, Number(r.n)]));
    const resolved = RESOLVED_STATES.reduce((sum, s) => sum + (counts[s] ?? 0), 0);
    if (resolved >= total || Date.now() > end) {
      return { complete: resolved >= total, resolved, counts };
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** When a group's first run started and last run resolved (epoch ms), and each run's time. */
export async function groupRunTimes(
  cluster: RunningCluster,
  taskGroupId: string,
): Promise<{ firstStarted: number; lastResolved: number; runMs: number[] }> {
  const runs = await cluster.database.db
    .selectFrom("runs")
    .innerJoin("tasks", "tasks.task_id", "runs.task_id")
    .select(["runs.started_at", "runs.resolved_at"])
    .where("tasks.task_group_id", "=", taskGroupId)
    .execute();
  let firstStarted = Number.POSITIVE_INFINITY;
  let lastResolved = Number.NEGATIVE_INFINITY;
  const runMs: number[] = [];
  for (const run of runs) {
    const started = run.started_at == null ? undefined : new Date(run.started_at).getTime();
    const resolved = run.resolved_at == null ? undefined : new Date(run.resolved_at).getTime();
    if (started !== undefined) firstStarted = Math.min(firstStarted, started);
    if (resolved !== undefined) lastResolved = Math.max(lastResolved, resolved);
    if (started !== undefined && resolved !== undefined) runMs.push(resolved - started);
  }
  return { firstStarted, lastResolved, runMs };
}

let gc: (() => void) | undefined;

/** A full garbage collection, so that heap figures count what is retained. */
export function collectGarbage(): void {
  if (gc === undefined) {
    setFlagsFromString("--expose-gc");
    gc = runInNewContext("gc") as () => void;
  }
  gc();
}

const MIB = 1024 * 1024;
const mib = (bytes: number) => Math.round((bytes / MIB) * 10) / 10;

/** Time and memory of one step, memory in MiB of this process. */
export interface Measured<T> {
  readonly value: T;
  readonly ms: number;
  readonly memory: {
    /** heapUsed after the step minus before it (after a full GC), no GC in between. */
    readonly heapUsedDeltaMiB: number;
    readonly rssDeltaMiB: number;
    readonly rssBeforeMiB: number;
    /** Highest RSS seen, sampled every 10 ms while the event loop was free, and at the end. */
    readonly peakRssMiB: number;
  };
}

/** Runs `step` after a full GC, timing it and sampling this process's memory. */
export async function measure<T>(step: () => Promise<T> | T): Promise<Measured<T>> {
  collectGarbage();
  const before = process.memoryUsage();
  let peak = before.rss;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 10);
  const start = performance.now();
  let value: T;
  try {
    value = await step();
  } finally {
    clearInterval(sampler);
  }
  const ms = performance.now() - start;
  const after = process.memoryUsage();
  peak = Math.max(peak, after.rss);
  return {
    value,
    ms: Math.round(ms * 100) / 100,
    memory: {
      heapUsedDeltaMiB: mib(after.heapUsed - before.heapUsed),
      rssDeltaMiB: mib(after.rss - before.rss),
      rssBeforeMiB: mib(before.rss),
      peakRssMiB: mib(peak),
    },
  };
}

/** The highest RSS this process ever had (getrusage), in MiB. */
export function processMaxRssMiB(): number {
  return mib(process.resourceUsage().maxRSS * 1024);
}
