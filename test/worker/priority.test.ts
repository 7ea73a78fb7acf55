/**
 * Priorities end to end: while a worker of concurrency 1 is busy, tasks of every priority
 * become pending; it then takes them highest first.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { TASK_PRIORITIES } from "../../server/domain/task-definition.ts";
import { describeEachBackend } from "../support/backends.ts";
import {
  startTestCluster,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";

describeEachBackend("priorities", (backend) => {
  let c: TestCluster;
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskweb-priority-"));
    c = await startTestCluster(backend, "priority", { config: { workerConcurrency: 1 } });
  });
  afterAll(async () => {
    await c?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  it("runs pending tasks highest priority first", async () => {
    const tasks = c.current().tasks;
    const gate = join(dir, "gate");
    await tasks.createTask({
      taskId: "blocker",
      payload: {
        command: ["sh", "-c", 'while [ ! -f "$GATE" ]; do sleep 0.02; done'],
        env: { GATE: gate },
      },
    });
    await waitFor("the blocker to run", async () =>
      (await tasks.getTask("blocker"))?.task.state === "running" ? true : undefined,
    );
    // Created lowest first, so that the order they run in is the priorities' alone.
    const levels = [...TASK_PRIORITIES].reverse();
    for (const priority of levels) {
      await tasks.createTask({ taskId: `p-${priority}`, priority, payload: { command: ["true"] } });
    }
    for (const priority of levels) {
      expect((await tasks.getTask(`p-${priority}`))?.task.state).toBe("pending");
    }
    await writeFile(gate, "");
    const started: [string, number][] = [];
    for (const priority of levels) {
      expect(await waitForResolution(c.current(), `p-${priority}`)).toBe("completed");
      const run = (await tasks.getTask(`p-${priority}`))!.runs[0]!;
      started.push([priority, new Date(run.started_at!).getTime()]);
    }
    const order = started.sort((x, y) => x[1] - y[1]).map(([priority]) => priority);
    expect(order).toEqual([...TASK_PRIORITIES]);
  });
});
