/**
 * Cross-cluster unblock latency: the time from cluster A resolving a task to cluster B's
 * dependent task starting to run (claimed by a worker), over loopback, with real
 * signatures, delivery and verification. Both instants come from the same clock (both
 * clusters run in this process). Prints JSON.
 *
 *   npm run bench -- unblock-latency [--runs 200] [--backend embedded|postgres+redis]
 */
import { summarize, startBenchClusters, until, type BenchBackend } from "./support.ts";

/** Runs the benchmark and returns its result. */
export async function unblockLatency(backend: BenchBackend, runs: number) {
  const { clusters, cleanup } = await startBenchClusters(backend, ["a", "b"]);
  const [a, b] = clusters as [(typeof clusters)[0], (typeof clusters)[0]];
  try {
    await b.federation.follow(a.urls.actor);
    await until(async () => {
      const row = await b.database.db.selectFrom("following").select("state").executeTakeFirst();
      return row?.state === "accepted" ? true : undefined;
    }, 30_000);
    const samples: number[] = [];
    const warmup = Math.min(10, Math.ceil(runs / 10));
    for (let i = 0; i < runs + warmup; i++) {
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
      }, 60_000);
      const resolved = await a.database.db
        .selectFrom("tasks")
        .select("resolved_at")
        .where("task_id", "=", upstream)
        .executeTakeFirstOrThrow();
      if (i >= warmup)
        samples.push(new Date(started).getTime() - new Date(resolved.resolved_at!).getTime());
    }
    return {
      benchmark: "cross-cluster-unblock-latency",
      backend,
      unit: "ms",
      description: "A's task resolved → B's dependent task claimed by a worker",
      warmupRuns: warmup,
      ...summarize(samples),
    };
  } finally {
    await cleanup();
  }
}
