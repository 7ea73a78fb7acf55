/**
 * A follower down for longer than its followee retries: every delivery to it is given up
 * (the horizon is seconds here), and when it starts again it catches up by paging the
 * followee's outbox, so it processes every completion it missed, once, and its dependent
 * tasks run once.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { describeServerBackend } from "../support/backends.ts";
import {
  follow,
  startTestCluster,
  waitFor,
  waitForDeliveries,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";

describeServerBackend("a follower down longer than the retry horizon", (backend) => {
  let a: TestCluster;
  let b: TestCluster;

  beforeAll(async () => {
    a = await startTestCluster(backend, "upstream", {
      config: {
        delivery: {
          initialDelayMs: 200,
          maxDelayMs: 500,
          horizonMs: 2500,
          circuitFailures: 3,
          circuitCooldownMs: 500,
          attemptLeaseMs: 10_000,
        },
      },
    });
    b = await startTestCluster(backend, "downstream");
    await follow(b.current(), a.current());
  });
  afterAll(async () => {
    await Promise.all([a?.destroy(), b?.destroy()]);
  });

  it("catches up on every completion by paging the outbox after it starts again", async () => {
    const A = a.current();
    const count = 60; // more than one outbox page (50 items)
    const ids = Array.from({ length: count }, (_, i) => `up-${i}`);
    for (const taskId of ids.slice(0, 10)) {
      await b.current().tasks.createTask({
        taskId: `down-${taskId}`,
        dependencies: [`${A.urls.actor}/tasks/${taskId}`],
        payload: { command: ["true"] },
      });
    }
    await b.stop();
    for (const taskId of ids) await A.tasks.createTask({ taskId, payload: { command: ["true"] } });
    for (const taskId of ids) expect(await waitForResolution(A, taskId)).toBe("completed");
    // Every delivery to the stopped follower is given up.
    await waitForDeliveries([A], 60_000);
    const completions = (
      await A.database.db.selectFrom("outbox").select(["activity_id", "types"]).execute()
    )
      .filter((o) => o.types.includes("TaskCompleted"))
      .map((o) => o.activity_id);
    expect(completions).toHaveLength(count);
    const delivered = await A.database.db
      .selectFrom("deliveries")
      .select("activity_id")
      .where("activity_id", "in", completions)
      .where("delivered_at", "is not", null)
      .execute();
    expect(delivered).toEqual([]);

    const B = await b.restart();
    for (const taskId of ids.slice(0, 10)) {
      expect(await waitForResolution(B, `down-${taskId}`)).toBe("completed");
    }
    const processed = await waitFor("every completion to be processed", async () => {
      const rows = await B.database.db
        .selectFrom("inbox_processed")
        .select("activity_id")
        .where("activity_id", "in", completions)
        .execute();
      return rows.length === count ? rows : undefined;
    });
    expect(new Set(processed.map((r) => r.activity_id)).size).toBe(count);
    // Each dependent ran once, and a second catch-up applies nothing again.
    const runs = await B.database.db.selectFrom("runs").select(["task_id", "state"]).execute();
    expect(runs).toHaveLength(10);
    expect(runs.every((r) => r.state === "completed")).toBe(true);
    const everything = await A.database.db.selectFrom("outbox").select("activity_id").execute();
    const before = await waitFor("every activity of A's outbox to be processed", async () => {
      const rows = await B.database.db
        .selectFrom("inbox_processed")
        .select("activity_id")
        .execute();
      return rows.length === everything.length ? rows : undefined;
    });
    await B.reconcile();
    await new Promise((r) => setTimeout(r, 1000));
    const after = await B.database.db.selectFrom("inbox_processed").select("activity_id").execute();
    expect(after.length).toBe(before.length);
    const seen = await B.database.db
      .selectFrom("following")
      .select("outbox_seen")
      .executeTakeFirstOrThrow();
    expect(seen.outbox_seen).not.toBeNull();
  }, 120_000);
});
