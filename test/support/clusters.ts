/**
 * Starts real clusters for tests: each on its own loopback port with its own database
 * (a PGlite directory, or a PostgreSQL schema) and its own queue (embedded, or a Redis
 * key prefix), exactly as `taskweb start` does.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readConfig, type ConfigOverrides } from "../../server/config.ts";
import {
  startCluster,
  type ClusterEvent,
  type ClusterRoles,
  type RunningCluster,
} from "../../server/cluster.ts";
import type { TestBackend } from "./backends.ts";

/** A cluster under test, restartable on the same port and data. */
export interface TestCluster {
  readonly name: string;
  current(): RunningCluster;
  readonly events: ClusterEvent[];
  /** Every job the cluster enqueued (`<queue> <jobId>`), deliveries included. */
  readonly enqueued: string[];
  /** Every outbound HTTP request the cluster sent (keys, documents, downloads). */
  readonly outbound: string[];
  /** Stops the process (data kept). */
  stop(): Promise<void>;
  /**
   * Starts it again on the same port with the same data; `config` changes its configuration
   * from then on (a new secrets key, say).
   */
  restart(config?: ConfigOverrides): Promise<RunningCluster>;
  /** Stops it and removes its data. */
  destroy(): Promise<void>;
}

/** Options for {@link startTestCluster}. */
export interface TestClusterOptions {
  readonly roles?: ClusterRoles;
  readonly config?: ConfigOverrides;
}

export const TEST_TOKEN = "test-token-0123456789abcdef";

