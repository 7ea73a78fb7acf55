/**
 * Joins end to end: three publisher clusters and an aggregator that follows them. Real
 * servers on loopback, real signatures, real downloads; the duplicates are signed by the
 * publisher's key.
 */
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { buildArtifactPublished } from "../../protocol/index.ts";
import type { RunningCluster } from "../../server/cluster.ts";
import type { JoinProgress } from "../../server/domain/task-joins.ts";
import { describeEachBackend } from "../support/backends.ts";
import { runTaskweb } from "../support/cli.ts";
import {
  artifactDigest,
  follow,
  snapshot,
  startTestCluster,
  TEST_TOKEN,
  api,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";
import { clusterRsaKey, signedPost } from "../support/signing.ts";

/** Writes the sha256 of every joined input, one `<sha256>  <path>` line each, sorted. */
const SUMS_COMMAND = [
  "sh",
  "-c",
  'cd "$TASKWEB_INPUTS" && find join -type f | sort | xargs -r sha256sum > "$TASKWEB_ARTIFACTS/sums.txt"',
];

/** The publisher's task `taskId`: a CSV of random bytes, tagged with the dataset and period. */
async function publish(P: RunningCluster, taskId: string, period: string): Promise<string> {
  await P.tasks.createTask({
    taskId,
    tags: { dataset: "sales", period },
    payload: {
      command: [
        "sh",
        "-c",
        'mkdir -p "$TASKWEB_ARTIFACTS/public" && head -c 1024 /dev/urandom | od -An -tx1 > "$TASKWEB_ARTIFACTS/public/sales.csv"',
      ],
    },
  });
  expect(await waitForResolution(P, taskId)).toBe("completed");
  return await artifactDigest(P, taskId, "public/sales.csv");
}

async function progress(A: RunningCluster, taskId: string): Promise<JoinProgress> {
  const view = await api(A, "GET", `/tasks/${taskId}`);
  expect(view.status).toBe(200);
  return view.json.join as JoinProgress;
}

/** Waits until `count` clusters of the join arrived. */
async function arrivals(A: RunningCluster, taskId: string, count: number): Promise<JoinProgress> {
  return await waitFor(`${count} arrivals in ${taskId}`, async () => {
    const p = await progress(A, taskId);
    return p.clusters.filter((c) => c.arrived).length === count ? p : undefined;
  });
}

async function sumsOf(A: RunningCluster, taskId: string): Promise<string[]> {
  const row = await A.database.db
    .selectFrom("artifacts")
    .select("content")
    .where("task_id", "=", taskId)
    .where("name", "=", "sums.txt")
    .executeTakeFirstOrThrow();
  return Buffer.from(row.content).toString("utf8").trim().split("\n").filter(Boolean);
}

describeEachBackend("joins", (backend) => {
  let p: TestCluster[];
  let agg: TestCluster;
  let P: RunningCluster[];
  let A: () => RunningCluster;

  beforeAll(async () => {
    [agg, ...p] = await Promise.all([
      startTestCluster(backend, "agg"),
      startTestCluster(backend, "p0"),
      startTestCluster(backend, "p1"),
      startTestCluster(backend, "p2"),
    ]);
    A = () => agg.current();
    P = p.map((c) => c.current());
    for (const publisher of P) await follow(A(), publisher);
    // Four clusters start at once: seconds each on a loaded machine.
  }, 300_000);
  afterAll(async () => {
    await Promise.all([agg?.destroy(), ...(p ?? []).map((c) => c.destroy())]);
  });

  it("refuses bad join definitions with clear errors and creates nothing", async () => {
    const before = await snapshot(A());
    const joins = async () => await A().database.db.selectFrom("task_joins").selectAll().execute();
    const joinsBefore = await joins();
    const clusters = P.map((x) => x.urls.actor);
    const cases: [unknown, string, RegExp][] = [
      [
        {
          clusters: [...clusters, "https://unknown.example/clusters/x"],
          artifact: "*",
          deadline: "PT1H",
        },
        "join.clusters[3]",
        /does not follow https:\/\/unknown\.example\/clusters\/x; follow it first/,
      ],
      [{ clusters, artifact: "*" }, "join.deadline", /Required/],
      [
        { clusters, artifact: "*", deadline: "in an hour" },
        "join.deadline",
        /duration such as PT30M/,
      ],
      [
        { clusters, artifact: "*", deadline: "P30D" },
        "join.deadline",
        /before the task's deadline/,
      ],
      [{ clusters, deadline: "PT1H" }, "join", /Give artifact .*, tags, or both/],
      [
        { clusters, artifact: "*", deadline: "PT1H", atDeadline: "wait" },
        "join.atDeadline",
        /"run"/,
      ],
      [
        { clusters: [clusters[0], clusters[0]], artifact: "*", deadline: "PT1H" },
        "join.clusters[1]",
        /twice/,
      ],
      [{ clusters: [], artifact: "*", deadline: "PT1H" }, "join.clusters", /1 to 100/],
      [{ clusters, tags: { period: 11 }, deadline: "PT1H" }, "join.tags.period", /string/],
    ];
    for (const [join, field, message] of cases) {
      const res = await api(A(), "POST", "/tasks", {
        taskId: `bad-${randomUUID().slice(0, 8)}`,
        payload: { command: ["true"] },
        join,
      });
      expect(res.status, JSON.stringify(join)).toBe(400);
      const problems = (res.json.details as { problems: { field: string; message: string }[] })
        .problems;
      const problem = problems.find((x) => x.field === field);
      expect(problem?.message, `${field} in ${JSON.stringify(problems)}`).toMatch(message);
    }
    // In a task graph, the same check names the task.
    const graph = await api(A(), "POST", "/task-groups", {
      taskGroupId: "bad-graph",
      tasks: [
        { taskId: "ok", payload: { command: ["true"] } },
        {
          taskId: "joining",
          payload: { command: ["true"] },
          join: {
            clusters: ["https://unknown.example/clusters/x"],
            artifact: "*",
            deadline: "PT1H",
          },
        },
      ],
    });
    expect(graph.status).toBe(400);
    expect(graph.json.details).toMatchObject({
      problems: [
        {
          task: 1,
          field: 'tasks[1] (taskId "joining").join.clusters[0]',
          message: expect.stringMatching(/follow it first/),
        },
      ],
    });
    expect(await snapshot(A())).toEqual(before);
    expect(await joins()).toEqual(joinsBefore);
  });

  it("runs once all three clusters delivered, with their three artifacts as verified inputs; a duplicate counts once", async () => {
    const created = await api(A(), "POST", "/tasks", {
      taskId: "sales-2026-11",
      payload: { command: SUMS_COMMAND },
      join: {
        clusters: P.map((x) => x.urls.actor),
        artifact: "public/*.csv",
        tags: { period: "2026-11" },
        deadline: "PT10M",
      },
    });
    expect(created.status).toBe(201);
    expect(created.json.state).toBe("unscheduled");

    // A dataset of another period does not count.
    await publish(P[2]!, "sales-2026-10", "2026-10");
    const digests = [await publish(P[0]!, "sales", "2026-11")];
    await arrivals(A(), "sales-2026-11", 1);

    // P0's artifact arrives again: its ArtifactPublished redelivered, and a new activity
    // announcing the same artifact. Both count once.
    const outbox = await P[0]!.database.db.selectFrom("outbox").select("activity").execute();
    const original = outbox.find((o) =>
      JSON.stringify(o.activity.type).includes("ArtifactPublished"),
    )!.activity as unknown as ReturnType<typeof buildArtifactPublished>;
    const key = await clusterRsaKey(P[0]!);
    expect((await signedPost(A().urls.inbox, original, { key })).status).toBe(202);
    const again = buildArtifactPublished({
      id: P[0]!.urls.activity(randomUUID()),
      actor: P[0]!.urls.actor,
      published: new Date(),
      to: [P[0]!.urls.followers],
      artifact: original.object,
    });
    expect((await signedPost(A().urls.inbox, again, { key })).status).toBe(202);
    await waitFor("the new announcement to be applied", () =>
      agg.events.some(
        (e) =>
          e.type === "inbox" &&
          e.outcome.outcome === "applied" &&
          e.outcome.activityId === again.id,
      )
        ? true
        : undefined,
    );
    const one = await progress(A(), "sales-2026-11");
    expect(one.state).toBe("waiting");
    expect(one.clusters.map((c) => c.arrived)).toEqual([true, false, false]);
    expect(one.missing).toEqual([P[1]!.urls.actor, P[2]!.urls.actor]);
    expect((await A().tasks.getTask("sales-2026-11"))?.task.state).toBe("unscheduled");

    digests.push(await publish(P[1]!, "sales", "2026-11"));
    await arrivals(A(), "sales-2026-11", 2);
    expect((await A().tasks.getTask("sales-2026-11"))?.task.state).toBe("unscheduled");
    digests.push(await publish(P[2]!, "sales", "2026-11"));

    expect(await waitForResolution(A(), "sales-2026-11")).toBe("completed");
    const view = await A().tasks.getTask("sales-2026-11");
    expect(view?.runs).toHaveLength(1);
    expect(view?.inputs.map((i) => i.path).sort()).toEqual([
      "join/0/public/sales.csv",
      "join/1/public/sales.csv",
      "join/2/public/sales.csv",
    ]);
    expect(view?.inputs.map((i) => i.artifact_url).sort()).toEqual(
      P.map((x) => x.urls.artifact("sales", "public/sales.csv")).sort(),
    );
    // The bytes the task read are the bytes each publisher announced.
    expect(await sumsOf(A(), "sales-2026-11")).toEqual(
      digests.map((d, i) => `${d}  join/${i}/public/sales.csv`),
    );
    const done = await progress(A(), "sales-2026-11");
    expect(done.state).toBe("complete");
    expect(done.missing).toEqual([]);

    // A join created now, with since, counts what already arrived (by its tags on the wire,
    // so not P2's other period) and runs at once on the same bytes.
    const late = await api(A(), "POST", "/tasks", {
      taskId: "sales-2026-11-since",
      payload: { command: SUMS_COMMAND },
      join: {
        clusters: P.map((x) => x.urls.actor),
        artifact: "public/*.csv",
        tags: { period: "2026-11" },
        deadline: "PT10M",
        since: "PT1H",
      },
    });
    expect(late.status).toBe(201);
    expect(late.json.state).toBe("pending");
    expect(await waitForResolution(A(), "sales-2026-11-since")).toBe("completed");
    expect(await sumsOf(A(), "sales-2026-11-since")).toEqual(
      digests.map((d, i) => `${d}  join/${i}/public/sales.csv`),
    );
  }, 180_000);

  it("at the deadline runs with what arrived and records the straggler, or fails; the timer survives a restart with its queue lost", async () => {
    const join = (atDeadline: "run" | "fail") => ({
      clusters: P.map((x) => x.urls.actor),
      tags: { dataset: "sales", period: "2026-12" },
      deadline: new Date(Date.now() + 60_000).toISOString(),
      atDeadline,
      // Nothing of period 2026-12 was published before: since changes nothing here.
      ...(atDeadline === "run" ? { since: "P1D" } : {}),
    });
    expect(
      (
        await api(A(), "POST", "/tasks", {
          taskId: "late-run",
          payload: { command: SUMS_COMMAND },
          join: join("run"),
        })
      ).status,
    ).toBe(201);
    // The failing one comes in a task graph: joins work there the same.
    expect(
      (
        await api(A(), "POST", "/task-groups", {
          taskGroupId: "late",
          tasks: [{ taskId: "late-fail", payload: { command: SUMS_COMMAND }, join: join("fail") }],
        })
      ).status,
    ).toBe(201);
    const digests = [
      await publish(P[0]!, "sales-12", "2026-12"),
      await publish(P[1]!, "sales-12", "2026-12"),
    ];
    await arrivals(A(), "late-run", 2);
    await arrivals(A(), "late-fail", 2);

    if (backend.name === "embedded") {
      const show = await runTaskweb(["task", "show", "late-run"], {
        TASKWEB_URL: A().urls.origin,
        TASKWEB_TOKEN: TEST_TOKEN,
      });
      expect(show.code).toBe(0);
      expect(show.stdout).toContain("join: waiting; 2 of 3 clusters arrived");
      expect(show.stdout).toContain(`waiting  ${P[2]!.urls.actor}`);
      expect(show.stdout).toMatch(/counting artifacts recorded since \d{4}-\d{2}-\d{2}T/);
    }

    // The queue loses the deadline timers and the aggregator restarts: they are derived again
    // from the waiting joins.
    const { redisUrl, redisPrefix } = A().config;
    if (redisUrl == null) {
      const lost = await A()
        .database.db.deleteFrom("jobs")
        .where("queue", "=", "joins")
        .where("job_id", "like", "late-%")
        .executeTakeFirst();
      expect(Number(lost.numDeletedRows)).toBe(2);
    }
    await agg.stop();
    if (redisUrl != null) {
      const redis = new Redis(redisUrl);
      const keys = await redis.keys(`${redisPrefix}:*`);
      expect(keys.some((k) => k.includes(":joins:"))).toBe(true);
      await redis.del(...keys);
      await redis.quit();
    }
    const timers = () => agg.enqueued.filter((e) => e.startsWith("joins late-")).length;
    const before = timers();
    await agg.restart();
    // Both timers were enqueued again at start, from the waiting joins.
    await waitFor("the join timers to be enqueued again", () =>
      timers() >= before + 2 ? true : undefined,
    );

    expect(await waitForResolution(A(), "late-run", 120_000)).toBe("completed");
    const ran = await progress(A(), "late-run");
    expect(ran.state).toBe("closed");
    expect(ran.missing).toEqual([P[2]!.urls.actor]);
    expect(await sumsOf(A(), "late-run")).toEqual(
      digests.map((d, i) => `${d}  join/${i}/public/sales.csv`),
    );

    expect(await waitForResolution(A(), "late-fail", 120_000)).toBe("exception");
    const failed = await A().tasks.getTask("late-fail");
    expect(failed?.runs.at(-1)?.reason_resolved).toBe("join-deadline-exceeded");
    expect(failed?.runs.filter((r) => r.started_at != null)).toEqual([]);
    expect((await progress(A(), "late-fail")).state).toBe("failed");

    // The straggler's artifact arrives after the deadline: it changes nothing.
    await publish(P[2]!, "sales-12", "2026-12");
    await waitFor(
      "the straggler's artifact to reach the aggregator",
      async () =>
        (await A()
          .database.db.selectFrom("remote_artifacts")
          .select("artifact_url")
          .where("artifact_url", "=", P[2]!.urls.artifact("sales-12", "public/sales.csv"))
          .executeTakeFirst()) ?? undefined,
    );
    expect((await progress(A(), "late-run")).missing).toEqual([P[2]!.urls.actor]);
    expect((await A().tasks.getTask("late-run"))?.runs).toHaveLength(1);
  }, 300_000);
});
