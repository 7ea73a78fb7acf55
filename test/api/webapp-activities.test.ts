/**
 * `GET /api/v1/tasks/<id>/activities`: the activities a cluster sent about a task (from its
 * outbox) and the ones it received about it, by id, as its inbox recorded them when it
 * applied them. Two clusters on loopback, B following A, real signatures; on the embedded
 * default and on PostgreSQL + Redis.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import type { RunningCluster } from "../../server/cluster.ts";
import { describeEachBackend } from "../support/backends.ts";
import {
  follow,
  snapshot,
  waitForDeliveries,
  startTestCluster,
  TEST_TOKEN,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";
import { clusterRsaKey, signedPost } from "../support/signing.ts";

interface Received {
  activityId: string;
  types: string[];
  actor: string;
  receivedAt: string;
  object: string | null;
  about: "dependency" | "hook";
  relayedBy: string | null;
}

interface Activities {
  taskId: string;
  sent: { activityId: string; types: string[]; publishedAt: string }[];
  received: Received[];
  remote: { kind: string; taskUrl: string }[];
}

async function activitiesOf(
  cluster: RunningCluster,
  taskId: string,
  token = TEST_TOKEN,
): Promise<{ status: number; body: Activities }> {
  const res = await fetch(`${cluster.urls.origin}/api/v1/tasks/${taskId}/activities`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  return { status: res.status, body: (await res.json()) as Activities };
}

/** A's outbox: the id and types of each activity about A's task `taskId`. */
async function outboxAbout(A: RunningCluster, taskId: string) {
  const rows = await A.database.db
    .selectFrom("outbox")
    .select(["activity_id", "types", "activity"])
    .orderBy("seq")
    .execute();
  const url = A.urls.task(taskId);
  return rows
    .filter((r) => {
      const object = r.activity.object as { id?: string; task?: string } | undefined;
      return object?.id === url || object?.task === url;
    })
    .map((r) => ({ activityId: r.activity_id, activity: r.activity }));
}

