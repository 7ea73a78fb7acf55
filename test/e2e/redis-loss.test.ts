/**
 * Redis restarts empty: the queue is rebuilt from the database. A cluster on its own Redis
 * server (so that FLUSHALL touches nothing else) loses every job while a worker is busy; the
 * pending runs and the undelivered activities are enqueued again by the reconciler, each
 * task runs once, and a follower's dependent task still runs once. A Follow, and the Accept
 * of an approval, whose delivery jobs were lost before any worker took them are delivered
 * once the worker starts and rebuilds the queue from the database.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startCluster, type RunningCluster } from "../../server/cluster.ts";
import { DELIVERY_QUEUE } from "../../server/federation/delivery.ts";
import { describeServerBackend } from "../support/backends.ts";
import { freePort } from "../support/ports.ts";
import {
  follow,
  startTestCluster,
  TEST_TOKEN,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";

describeServerBackend("losing Redis's data", (backend) => {
  let redisProcess: ChildProcess | undefined;
  let redisUrl: string;
  let a: TestCluster;
  let b: TestCluster;
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskweb-redis-loss-"));
    const port = await freePort();
    redisProcess = spawn(
      "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      { stdio: "ignore" },
    );
    redisUrl = `redis://127.0.0.1:${port}`;
    const probe = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 0 });
    // Refused connections while the server starts are expected; the loop below retries.
    probe.on("error", () => {});
    await waitFor("the test's Redis server", async () => {
      try {
        if (probe.status !== "ready") await probe.connect();
        return (await probe.ping()) === "PONG" ? true : undefined;
      } catch {
        return undefined;
      }
    });
    probe.disconnect();
    // A: on its own Redis, one worker slot, reconciling every half second.
    a = await startTestCluster(backend, "flushed", {
      config: { redisUrl, workerConcurrency: 1, reconcileIntervalMs: 500 },
    });
    b = await startTestCluster(backend, "downstream");
    await follow(b.current(), a.current());
  });
  /**
   * Empties the cluster's Redis. (The cluster's own processes write again at once, queue
   * markers and limits, so the database is not observed empty afterwards.)
   */
  const flushAll = async () => {
    const admin = new Redis(redisUrl);
    try {
      expect(await admin.flushall()).toBe("OK");
    } finally {
      admin.disconnect();
    }
  };
  const workers: RunningCluster[] = [];
  /** Starts a worker process beside a cluster's web process (same database, same Redis). */
  const startWorkerOf = async (web: RunningCluster) => {
    const worker = await startCluster(
      { ...web.config, port: 0, publicUrl: web.urls.origin },
      { roles: { web: false, worker: true } },
    );
    workers.push(worker);
    return worker;
  };
  const openDeliveries = async (cluster: RunningCluster) =>
    await cluster.database.db
      .selectFrom("deliveries")
      .select(["activity_id", "inbox", "delivered_at"])
      .where("delivered_at", "is", null)
      .where("abandoned_at", "is", null)
      .execute();

  afterAll(async () => {
    for (const worker of workers) await worker.stop();
    await Promise.all([a?.destroy(), b?.destroy()]);
    redisProcess?.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  });

  it("runs every pending task once and delivers every activity after FLUSHALL", async () => {
    const A = a.current();
    const gate = join(dir, "gate");
    await A.tasks.createTask({
      taskId: "blocker",
      payload: {
        command: ["sh", "-c", 'while [ ! -f "$GATE" ]; do sleep 0.02; done'],
        env: { GATE: gate },
      },
    });
    await waitFor("the blocker to hold the only worker slot", async () =>
      (await A.tasks.getTask("blocker"))?.task.state === "running" ? true : undefined,
    );
    const ids = Array.from({ length: 10 }, (_, i) => `queued-${i}`);
    for (const taskId of ids) {
      await A.tasks.createTask({ taskId, payload: { command: ["true"] } });
    }
    await b.current().tasks.createTask({
      taskId: "after-queued",
      dependencies: [A.urls.task("queued-9")],
      payload: { command: ["true"] },
    });
    expect(await A.jobs.depth("tasks")).toBe(ids.length);

    await flushAll();
    await writeFile(gate, "");

    for (const taskId of ["blocker", ...ids]) {
      expect(await waitForResolution(A, taskId)).toBe("completed");
    }
    expect(await waitForResolution(b.current(), "after-queued")).toBe("completed");
    // Exactly once: one run per task, and B ran its task once.
    for (const taskId of ["blocker", ...ids]) {
      const runs = (await A.tasks.getTask(taskId))!.runs;
      expect({ taskId, runs: runs.map((r) => r.state) }).toEqual({ taskId, runs: ["completed"] });
    }
    expect((await b.current().tasks.getTask("after-queued"))!.runs).toHaveLength(1);
    // Every activity of A was handed to delivery again.
    await waitFor("A's outbox to be fanned out", async () => {
      const left = await A.database.db
        .selectFrom("outbox")
        .select("activity_id")
        .where("fanned_out_at", "is", null)
        .execute();
      return left.length === 0 ? true : undefined;
    });
    // B took A's completion of queued-9 once.
    const processed = await b
      .current()
      .database.db.selectFrom("inbox_processed")
      .select(["activity_id", "types"])
      .where("actor_id", "=", A.urls.actor)
      .execute();
    const completions = processed.filter((p) => (p.types as string[]).includes("TaskCompleted"));
    expect(new Set(completions.map((c) => c.activity_id)).size).toBe(completions.length);
    expect(completions.length).toBeGreaterThanOrEqual(1);
  });

  it("delivers a Follow and an approval's Accept whose queue jobs FLUSHALL took", async () => {
    // Web processes only: what they write waits in Redis for a worker.
    const webOnly = { web: true, worker: false };
    const follower = await startTestCluster(backend, "asks", {
      roles: webOnly,
      config: { redisUrl },
    });
    const followee = await startTestCluster(backend, "approves", {
      roles: webOnly,
      config: { redisUrl, followerAcceptance: "approval" },
    });
    try {
      const F = follower.current();
      const G = followee.current();
      await F.federation.follow(G.urls.actor);
      const [follow] = await openDeliveries(F);
      expect(follow?.activity_id).toMatch(/#follows\//);
      expect(follow?.inbox).toBe(G.urls.inbox);
      expect(await F.jobs.depth(DELIVERY_QUEUE)).toBe(1);
      await flushAll();
      expect(await F.jobs.depth(DELIVERY_QUEUE)).toBe(0);
      // The operator's view names the followee's inbox and the delivery still open.
      const peers = (await (
        await fetch(`${F.urls.origin}/api/v1/deliveries/peers`, {
          headers: { authorization: `Bearer ${TEST_TOKEN}` },
        })
      ).json()) as { peers: { inbox: string; pending: number }[] };
      expect(peers.peers).toContainEqual(
        expect.objectContaining({ inbox: G.urls.inbox, pending: 1 }),
      );

      // The worker starts, rebuilds the queue from the database, and the Follow arrives.
      await startWorkerOf(F);
      const pending = await waitFor("G to hold F's follow for approval", async () => {
        const row = await G.database.db
          .selectFrom("followers")
          .selectAll()
          .where("actor_id", "=", F.urls.actor)
          .executeTakeFirst();
        return row?.state === "pending" ? row : undefined;
      });
      expect(pending.follow_id).toBe(follow!.activity_id);
      await waitFor("F's Follow to be marked delivered", async () =>
        (await openDeliveries(F)).length === 0 ? true : undefined,
      );

      expect(await G.federation.approveFollower(F.urls.actor)).toBe(true);
      const [accept] = await openDeliveries(G);
      expect(accept?.activity_id).toMatch(/#accepts\//);
      expect(accept?.inbox).toBe(F.urls.inbox);
      expect(await G.jobs.depth(DELIVERY_QUEUE)).toBe(1);
      await flushAll();
      expect(await G.jobs.depth(DELIVERY_QUEUE)).toBe(0);
      // Nothing reached F while the job was gone.
      const following = () =>
        F.database.db
          .selectFrom("following")
          .selectAll()
          .where("actor_id", "=", G.urls.actor)
          .execute();
      expect((await following()).map((r) => r.state)).toEqual(["pending"]);

      const gWorker = await startWorkerOf(G);
      await waitFor("F to see its follow accepted", async () =>
        (await following())[0]?.state === "accepted" ? true : undefined,
      );
      await waitFor("G's Accept to be marked delivered", async () =>
        (await openDeliveries(G)).length === 0 ? true : undefined,
      );
      // Reconciling again sends nothing more: each delivery is done once, and each side has
      // one row for the relation.
      await gWorker.reconcile();
      expect(await G.jobs.depth(DELIVERY_QUEUE)).toBe(0);
      const sent = await G.database.db
        .selectFrom("deliveries")
        .select(["activity_id", "attempts", "delivered_at"])
        .execute();
      expect(sent).toHaveLength(1);
      expect(sent[0]!.attempts).toBe(1);
      expect(await following()).toHaveLength(1);
      const followers = await G.database.db
        .selectFrom("followers")
        .select(["actor_id", "state"])
        .execute();
      expect(followers).toEqual([{ actor_id: F.urls.actor, state: "accepted" }]);
    } finally {
      await Promise.all(workers.splice(0).map((w) => w.stop()));
      await Promise.all([follower.destroy(), followee.destroy()]);
    }
  }, 180_000);
});
