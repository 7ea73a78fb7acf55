/**
 * Redis restarts empty: the queue is rebuilt from the database. A cluster on its own Redis
 * server (so that FLUSHALL touches nothing else) loses every job while a worker is busy; the
 * pending runs and the undelivered activities are enqueued again by the reconciler, each
 * task runs once, and a follower's dependent task still runs once.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { describeServerBackend } from "../support/backends.ts";
import { freePort } from "../support/ports.ts";
import {
  follow,
  startTestCluster,
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
  afterAll(async () => {
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

    const admin = new Redis(redisUrl);
    try {
      expect(await admin.flushall()).toBe("OK");
      expect(await admin.dbsize()).toBe(0);
    } finally {
      admin.disconnect();
    }
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
});
