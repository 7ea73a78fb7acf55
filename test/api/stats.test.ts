/**
 * Queue data mining on real history, on both backends: tasks run by a real worker, tagged by
 * project; `GET /api/v1/stats` and `taskweb stats` report the share by tag, failure rates,
 * pending and running times (overall and by worker), and narrow by tag value, state, worker,
 * remote origin and period. Known durations (a run moved back in time) prove the quantiles.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import type { QueueStats } from "../../server/domain/queue-stats.ts";
import { describeEachBackend } from "../support/backends.ts";
import { runTaskweb } from "../support/cli.ts";
import { freePort } from "../support/ports.ts";
import {
  startTestCluster,
  TEST_TOKEN,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";

describeEachBackend("queue statistics", (backend) => {
  let cluster: TestCluster;
  let remoteOrigin: string;
  const db = () => cluster.current().database.db;

  async function stats(query: string): Promise<{ status: number; body: QueueStats }> {
    const response = await fetch(`${cluster.current().urls.origin}/api/v1/stats?${query}`, {
      headers: { authorization: `Bearer ${TEST_TOKEN}` },
    });
    return { status: response.status, body: (await response.json()) as QueueStats };
  }

  beforeAll(async () => {
    cluster = await startTestCluster(backend, "stats");
    const C = cluster.current();
    remoteOrigin = `http://127.0.0.1:${await freePort()}`;
    const tasks: [string, Record<string, string> | undefined, string][] = [
      ["web-1", { project: "web", team: "a" }, "true"],
      ["web-2", { project: "web", team: "b" }, "true"],
      ["web-3", { project: "web", team: "a" }, "exit 1"],
      ["api-1", { project: "api" }, "true"],
      ["plain", undefined, "true"],
      ["old", { project: "legacy" }, "true"],
    ];
    for (const [taskId, tags, script] of tasks) {
      await C.tasks.createTask({
        taskId,
        ...(tags != null ? { tags } : {}),
        payload: { command: ["sh", "-c", script] },
      });
    }
    // Waits on a cluster that does not answer: it stays unscheduled.
    await C.tasks.createTask({
      taskId: "downstream",
      tags: { project: "web" },
      dependencies: [`${remoteOrigin}/clusters/up/tasks/t1`],
      payload: { command: ["true"] },
    });
    for (const [taskId] of tasks) await waitForResolution(C, taskId);
    // Last month's task: its run waited exactly 10 s and ran exactly 60 s.
    const t = new Date(Date.now() - 30 * 24 * 3600_000);
    await db()
      .updateTable("tasks")
      .set({ created_at: t } as never)
      .where("task_id", "=", "old")
      .execute();
    await db()
      .updateTable("runs")
      .set({
        scheduled_at: t,
        started_at: new Date(t.getTime() + 10_000),
        resolved_at: new Date(t.getTime() + 70_000),
      })
      .where("task_id", "=", "old")
      .execute();
  }, 120_000);
  afterAll(async () => {
    await cluster?.destroy();
  });

  it("reports the share of tasks by tag, failure rates and times by worker", async () => {
    const { status, body } = await stats("since=1h&tag=project");
    expect(status).toBe(200);
    expect(body.tasks).toEqual({
      total: 6,
      byState: { completed: 4, failed: 1, unscheduled: 1 },
      resolved: 5,
      failureRate: 0.2,
    });
    expect(body.byTag?.tag).toBe("project");
    expect(body.byTag?.values.map((v) => [v.value, v.total, v.share, v.failureRate])).toEqual([
      ["web", 4, 4 / 6, 1 / 3],
      ["api", 1, 1 / 6, 0],
      [null, 1, 1 / 6, 0],
    ]);
    expect(body.runs).toMatchObject({
      total: 5,
      byState: { completed: 4, failed: 1 },
      failureRate: 0.2,
    });
    for (const d of [body.runs.pendingSeconds, body.runs.runningSeconds]) {
      expect(d.count).toBe(5);
      expect(d.p50).toBeGreaterThanOrEqual(0);
      expect(d.p95!).toBeGreaterThanOrEqual(d.p50!);
      expect(d.max!).toBeGreaterThanOrEqual(d.p95!);
    }
    const workerIds = await db()
      .selectFrom("runs")
      .select("worker_id")
      .distinct()
      .where("task_id", "!=", "old")
      .execute();
    expect(body.workers.map((w) => [w.workerId, w.total, w.failureRate])).toEqual([
      [workerIds[0]!.worker_id, 5, 0.2],
    ]);
    expect(body.truncated).toBe(false);
  });

  it("narrows by tag value, state, worker, remote origin and period", async () => {
    const worker = (await stats("since=1h")).body.workers[0]!.workerId;
    const [web, failed, byWorker, nobody, origin, month, exact] = await Promise.all([
      stats("since=1h&tag=project%3Dweb&tag=team"),
      stats("since=1h&state=failed"),
      stats(`since=1h&worker=${encodeURIComponent(worker)}`),
      stats("since=1h&worker=nobody"),
      stats(`since=1h&origin=${encodeURIComponent(`${remoteOrigin}/anything`)}`),
      stats("since=60d"),
      stats(
        `since=${new Date(Date.now() - 31 * 24 * 3600_000).toISOString()}&until=${new Date(Date.now() - 29 * 24 * 3600_000).toISOString()}`,
      ),
    ]);
    expect(web.body.tasks.total).toBe(4);
    expect(web.body.byTag?.values.map((v) => [v.value, v.total])).toEqual([
      ["a", 2],
      ["b", 1],
      [null, 1],
    ]);
    expect(web.body.runs.total).toBe(3);
    expect(failed.body.tasks).toMatchObject({ total: 1, byState: { failed: 1 } });
    expect(failed.body.runs).toMatchObject({ total: 1, byState: { failed: 1 } });
    expect(byWorker.body.runs.total).toBe(5);
    expect(byWorker.body.tasks.total).toBe(5);
    expect(nobody.body.runs.total).toBe(0);
    expect(nobody.body.tasks.total).toBe(0);
    expect(nobody.body.runs.pendingSeconds).toEqual({ count: 0, p50: null, p95: null, max: null });
    expect(origin.body.tasks).toMatchObject({ total: 1, byState: { unscheduled: 1 } });
    expect(month.body.tasks.total).toBe(7);
    expect(month.body.runs.total).toBe(6);
    expect(exact.body.tasks.total).toBe(1);
    expect(exact.body.runs.pendingSeconds).toEqual({ count: 1, p50: 10, p95: 10, max: 10 });
    expect(exact.body.runs.runningSeconds).toEqual({ count: 1, p50: 60, p95: 60, max: 60 });
  });

  it("refuses tags that are not names mapped to short strings, creating nothing", async () => {
    const before = await db().selectFrom("tasks").select("task_id").execute();
    for (const tags of [{ "a b": "x" }, { project: 7 }, { project: "x".repeat(257) }, ["web"]]) {
      await expect(
        cluster.current().tasks.createTask({ tags, payload: { command: ["true"] } }),
      ).rejects.toMatchObject({ code: "InputError" });
    }
    expect(await db().selectFrom("tasks").select("task_id").execute()).toEqual(before);
  });

  it("refuses a bad query with every problem named", async () => {
    const { status, body } = (await stats(
      "since=yesterday&state=done&tag=a%20b&colour=red",
    )) as unknown as {
      status: number;
      body: { code: string; details: { problems: { field: string }[] } };
    };
    expect(status).toBe(400);
    expect(body.code).toBe("InputError");
    expect(body.details.problems.map((p) => p.field).sort()).toEqual([
      "colour",
      "since",
      "state",
      "tag",
    ]);
  });

  it("prints the report from the command line", async () => {
    const flags = ["--url", cluster.current().urls.origin, "--token", TEST_TOKEN];
    const [human, json] = await Promise.all([
      runTaskweb(["stats", "--since", "1h", "--tag", "project", ...flags]),
      runTaskweb(["stats", "--since", "1h", "--tag", "project=api", "--json", ...flags]),
    ]);
    expect(human.stderr).toBe("");
    expect(human.code).toBe(0);
    expect(human.lines[1]).toBe(
      "Tasks created: 6 (completed 4, failed 1, unscheduled 1); failure rate 20.0%",
    );
    expect(human.lines).toContain("By tag project:");
    expect(human.lines).toContain("  web          4 tasks   66.7%  failure rate 33.3%");
    expect(human.lines).toContain("  (none)       1 tasks   16.7%  failure rate 0.0%");
    expect(human.stdout).toMatch(/^ {2}pending p50 \d/m);
    expect(json.code).toBe(0);
    const body = JSON.parse(json.stdout) as QueueStats;
    expect(body.tasks.total).toBe(1);
    expect(body.runs.total).toBe(1);
  });
});
