/**
 * The core slice end to end: a task on cluster B waits for a task on cluster A, on another
 * server, and runs with A's artifact as soon as A finishes it. Real HTTP on loopback, real
 * signatures, on the embedded default and on PostgreSQL + Redis.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { sql } from "../../server/store/database.ts";
import { describeEachBackend } from "../support/backends.ts";
import {
  follow,
  startTestCluster,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";

describeEachBackend("two clusters", (backend) => {
  let a: TestCluster;
  let b: TestCluster;
  let flags: string;

  beforeAll(async () => {
    flags = await mkdtemp(join(tmpdir(), "taskweb-flags-"));
    [a, b] = await Promise.all([startTestCluster(backend, "a"), startTestCluster(backend, "b")]);
    await follow(b.current(), a.current());
  });
  afterAll(async () => {
    await Promise.all([a?.destroy(), b?.destroy()]);
    await rm(flags, { recursive: true, force: true });
  });

  it("runs B's task only after A's completes, on the exact bytes of A's artifact", async () => {
    const gate = join(flags, "release-build");
    const A = a.current();
    const B = b.current();
    await A.tasks.createTask({
      taskId: "build",
      payload: {
        command: [
          "sh",
          "-c",
          // Waits for the test to release it, then writes bytes that no other run could guess.
          `while [ ! -f ${gate} ]; do sleep 0.02; done; mkdir -p "$TASKWEB_ARTIFACTS/public"; head -c 4096 /dev/urandom > "$TASKWEB_ARTIFACTS/public/build.bin"`,
        ],
      },
    });
    await B.tasks.createTask({
      taskId: "test",
      inputs: [{ task: A.urls.task("build"), artifact: "public/build.bin", path: "build.bin" }],
      payload: {
        command: ["sh", "-c", 'cp "$TASKWEB_INPUTS/build.bin" "$TASKWEB_ARTIFACTS/seen.bin"'],
      },
    });
    await waitFor("A's task to run", async () =>
      (await A.tasks.getTask("build"))?.task.state === "running" ? true : undefined,
    );
    // A is running and B knows A's task: B must still wait.
    await new Promise((r) => setTimeout(r, 300));
    expect((await B.tasks.getTask("test"))?.task.state).toBe("unscheduled");

    await writeFile(gate, "");
    expect(await waitForResolution(A, "build")).toBe("completed");
    expect(await waitForResolution(B, "test")).toBe("completed");

    const upstream = await A.tasks.getTask("build");
    const downstream = await B.tasks.getTask("test");
    const upstreamResolved = new Date(upstream!.task.resolved_at!).getTime();
    const downstreamStarted = new Date(downstream!.runs[0]!.started_at!).getTime();
    expect(downstreamStarted).toBeGreaterThanOrEqual(upstreamResolved);

    const original = await A.database.db
      .selectFrom("artifacts")
      .select(["content", "sha256"])
      .where("task_id", "=", "build")
      .executeTakeFirstOrThrow();
    const seen = await B.database.db
      .selectFrom("artifacts")
      .select(["content", "sha256"])
      .where("task_id", "=", "test")
      .where("name", "=", "seen.bin")
      .executeTakeFirstOrThrow();
    expect(Buffer.from(seen.content).equals(Buffer.from(original.content))).toBe(true);
    expect(seen.sha256).toBe(original.sha256);
    // B learned the digest from A's signed activity, not from the download.
    const known = await B.database.db
      .selectFrom("remote_artifacts")
      .select("sha256")
      .where("artifact_url", "=", A.urls.artifact("build", "public/build.bin"))
      .executeTakeFirstOrThrow();
    expect(known.sha256).toBe(original.sha256);
  });

  it("unblocks a task created after the upstream task already completed, by dereferencing it", async () => {
    const A = a.current();
    const B = b.current();
    await A.tasks.createTask({ taskId: "early", payload: { command: ["true"] } });
    expect(await waitForResolution(A, "early")).toBe("completed");
    await B.tasks.createTask({
      taskId: "late",
      dependencies: [A.urls.task("early")],
      payload: { command: ["true"] },
    });
    expect(await waitForResolution(B, "late")).toBe("completed");
  });

  it("resolves B's task as exception when A's task fails, without waiting for its deadline", async () => {
    const A = a.current();
    const B = b.current();
    await A.tasks.createTask({ taskId: "broken", payload: { command: ["sh", "-c", "exit 3"] } });
    await B.tasks.createTask({
      taskId: "after-broken",
      dependencies: [A.urls.task("broken")],
      payload: { command: ["true"] },
    });
    expect(await waitForResolution(A, "broken")).toBe("failed");
    expect(await waitForResolution(B, "after-broken")).toBe("exception");
    const view = await B.tasks.getTask("after-broken");
    expect(view!.runs.at(-1)!.reason_resolved).toBe("dependency-failed");
    expect(view!.runs.every((r) => r.started_at == null)).toBe(true);
  });

  it("tells A's followers with a signed TaskGroupResolved when A's task group resolves", async () => {
    const A = a.current();
    const group = "nightly";
    await A.tasks.createTaskGroup({
      taskGroupId: group,
      tasks: [
        { taskId: "nightly-build", payload: { command: ["true"] } },
        {
          taskId: "nightly-check",
          dependencies: ["nightly-build"],
          payload: { command: ["false"] },
        },
      ],
    });
    await waitFor("A to announce the group", () =>
      a.events.some((e) => e.type === "task-group-resolved" && e.taskGroupId === group)
        ? true
        : undefined,
    );
    const sent = (
      await A.database.db
        .selectFrom("outbox")
        .select(["activity_id", "activity"])
        .where(sql<boolean>`activity->'object'->>'id' = ${A.urls.taskGroup(group)}`)
        .execute()
    ).filter((row) => JSON.stringify(row.activity).includes("TaskGroupResolved"));
    expect(sent).toHaveLength(1);
    expect(sent[0]!.activity).toMatchObject({
      type: ["Activity", "TaskGroupResolved"],
      object: { taskCount: 2, completedCount: 1, failedCount: 1, exceptionCount: 0 },
    });
    await waitFor("B to take the TaskGroupResolved", () =>
      b.events.some(
        (e) =>
          e.type === "inbox" &&
          e.outcome.outcome === "applied" &&
          e.outcome.activityId === sent[0]!.activity_id,
      )
        ? true
        : undefined,
    );
    const received = await b
      .current()
      .database.db.selectFrom("inbox_processed")
      .select("types")
      .where("activity_id", "=", sent[0]!.activity_id)
      .execute();
    expect(received).toEqual([{ types: ["TaskGroupResolved"] }]);
  });

  it("still runs B's task when B was down while A completed", async () => {
    const A = a.current();
    await b.current().tasks.createTask({
      taskId: "while-down",
      dependencies: [A.urls.task("slow")],
      payload: { command: ["true"] },
    });
    await b.stop();
    await A.tasks.createTask({ taskId: "slow", payload: { command: ["true"] } });
    expect(await waitForResolution(A, "slow")).toBe("completed");
    const B = await b.restart();
    expect(await waitForResolution(B, "while-down")).toBe("completed");
  });
});
