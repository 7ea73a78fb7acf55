/**
 * Offers of task graphs end to end: cluster B offers a graph to cluster C over real HTTP on
 * loopback. C runs it only when B's actor holds `taskweb:offer:accept` on C; B's task that
 * waits on the remote group runs once C sends the group's TaskGroupResolved back.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DELIVERY_QUEUE } from "../../server/federation/delivery.ts";
import type { RunningCluster } from "../../server/cluster.ts";
import { testBackends } from "../support/backends.ts";
import {
  snapshot,
  startTestCluster,
  TEST_TOKEN,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";

async function offer(B: RunningCluster, to: string, graph: unknown) {
  const response = await fetch(`${B.urls.origin}/api/v1/offers`, {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ to, graph }),
  });
  expect(response.status).toBe(201);
  return (await response.json()) as { offerId: string; state: string };
}

async function answered(B: RunningCluster, offerId: string) {
  return await waitFor(`an answer to ${offerId}`, async () => {
    const o = await B.offers.get(offerId);
    return o != null && o.state !== "pending" ? o : undefined;
  });
}

/** Everything an offer could create on C. */
async function everything(C: RunningCluster) {
  const { inbox_processed: _, ...rest } = await snapshot(C);
  return {
    ...rest,
    task_groups: await C.database.db.selectFrom("task_groups").selectAll().execute(),
    offers_received: await C.database.db.selectFrom("offers_received").selectAll().execute(),
    // Deliveries (the Reject on its way to B) aside, no job may appear.
    jobs: await C.database.db
      .selectFrom("jobs")
      .select(["queue", "job_id"])
      .where("queue", "not like", "fedify%")
      .where("queue", "!=", DELIVERY_QUEUE)
      .execute(),
  };
}

// The embedded backend only: these paths share the inbox and queue code that the hooks and
// two-clusters suites run on PostgreSQL + Redis too, and CI time is shared.
const backend = testBackends()[0]!;

describe(`offers of task graphs on ${backend.name}`, () => {
  let b: TestCluster;
  let c: TestCluster;
  let B: RunningCluster;
  let C: RunningCluster;

  beforeAll(async () => {
    [b, c] = await Promise.all([startTestCluster(backend, "b"), startTestCluster(backend, "c")]);
    B = b.current();
    C = c.current();
  });
  afterAll(async () => {
    await Promise.all([b?.destroy(), c?.destroy()]);
  });

  it("is rejected when B holds no grant on C, and creates nothing on C", async () => {
    const before = await everything(C);
    const sent = await offer(B, C.urls.actor, {
      taskGroupId: "unwanted",
      tasks: [{ taskId: "unwanted-1", payload: { command: ["true"] } }],
    });
    const answer = await answered(B, sent.offerId);
    expect(answer.state).toBe("rejected");
    expect(answer.reason).toContain("taskweb:offer:accept");
    expect(answer.taskGroupUrl).toBeNull();
    expect(c.events.some((e) => e.type === "offer" && e.outcome.outcome === "rejected")).toBe(true);
    expect(await everything(C)).toEqual(before);
  });

  it("runs an accepted offer on C and unblocks B's task waiting on the remote group", async () => {
    await C.auth.grant(`actor:${B.urls.actor}`, ["taskweb:offer:accept"]);
    const sent = await offer(B, C.urls.actor, {
      taskGroupId: "hw-tests",
      tasks: [
        { taskId: "hw-flash", payload: { command: ["sh", "-c", "sleep 0.3"] } },
        { taskId: "hw-check", dependencies: ["hw-flash"], payload: { command: ["true"] } },
      ],
    });
    const answer = await answered(B, sent.offerId);
    expect(answer.state).toBe("accepted");
    expect(answer.taskGroupUrl).toBe(C.urls.taskGroup("hw-tests"));
    await B.tasks.createTask({
      taskId: "after-hw",
      dependencies: [answer.taskGroupUrl!],
      payload: { command: ["true"] },
    });
    expect((await B.tasks.getTask("after-hw"))?.task.state).toBe("unscheduled");
    expect(await waitForResolution(C, "hw-check")).toBe("completed");
    expect(await waitForResolution(B, "after-hw")).toBe("completed");
    const dep = (await B.tasks.getTask("after-hw"))!.dependencies[0]!;
    expect(dep).toMatchObject({
      dependency: C.urls.taskGroup("hw-tests"),
      resolution: "completed",
    });
    const received = await C.database.db.selectFrom("offers_received").selectAll().execute();
    expect(received).toHaveLength(1);
    expect(received[0]).toMatchObject({ actor_id: B.urls.actor, task_group_id: "hw-tests" });
    expect(received[0]!.callback_activity_id).not.toBeNull();
  });

  it("fails B's waiting task when a task of the offered group fails", async () => {
    const sent = await offer(B, C.urls.actor, {
      taskGroupId: "hw-broken",
      tasks: [{ taskId: "hw-broken-1", payload: { command: ["false"] } }],
    });
    const answer = await answered(B, sent.offerId);
    expect(answer.state).toBe("accepted");
    await B.tasks.createTask({
      taskId: "after-broken",
      dependencies: [answer.taskGroupUrl!],
      payload: { command: ["true"] },
    });
    expect(await waitForResolution(B, "after-broken")).not.toBe("completed");
    expect((await B.tasks.getTask("after-broken"))!.runs.every((r) => r.started_at == null)).toBe(
      true,
    );
  });
});
