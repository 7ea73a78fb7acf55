/**
 * Offers of task graphs end to end: cluster B offers a graph to cluster C over real HTTP on
 * loopback. C runs it only when B's actor holds `taskweb:offer:accept` on C; B's task that
 * waits on the remote group runs once C sends the group's TaskGroupResolved back, or, when
 * that callback is lost, once B's reconcile dereferences the group.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DELIVERY_QUEUE } from "../../server/federation/delivery.ts";
import { createOfferService, OFFER_CALLBACK_QUEUE } from "../../server/federation/offers.ts";
import type { RunningCluster } from "../../server/cluster.ts";
import { testBackends } from "../support/backends.ts";
import { clusterRsaKey, signedPost } from "../support/signing.ts";
import { createRecordingJobQueue } from "../support/recording-job-queue.ts";
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

  it("refuses an offer to a cluster that cannot be reached, and records nothing on B", async () => {
    const rows = async () => ({
      offers: await B.database.db.selectFrom("offers_sent").selectAll().execute(),
      addressed: await B.database.db.selectFrom("addressed_activities").selectAll().execute(),
      deliveries: await B.database.db.selectFrom("deliveries").selectAll().execute(),
    });
    const before = await rows();
    const response = await fetch(`${B.urls.origin}/api/v1/offers`, {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({
        // Nothing listens on port 1 of loopback.
        to: "http://127.0.0.1:1/clusters/nobody",
        graph: {
          taskGroupId: "nowhere",
          tasks: [{ taskId: "n-1", payload: { command: ["true"] } }],
        },
      }),
    });
    expect(response.status).toBe(502);
    expect(((await response.json()) as { code: string }).code).toBe("RemoteUnavailable");
    expect(await rows()).toEqual(before);
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
    // B may have read the resolved group before C's callback went out.
    const received = await waitFor("C to send the callback", async () => {
      const rows = await C.database.db.selectFrom("offers_received").selectAll().execute();
      return rows[0]?.callback_activity_id != null ? rows : undefined;
    });
    expect(received).toHaveLength(1);
    expect(received[0]).toMatchObject({ actor_id: B.urls.actor, task_group_id: "hw-tests" });
  });

  it("finds again, after a lost queue, only the callbacks of resolutions not yet sent", async () => {
    // C's offered group hw-tests resolved and its callback went out (the test above). What
    // C's reconcile enqueues is recorded here instead of run.
    const recorded = createRecordingJobQueue();
    const unused = () => {
      throw new Error("recovering callbacks sends nothing itself");
    };
    const offers = createOfferService({
      db: C.database.db,
      tasks: C.tasks,
      jobs: recorded,
      urls: C.urls,
      context: unused,
      commit: unused,
      policy: unused,
    });
    const recovered = async () => {
      recorded.enqueued.length = 0;
      await offers.recover();
      return recorded.enqueued.map((e) => [
        e.queue,
        (e.data as { taskGroupId: string }).taskGroupId,
      ]);
    };
    expect(await recovered()).not.toContainEqual([OFFER_CALLBACK_QUEUE, "hw-tests"]);

    // The note that the callback was sent is gone (as if the sending job was lost first).
    const sent = await C.database.db
      .selectFrom("offers_received")
      .select("callback_activity_id")
      .where("task_group_id", "=", "hw-tests")
      .executeTakeFirstOrThrow();
    const noteCallback = async (activityId: string | null) => {
      await C.database.db
        .updateTable("offers_received")
        .set({ callback_activity_id: activityId })
        .where("task_group_id", "=", "hw-tests")
        .execute();
    };
    await noteCallback(null);
    expect(await recovered()).toContainEqual([OFFER_CALLBACK_QUEUE, "hw-tests"]);

    // A newer resolution of the group (a rerun) than the one whose callback was sent.
    await noteCallback(sent.callback_activity_id);
    expect(await recovered()).not.toContainEqual([OFFER_CALLBACK_QUEUE, "hw-tests"]);
    const group = await C.database.db
      .selectFrom("task_groups")
      .select("resolved_at")
      .where("task_group_id", "=", "hw-tests")
      .executeTakeFirstOrThrow();
    await C.database.db
      .updateTable("task_groups")
      .set({ resolved_at: new Date(new Date(group.resolved_at!).getTime() + 1000) })
      .where("task_group_id", "=", "hw-tests")
      .execute();
    try {
      expect(await recovered()).toContainEqual([OFFER_CALLBACK_QUEUE, "hw-tests"]);
    } finally {
      await C.database.db
        .updateTable("task_groups")
        .set({ resolved_at: group.resolved_at })
        .where("task_group_id", "=", "hw-tests")
        .execute();
    }
  });

  it("creates one group, and answers once, when the same Offer is delivered again", async () => {
    const sent = await offer(B, C.urls.actor, {
      taskGroupId: "hw-twice",
      tasks: [{ taskId: "hw-twice-1", payload: { command: ["true"] } }],
    });
    expect((await answered(B, sent.offerId)).state).toBe("accepted");
    expect(await waitForResolution(C, "hw-twice-1")).toBe("completed");
    const original = await B.database.db
      .selectFrom("addressed_activities")
      .select("activity")
      .where("activity_id", "=", sent.offerId)
      .executeTakeFirstOrThrow();
    const before = await waitFor("C to send the callback and settle", async () => {
      const now = await everything(C);
      const callback = now.offers_received.find((o) => o.task_group_id === "hw-twice");
      return callback?.callback_activity_id != null && now.jobs.length === 0 ? now : undefined;
    });
    // Delivered again over HTTP: accepted (202) and dropped as already processed.
    const replay = await signedPost(C.urls.inbox, original.activity, {
      key: await clusterRsaKey(B),
    });
    expect(replay.status).toBe(202);
    // Handed to the offer service again (as a delivery racing the first would be): it stops
    // at the dedupe record; no second group, no second answer.
    const seen = c.events.length;
    await C.offers.receive(original.activity, B.urls.actor);
    expect(c.events.slice(seen)).toEqual([
      { type: "offer", outcome: { outcome: "ignored", detail: `duplicate: ${sent.offerId}` } },
    ]);
    expect(await everything(C)).toEqual(before);
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

  it("unblocks B's waiting task from the group's document when C's TaskGroupResolved is lost", async () => {
    const sent = await offer(B, C.urls.actor, {
      taskGroupId: "hw-lost-callback",
      tasks: [{ taskId: "hw-lost-1", payload: { command: ["sh", "-c", "sleep 1"] } }],
    });
    const answer = await answered(B, sent.offerId);
    expect(answer.state).toBe("accepted");
    const groupUrl = answer.taskGroupUrl!;
    await B.tasks.createTask({
      taskId: "after-lost",
      dependencies: [groupUrl],
      payload: { command: ["true"] },
    });
    // B's inbox refuses C from now on: every delivery of the callback fails.
    await B.followPolicy.add("block", C.urls.actor);
    expect(await waitForResolution(C, "hw-lost-1")).toBe("completed");
    const callback = await waitFor(
      "C to send the callback and give it up",
      async () => {
        const received = await C.database.db
          .selectFrom("offers_received")
          .select("callback_activity_id")
          .where("task_group_id", "=", "hw-lost-callback")
          .executeTakeFirstOrThrow();
        const queued = await C.database.db
          .selectFrom("jobs")
          .select("job_id")
          .where("queue", "in", ["fedify-outbox", "offer-callbacks"])
          .execute();
        return received.callback_activity_id != null && queued.length === 0
          ? received.callback_activity_id
          : undefined;
      },
      60_000,
    );
    await B.followPolicy.remove("block", C.urls.actor);
    expect((await B.tasks.getTask("after-lost"))?.task.state).toBe("unscheduled");

    // What start-up and the reconcile timer do.
    await B.reconcile();
    expect(await waitForResolution(B, "after-lost")).toBe("completed");
    expect((await B.tasks.getTask("after-lost"))!.dependencies[0]).toMatchObject({
      dependency: groupUrl,
      resolution: "completed",
    });
    // The callback itself never arrived: the group's document unblocked the task.
    const processed = await B.database.db
      .selectFrom("inbox_processed")
      .select("activity_id")
      .where("activity_id", "=", callback)
      .execute();
    expect(processed).toEqual([]);
  }, 120_000);
});
