/**
 * Cross-cluster unblock latency: the time from cluster A resolving a task to cluster B's
 * dependent task starting to run (claimed by a worker), over loopback, with real
 * signatures, delivery and verification. Both instants come from the same clock (both
 * clusters run in this process). Prints JSON, with the physical floor measured in the same
 * run beside it.
 *
 * Beside the push path it measures what a user would otherwise build: B does not follow A
 * and learns of A's result by polling A's task document (`--poll-ms`, the dereference that
 * taskweb itself uses for catch-up), as dependency resolvers and workflow triggers that poll
 * do. Its latency is bounded below by the polling interval, whatever the software does.
 *
 *   npm run bench -- unblock-latency [--runs 200] [--backend embedded|postgres+redis]
 */
import type { RunningCluster } from "../server/cluster.ts";
import { measureFloor, type Floor } from "./floor.ts";
import { summarize, startBenchClusters, until, type BenchBackend } from "./support.ts";

/** One unblock-latency result. */
export interface UnblockLatencyResult extends ReturnType<typeof summarize> {
  readonly benchmark: "cross-cluster-unblock-latency";
  readonly backend: BenchBackend;
  /** `push`: B follows A and is told; `poll`: B dereferences A's task every `pollMs`. */
  readonly mode: "push" | "poll";
  readonly pollMs?: number;
  readonly unit: "ms";
  readonly description: string;
  readonly warmupRuns: number;
  readonly floor: Floor;
}

async function sample(a: RunningCluster, b: RunningCluster, i: number): Promise<number> {
  const upstream = `up-${i}`;
  const downstream = `down-${i}`;
  await b.tasks.createTask({
    taskId: downstream,
    dependencies: [a.urls.task(upstream)],
    payload: { command: ["true"] },
  });
  await a.tasks.createTask({ taskId: upstream, payload: { command: ["true"] } });
  const started = await until(async () => {
    const run = await b.database.db
      .selectFrom("runs")
      .select("started_at")
      .where("task_id", "=", downstream)
      .where("started_at", "is not", null)
      .executeTakeFirst();
    return run?.started_at ?? undefined;
  }, 120_000);
  const resolved = await a.database.db
    .selectFrom("tasks")
    .select("resolved_at")
    .where("task_id", "=", upstream)
    .executeTakeFirstOrThrow();
  return new Date(started).getTime() - new Date(resolved.resolved_at!).getTime();
}

/** Runs the benchmark and returns its result. */
export async function unblockLatency(
  backend: BenchBackend,
  runs: number,
  mode: { push: true } | { pollMs: number } = { push: true },
): Promise<UnblockLatencyResult> {
  const poll = "pollMs" in mode ? mode.pollMs : undefined;
  const { clusters, cleanup } = await startBenchClusters(backend, ["a", "b"], {
    ...(poll != null ? { config: { reconcileIntervalMs: poll } } : {}),
  });
  const [a, b] = clusters as [RunningCluster, RunningCluster];
  try {
    if (poll == null) {
      await b.federation.follow(a.urls.actor);
      await until(async () => {
        const row = await b.database.db.selectFrom("following").select("state").executeTakeFirst();
        return row?.state === "accepted" ? true : undefined;
      }, 30_000);
    }
    const samples: number[] = [];
    const warmup = Math.min(10, Math.ceil(runs / 10));
    for (let i = 0; i < runs + warmup; i++) {
      const ms = await sample(a, b, i);
      if (i >= warmup) samples.push(ms);
    }
    return {
      benchmark: "cross-cluster-unblock-latency",
      backend,
      mode: poll == null ? "push" : "poll",
      ...(poll != null ? { pollMs: poll } : {}),
      unit: "ms",
      description:
        poll == null
          ? "A's task resolved → B's dependent task claimed by a worker (B follows A)"
          : `the same, B polling A's task document every ${poll} ms instead of following`,
      warmupRuns: warmup,
      ...summarize(samples),
      floor: await measureFloor(b, 200),
    };
  } finally {
    await cleanup();
  }
}