describeEachBackend("task activities", (backend) => {
  let a: TestCluster;
  let b: TestCluster;

  beforeAll(async () => {
    [a, b] = await Promise.all([startTestCluster(backend, "a"), startTestCluster(backend, "b")]);
    await follow(b.current(), a.current());
  });
  afterAll(async () => {
    await Promise.all([a?.destroy(), b?.destroy()]);
  });

  it("lists, per task, the activities received about its remote dependencies by id, type, sender and time", async () => {
    const A = a.current();
    const B = b.current();
    const hook = await fetch(`${B.urls.origin}/api/v1/hooks/on-report`, {
      method: "PUT",
      headers: { Authorization: `Bearer ${TEST_TOKEN}`, "Content-Type": "application/json" },
      body: JSON.stringify({
        filter: { cluster: A.urls.actor, artifactName: "public/report.txt" },
        template: { tasks: [{ taskId: "read", payload: { command: ["true"] } }] },
      }),
    });
    expect(hook.status).toBe(201);
    await B.tasks.createTask({
      taskId: "deploy",
      dependencies: [A.urls.task("build")],
      payload: { command: ["true"] },
    });
    await B.tasks.createTask({ taskId: "local", payload: { command: ["true"] } });
    await A.tasks.createTask({
      taskId: "build",
      payload: {
        command: [
          "sh",
          "-c",
          'mkdir -p "$TASKWEB_ARTIFACTS/public"; echo report > "$TASKWEB_ARTIFACTS/public/report.txt"',
        ],
      },
    });
    // Another of A's tasks: B receives its completion too, but no task of B's is about it.
    await A.tasks.createTask({ taskId: "lint", payload: { command: ["true"] } });
    expect(await waitForResolution(A, "build")).toBe("completed");
    expect(await waitForResolution(A, "lint")).toBe("completed");
    expect(await waitForResolution(B, "deploy")).toBe("completed");
    expect(await waitForResolution(B, "local")).toBe("completed");

    const aboutBuild = await outboxAbout(A, "build");
    expect(aboutBuild).toHaveLength(2);
    const lint = await outboxAbout(A, "lint");
    expect(lint).toHaveLength(1);
    await waitFor("B to record every activity A sent", async () => {
      const ids = (
        await B.database.db.selectFrom("inbox_processed").select("activity_id").execute()
      ).map((r) => r.activity_id);
      return [...aboutBuild, ...lint].every((x) => ids.includes(x.activityId)) ? true : undefined;
    });

    const deploy = await activitiesOf(B, "deploy");
    expect(deploy.status).toBe(200);
    const received = deploy.body.received;
    expect(received.map((r) => r.activityId).sort()).toEqual(
      aboutBuild.map((x) => x.activityId).sort(),
    );
    expect(received.map((r) => r.types[0]).sort()).toEqual(["ArtifactPublished", "TaskCompleted"]);
    for (const r of received) {
      expect(r).toMatchObject({
        actor: A.urls.actor,
        object: A.urls.task("build"),
        about: "dependency",
        relayedBy: null,
      });
      expect(Number.isNaN(Date.parse(r.receivedAt))).toBe(false);
    }
    // What B learnt from them is listed apart, as before.
    expect(deploy.body.remote.map((r) => r.kind).sort()).toEqual(["artifact", "task-state"]);
    // The task sent its own completion; that is not one it received.
    expect(deploy.body.sent.map((s) => s.types.filter((t) => t !== "Activity"))).toEqual([
      ["TaskCompleted"],
    ]);
    expect((await activitiesOf(B, "local")).body.received).toEqual([]);

    // The hook's task lists the activity that fired it.
    const fire = await waitFor("the hook to fire", async () => {
      const rows = await B.database.db
        .selectFrom("hook_fires")
        .selectAll()
        .where("hook_id", "=", "on-report")
        .execute();
      return rows[0]?.task_group_id != null ? rows[0] : undefined;
    });
    const published = aboutBuild.find((x) => x.activityId === fire.activity_id);
    expect(published).toBeDefined();
    expect(await waitForResolution(B, `${fire.task_group_id}-read`)).toBe("completed");
    const fired = await activitiesOf(B, `${fire.task_group_id}-read`);
    expect(fired.body.received).toMatchObject([
      {
        activityId: fire.activity_id,
        types: ["ArtifactPublished"],
        actor: A.urls.actor,
        about: "hook",
      },
    ]);

    // A redelivered activity is recorded once: the list does not change. (Everything A sent,
    // its task groups' resolutions too, has arrived before the snapshot.)
    await waitForDeliveries([A]);
    const before = await snapshot(B);
    const replay = await signedPost(B.urls.inbox, aboutBuild[0]!.activity, {
      key: await clusterRsaKey(A),
    });
    expect(replay.status).toBe(202);
    await waitFor("the duplicate to be seen", () =>
      b.events.some(
        (e) =>
          e.type === "inbox" &&
          e.outcome.outcome === "ignored" &&
          e.outcome.reason === "duplicate" &&
          e.outcome.detail === aboutBuild[0]!.activityId,
      )
        ? true
        : undefined,
    );
    expect(await snapshot(B)).toEqual(before);
    expect((await activitiesOf(B, "deploy")).body.received).toEqual(received);
  });

  it("refuses a client without the task's read scope", async () => {
    const B = b.current();
    const res = await fetch(`${B.urls.origin}/api/v1/clients/outsider`, {
      method: "PUT",
      headers: { Authorization: `Bearer ${TEST_TOKEN}`, "Content-Type": "application/json" },
      body: JSON.stringify({ scopes: ["taskweb:task:read:local"] }),
    });
    expect(res.status).toBe(201);
    const { token } = (await res.json()) as { token: string };
    const refused = await activitiesOf(B, "deploy", token);
    expect(refused.status).toBe(403);
    expect(refused.body).toMatchObject({ code: "InsufficientScopes" });
    expect(refused.body.received).toBeUndefined();
    expect((await activitiesOf(B, "local", token)).status).toBe(200);
  });
});
