/**
 * Inbox ingestion: signed `TaskCompleted` activities from a followed cluster, posted to the
 * receiver's inbox by several concurrent senders, each verified (RFC 9421 signature, key
 * ownership, origin rules), deduplicated and persisted with its effect. Measured: accepted
 * activities per second, counted from the receiver's own database, plus the same number of
 * replays (already-seen ids) per second.
 *
 * The activities are signed beforehand with the upstream cluster's real key, so that the
 * figure is the receiver's work and not the sender's.
 *
 *   npm run bench -- ingest [--runs 2000] [--concurrency 8] [--backend …]
 */
import { randomUUID } from "node:crypto";
import { buildTaskCompleted } from "../protocol/index.ts";
import type { RunningCluster } from "../server/cluster.ts";
import { clusterRsaKey } from "../test/support/signing.ts";
import { signRequest } from "@fedify/fedify";
import { measureFloor, type Floor } from "./floor.ts";
import { startBenchClusters, until, type BenchBackend } from "./support.ts";

/** The result of one ingestion run. */
export interface IngestResult {
  readonly benchmark: "inbox-ingest";
  readonly backend: BenchBackend;
  readonly activities: number;
  readonly concurrency: number;
  readonly activitiesPerSecond: number;
  readonly replaysPerSecond: number;
  /** Responses other than 202 (none expected). */
  readonly refused: number;
  readonly floor: Floor;
  /** 1000 / (RSA verify + commit): one core's ceiling for verify-and-persist. */
  readonly floorActivitiesPerSecond: number;
}

function taskCompleted(upstream: RunningCluster, n: number) {
  const taskUrl = upstream.urls.task(`ingest-${n}`);
  return buildTaskCompleted({
    id: upstream.urls.activity(randomUUID()),
    actor: upstream.urls.actor,
    published: new Date(),
    to: [upstream.urls.followers],
    task: {
      id: taskUrl,
      attributedTo: upstream.urls.actor,
      name: `ingest-${n}`,
      taskGroup: upstream.urls.taskGroup("ingest"),
      taskState: "completed",
      runId: 0,
      reasonResolved: "completed",
      resolved: new Date(),
      requires: "all-completed",
      dependencies: [],
      artifacts: [],
    },
  });
}

/** Posts every prepared request with `concurrency` in flight; returns the non-202 count. */
async function postAll(
  requests: readonly { url: string; headers: Headers; body: string }[],
  concurrency: number,
): Promise<number> {
  let next = 0;
  let refused = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < requests.length) {
        const r = requests[next++]!;
        const response = await fetch(r.url, { method: "POST", headers: r.headers, body: r.body });
        await response.arrayBuffer();
        if (response.status !== 202) refused++;
      }
    }),
  );
  return refused;
}

/** Runs the benchmark with `activities` distinct activities. */
export async function ingest(
  backend: BenchBackend,
  options: { activities: number; concurrency: number },
): Promise<IngestResult> {
  const { clusters, cleanup } = await startBenchClusters(backend, ["upstream", "receiver"]);
  const [upstream, receiver] = clusters as [RunningCluster, RunningCluster];
  try {
    await receiver.federation.follow(upstream.urls.actor);
    await until(async () => {
      const row = await receiver.database.db
        .selectFrom("following")
        .select("state")
        .executeTakeFirst();
      return row?.state === "accepted" ? true : undefined;
    }, 30_000);
    const key = await clusterRsaKey(upstream);
    const prepared: { url: string; headers: Headers; body: string }[] = [];
    for (let i = 0; i < options.activities; i++) {
      const body = JSON.stringify(taskCompleted(upstream, i));
      const signed = await signRequest(
        new Request(receiver.urls.inbox, {
          method: "POST",
          headers: { "content-type": "application/activity+json" },
          body,
        }),
        key.privateKey,
        key.keyId,
        { spec: "rfc9421" },
      );
      prepared.push({ url: receiver.urls.inbox, headers: new Headers(signed.headers), body });
    }
    const before = await countProcessed(receiver);
    // Warm-up: the key fetch and connection set-up are paid once, not per activity.
    await postAll(prepared.slice(0, 1), 1);
    const t0 = performance.now();
    const refused = await postAll(prepared.slice(1), options.concurrency);
    const seconds = (performance.now() - t0) / 1000;
    const processed = (await countProcessed(receiver)) - before;
    if (processed !== options.activities) {
      throw new Error(`${processed} of ${options.activities} activities were persisted`);
    }
    const r0 = performance.now();
    const replayRefused = await postAll(prepared.slice(1), options.concurrency);
    const replaySeconds = (performance.now() - r0) / 1000;
    if ((await countProcessed(receiver)) - before !== options.activities) {
      throw new Error("a replayed activity was persisted twice");
    }
    const floor = await measureFloor(receiver, 200);
    return {
      benchmark: "inbox-ingest",
      backend,
      activities: options.activities,
      concurrency: options.concurrency,
      activitiesPerSecond: Math.round((options.activities - 1) / seconds),
      replaysPerSecond: Math.round((options.activities - 1) / replaySeconds),
      refused: refused + replayRefused,
      floor,
      floorActivitiesPerSecond: Math.round(1000 / (floor.rsaVerifyMs + floor.databaseCommitMs)),
    };
  } finally {
    await cleanup();
  }
}

async function countProcessed(cluster: RunningCluster): Promise<number> {
  const row = await cluster.database.db
    .selectFrom("inbox_processed")
    .select((eb) => eb.fn.countAll<string>().as("n"))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}