/** Starts a cluster named `name` on `backend`. */
export async function startTestCluster(
  backend: TestBackend,
  name: string,
  options: TestClusterOptions = {},
): Promise<TestCluster> {
  const dir = await mkdtemp(join(tmpdir(), `taskweb-test-${name}-`));
  const db = backend.database();
  let overrides: ConfigOverrides = {
    name,
    port: 0,
    dataDir: dir,
    ...(db.url != null ? { databaseUrl: db.url, databaseSchema: db.schema } : {}),
    ...(backend.redisUrl != null
      ? { redisUrl: backend.redisUrl, redisPrefix: backend.redisPrefix() }
      : {}),
    adminToken: TEST_TOKEN,
    privateAddressAllowlist: ["127.0.0.1/32"],
    // Suites send many requests from one address and origin; the rate-limit suite sets its own.
    inboxRateLimit: { burst: 100_000, perSecond: 10_000 },
    inboxRefusedRateLimit: { burst: 100_000, perSecond: 10_000 },
    reconcileIntervalMs: 3_600_000,
    workDir: dir,
    // Fast retries, so that tests of failing peers finish in seconds.
    delivery: {
      initialDelayMs: 200,
      maxDelayMs: 2000,
      horizonMs: 600_000,
      circuitFailures: 5,
      circuitCooldownMs: 1000,
      attemptLeaseMs: 10_000,
    },
    ...options.config,
  };
  const events: ClusterEvent[] = [];
  const enqueued: string[] = [];
  const outbound: string[] = [];
  const launch = async (port: number) =>
    await startCluster(readConfig({}, { ...overrides, port }), {
      roles: options.roles ?? { web: true, worker: true },
      onEvent: (e) => events.push(e),
      onJobEnqueued: (queue, jobId) => enqueued.push(`${queue} ${jobId}`),
      onOutboundRequest: (url) => outbound.push(url.href),
      deliveryRetry: { maxAttempts: 8, initialDelayMs: 200, maxDelayMs: 2000 },
      maintenanceIntervalMs: 500,
    });
  let running: RunningCluster | undefined = await launch(0);
  const port = running.port;
  return {
    name,
    events,
    enqueued,
    outbound,
    current() {
      if (running == null) throw new Error(`${name} is stopped`);
      return running;
    },
    async stop() {
      await running?.stop();
      running = undefined;
    },
    async restart(config) {
      await running?.stop();
      running = undefined;
      if (config != null) overrides = { ...overrides, ...config };
      running = await launch(port);
      return running;
    },
    async destroy() {
      await running?.stop();
      running = undefined;
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Calls a cluster's REST API as the test's admin client. */
export async function api(
  cluster: RunningCluster,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const response = await fetch(`${cluster.urls.origin}/api/v1${path}`, {
    method,
    headers: {
      authorization: `Bearer ${TEST_TOKEN}`,
      ...(body !== undefined ? { "content-type": "application/json" } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await response.text();
  return { status: response.status, json: text === "" ? {} : JSON.parse(text) };
}

/** Polls `probe` until it returns a value other than undefined. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 30_000,
): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Makes `follower` follow `followee` and waits for the Accept. */
export async function follow(follower: RunningCluster, followee: RunningCluster): Promise<void> {
  await follower.federation.follow(followee.urls.actor);
  await waitFor(`${follower.urls.actor} to be accepted by ${followee.urls.actor}`, async () => {
    const row = await follower.database.db
      .selectFrom("following")
      .select("state")
      .where("actor_id", "=", followee.urls.actor)
      .executeTakeFirst();
    return row?.state === "accepted" ? true : undefined;
  });
}

/** Waits until the task resolves and returns its state. */
export async function waitForResolution(
  cluster: RunningCluster,
  taskId: string,
  timeoutMs = 60_000,
): Promise<string> {
  return await waitFor(
    `${taskId} on ${cluster.urls.actor} to resolve`,
    async () => {
      const view = await cluster.tasks.getTask(taskId);
      const state = view?.task.state;
      return state === "completed" || state === "failed" || state === "exception"
        ? state
        : undefined;
    },
    timeoutMs,
  );
}

/** The sha256 (hex) of artifact `name` of the local task `taskId`, as the cluster stored it. */
export async function artifactDigest(
  cluster: RunningCluster,
  taskId: string,
  name: string,
): Promise<string> {
  const row = await cluster.database.db
    .selectFrom("artifacts")
    .select("sha256")
    .where("task_id", "=", taskId)
    .where("name", "=", name)
    .executeTakeFirstOrThrow();
  return row.sha256;
}

/**
 * Waits until each of `clusters`, in order, has handed every activity it published to its
 * followers and every delivery was answered (or given up): what they sent has been applied.
 * Give the clusters in the order activities flow (an origin before a relay).
 */
export async function waitForDeliveries(
  clusters: readonly RunningCluster[],
  timeoutMs?: number,
): Promise<void> {
  for (const cluster of clusters) {
    await waitFor(
      `${cluster.urls.actor} to deliver what it published`,
      async () => {
        const db = cluster.database.db;
        const unsent = await db
          .selectFrom("outbox")
          .select("activity_id")
          .where("fanned_out_at", "is", null)
          .limit(1)
          .execute();
        const open = await db
          .selectFrom("deliveries")
          .select("activity_id")
          .where("delivered_at", "is", null)
          .where("abandoned_at", "is", null)
          .limit(1)
          .execute();
        return unsent.length === 0 && open.length === 0 ? true : undefined;
      },
      timeoutMs,
    );
  }
}

/** Every row of the tables an inbox can change, for "nothing changed" assertions. */
export async function snapshot(cluster: RunningCluster): Promise<Record<string, unknown[]>> {
  const db = cluster.database.db;
  return {
    tasks: await db
      .selectFrom("tasks")
      .select(["task_id", "state", "updated_at"])
      .orderBy("task_id")
      .execute(),
    runs: await db
      .selectFrom("runs")
      .select(["task_id", "run_id", "state"])
      .orderBy("task_id")
      .orderBy("run_id")
      .execute(),
    task_dependencies: await db
      .selectFrom("task_dependencies")
      .selectAll()
      .orderBy("task_id")
      .orderBy("dependency")
      .execute(),
    remote_tasks: await db.selectFrom("remote_tasks").selectAll().orderBy("task_url").execute(),
    remote_artifacts: await db
      .selectFrom("remote_artifacts")
      .selectAll()
      .orderBy("artifact_url")
      .execute(),
    inbox_processed: await db
      .selectFrom("inbox_processed")
      .selectAll()
      .orderBy("activity_id")
      .execute(),
    followers: await db.selectFrom("followers").selectAll().orderBy("actor_id").execute(),
    following: await db.selectFrom("following").selectAll().orderBy("actor_id").execute(),
    outbox: await db.selectFrom("outbox").select(["activity_id"]).orderBy("activity_id").execute(),
  };
}

/** Queues whose depth {@link queueDepths} reports: the task service's and Fedify's outbox. */
const OBSERVED_QUEUES = ["tasks", "publish", "dereference", "fedify-outbox"] as const;

/** Jobs waiting or delayed per queue, for "nothing was queued" assertions. */
export async function queueDepths(cluster: RunningCluster): Promise<Record<string, number>> {
  const depths: Record<string, number> = {};
  for (const queue of OBSERVED_QUEUES) depths[queue] = await cluster.jobs.depth(queue);
  return depths;
}
