/**
 * Graceful shutdown of a worker: running tasks may finish within the grace period; the
 * rest are stopped and handed back, to be retried by another worker (or this one, later).
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { describeEachBackend } from "../support/backends.ts";
import { startTestCluster, waitFor, waitForResolution } from "../support/clusters.ts";

describeEachBackend("graceful worker shutdown", (backend) => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskweb-shutdown-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("hands a task still running after the grace period back, and it is retried", async () => {
    const flag = join(dir, "second-run-may-finish");
    const c = await startTestCluster(backend, "shut", { config: { shutdownGraceMs: 300 } });
    try {
      await c.current().tasks.createTask({
        taskId: "long",
        payload: { command: ["sh", "-c", `if [ -f ${flag} ]; then exit 0; fi; sleep 30`] },
      });
      await waitFor("the run to start", async () =>
        (await c.current().tasks.getTask("long"))?.task.state === "running" ? true : undefined,
      );
      const stopping = Date.now();
      await c.stop();
      // The 30 s task did not hold the shutdown up.
      expect(Date.now() - stopping).toBeLessThan(10_000);
      await writeFile(flag, "");
      const restarted = await c.restart();
      expect(await waitForResolution(restarted, "long")).toBe("completed");
      const runs = (await restarted.tasks.getTask("long"))!.runs;
      expect(runs.map((r) => [r.state, r.reason_created, r.reason_resolved])).toEqual([
        ["exception", "scheduled", "worker-shutdown"],
        ["completed", "retry", "completed"],
      ]);
    } finally {
      await c.destroy();
    }
  });

  it("lets a task that ends within the grace period finish before stopping", async () => {
    const c = await startTestCluster(backend, "grace", { config: { shutdownGraceMs: 10_000 } });
    try {
      await c.current().tasks.createTask({
        taskId: "short",
        payload: { command: ["sh", "-c", "sleep 1; echo done"] },
      });
      await waitFor("the run to start", async () =>
        (await c.current().tasks.getTask("short"))?.task.state === "running" ? true : undefined,
      );
      await c.stop();
      const restarted = await c.restart();
      const view = (await restarted.tasks.getTask("short"))!;
      expect(view.task.state).toBe("completed");
      expect(view.runs).toHaveLength(1);
    } finally {
      await c.destroy();
    }
  });
});
