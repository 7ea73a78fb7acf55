/**
 * Cancel and rerun, through the REST API of a running cluster with real workers.
 */
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { describeEachBackend } from "../support/backends.ts";
import { runTaskweb } from "../support/cli.ts";
import {
  startTestCluster,
  TEST_TOKEN,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";

/** Runs the command; `out` is everything it printed, on either stream. */
async function taskweb(args: string[]): Promise<{ code: number | null; out: string }> {
  const { code, stdout, stderr } = await runTaskweb(args);
  return { code, out: stdout + stderr };
}

describeEachBackend("cancel, rerun and activate", (backend) => {
  let c: TestCluster;
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskweb-cancel-"));
    // A short lease: a worker notices a cancelled run at its next renewal.
    c = await startTestCluster(backend, "cancel", { config: { claimLeaseMs: 1500 } });
  });
  afterAll(async () => {
    await c?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  async function post(path: string): Promise<{ status: number; body: Record<string, unknown> }> {
    const response = await fetch(`${c.current().urls.origin}/api/v1${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_TOKEN}` },
    });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  }

  it("cancels an unscheduled task, and its dependents resolve without running", async () => {
    const tasks = c.current().tasks;
    await tasks.createTask({
      taskId: "waiting",
      dependencies: ["http://127.0.0.1:9/clusters/nowhere/tasks/never"],
      payload: { command: ["true"] },
    });
    await tasks.createTask({
      taskId: "behind",
      dependencies: ["waiting"],
      payload: { command: ["true"] },
    });
    const { status, body } = await post("/tasks/waiting/cancel");
    expect(status).toBe(200);
    expect(body).toMatchObject({ state: "exception", changed: true });
    const waiting = (await tasks.getTask("waiting"))!;
    expect(waiting.runs.map((r) => r.reason_resolved)).toEqual(["canceled"]);
    const behind = (await tasks.getTask("behind"))!;
    expect(behind.task.state).toBe("exception");
    expect(behind.runs.map((r) => [r.reason_resolved, r.started_at])).toEqual([
      ["dependency-failed", null],
    ]);
  });

  it("cancels a running task and stops its process", async () => {
    const marker = join(dir, "finished");
    const tasks = c.current().tasks;
    await tasks.createTask({
      taskId: "busy",
      payload: { command: ["sh", "-c", `sleep 4; touch ${marker}`] },
    });
    await waitFor("the run to start", async () =>
      (await tasks.getTask("busy"))?.task.state === "running" ? true : undefined,
    );
    expect((await post("/tasks/busy/cancel")).status).toBe(200);
    expect((await tasks.getTask("busy"))!.runs.map((r) => [r.state, r.reason_resolved])).toEqual([
      ["exception", "canceled"],
    ]);
    await new Promise((r) => setTimeout(r, 5000));
    await expect(stat(marker)).rejects.toThrow();
  });

  it("leaves a resolved task as it is when cancelled", async () => {
    const tasks = c.current().tasks;
    await tasks.createTask({ taskId: "quick", payload: { command: ["true"] } });
    expect(await waitForResolution(c.current(), "quick")).toBe("completed");
    const { status, body } = await post("/tasks/quick/cancel");
    expect(status).toBe(200);
    expect(body).toMatchObject({ state: "completed", changed: false });
  });

  it("reruns a failed task as a new run", async () => {
    const flag = join(dir, "fixed");
    const tasks = c.current().tasks;
    await tasks.createTask({
      taskId: "flaky",
      payload: { command: ["sh", "-c", `test -f ${flag}`] },
    });
    expect(await waitForResolution(c.current(), "flaky")).toBe("failed");
    await writeFile(flag, "");
    const { status, body } = await post("/tasks/flaky/rerun");
    expect(status).toBe(202);
    expect(body).toMatchObject({ runId: 1 });
    expect(await waitForResolution(c.current(), "flaky")).toBe("completed");
    const runs = (await tasks.getTask("flaky"))!.runs;
    expect(runs.map((r) => [r.state, r.reason_created])).toEqual([
      ["failed", "scheduled"],
      ["completed", "rerun"],
    ]);
  });

  it("refuses to rerun a task that has not resolved, and answers 404 for unknown tasks", async () => {
    await c.current().tasks.createTask({
      taskId: "not-yet",
      dependencies: ["http://127.0.0.1:9/clusters/nowhere/tasks/never"],
      payload: { command: ["true"] },
    });
    const rerun = await post("/tasks/not-yet/rerun");
    expect(rerun.status).toBe(409);
    expect(rerun.body.code).toBe("RequestConflict");
    expect((await c.current().tasks.getTask("not-yet"))!.runs).toHaveLength(0);
    expect((await post("/tasks/nope/cancel")).status).toBe(404);
    expect((await post("/tasks/nope/rerun")).status).toBe(404);
  });

  it("creates, shows, cancels and reruns tasks from the command line", async () => {
    const flags = ["--url", c.current().urls.origin, "--token", TEST_TOKEN];
    const file = join(dir, "cli-task.json");
    await writeFile(
      file,
      JSON.stringify({
        taskId: "cli-task",
        dependencies: ["http://127.0.0.1:9/clusters/nowhere/tasks/never"],
        payload: { command: ["true"] },
      }),
    );
    const created = await taskweb(["task", "create", file, ...flags]);
    expect(created).toMatchObject({ code: 0 });
    expect(created.out).toContain("cli-task unscheduled");
    const canceled = await taskweb(["task", "cancel", "cli-task", ...flags]);
    expect(canceled).toEqual({ code: 0, out: "cli-task canceled\n" });
    const shown = await taskweb(["task", "show", "cli-task", ...flags]);
    expect(shown.out).toContain("cli-task (cli-task): exception");
    expect(shown.out).toContain("run 0: exception (canceled)");
    const rerun = await taskweb(["task", "rerun", "cli-task", "--json", ...flags]);
    expect(rerun.code).toBe(0);
    expect(JSON.parse(rerun.out)).toMatchObject({ taskId: "cli-task", runId: 1 });
    expect(await waitForResolution(c.current(), "cli-task")).toBe("completed");
    const missing = await taskweb(["task", "cancel", "no-such-task", ...flags]);
    expect(missing.code).toBe(1);
    expect(missing.out).toContain("No task no-such-task");
    const bad = await taskweb(["task", "create", join(dir, "missing.json"), ...flags]);
    expect(bad.code).toBe(1);
  });

  it("keeps an inactive task unscheduled until it is activated, then runs it", async () => {
    const tasks = c.current().tasks;
    await tasks.createTask({ taskId: "ready-dep", payload: { command: ["true"] } });
    await tasks.createTask({
      taskId: "backfill",
      inactive: true,
      dependencies: ["ready-dep"],
      payload: { command: ["true"] },
    });
    expect(await waitForResolution(c.current(), "ready-dep")).toBe("completed");
    await new Promise((r) => setTimeout(r, 500));
    const waiting = (await tasks.getTask("backfill"))!;
    expect(waiting.task.state).toBe("unscheduled");
    expect(waiting.runs).toHaveLength(0);
    const { status, body } = await post("/tasks/backfill/activate");
    expect(status).toBe(200);
    expect(body).toMatchObject({ changed: true, state: "pending" });
    expect(await waitForResolution(c.current(), "backfill")).toBe("completed");
  });

  it("changes nothing when an active task is activated, and refuses a resolved one", async () => {
    await c.current().tasks.createTask({
      taskId: "already-active",
      dependencies: ["http://127.0.0.1:9/clusters/nowhere/tasks/never"],
      payload: { command: ["true"] },
    });
    expect((await post("/tasks/already-active/activate")).body).toMatchObject({
      changed: false,
      state: "unscheduled",
    });
    const resolved = await post("/tasks/backfill/activate");
    expect(resolved.status).toBe(409);
    expect((await post("/tasks/nope/activate")).status).toBe(404);
  });
});
