/**
 * One cluster as separate processes, as in production: two `taskweb web` and two
 * `taskweb worker` processes on one PostgreSQL and one Redis, started through the real
 * command line. Work is shared between the workers and nothing runs twice; another cluster
 * depends on this one across the federation.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TASKWEB_BIN } from "../support/cli.ts";
import { serverBackend } from "../support/backends.ts";
import { freePort } from "../support/ports.ts";
import {
  startTestCluster,
  TEST_TOKEN,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";

const backend = serverBackend();

interface TaskJson {
  state: string;
  runs: { worker_id: string; state: string; reason_resolved: string | null }[];
}

async function api(
  base: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: TaskJson }> {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${TEST_TOKEN}`, "content-type": "application/json" },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: response.status, json: (await response.json()) as TaskJson };
}

if ("skip" in backend) {
  describe("a cluster as separate web and worker processes", () => {
    it.skip(`needs PostgreSQL and Redis: ${backend.skip}`, () => {});
  });
} else {
  describe("a cluster as separate web and worker processes", () => {
    const children: ChildProcess[] = [];
    let scratch: string;
    const output: string[] = [];
    let webs: string[] = [];
    let b: TestCluster;

    beforeAll(async () => {
      scratch = await mkdtemp(join(tmpdir(), "taskweb-processes-"));
      const db = backend.database();
      const [port1, port2] = [await freePort(), await freePort()];
      const publicUrl = `http://127.0.0.1:${port1}`;
      const env = {
        ...process.env,
        DATABASE_URL: db.url,
        DATABASE_SCHEMA: db.schema,
        REDIS_URL: backend.redisUrl,
        REDIS_PREFIX: backend.redisPrefix(),
        TASKWEB_ADMIN_TOKEN: TEST_TOKEN,
        TASKWEB_PUBLIC_URL: publicUrl,
        TASKWEB_NAME: "farm",
        TASKWEB_PRIVATE_ADDRESS_ALLOWLIST: "127.0.0.1/32",
        WORKER_CONCURRENCY: "1",
        // A killed worker's run is noticed within seconds.
        TASKWEB_CLAIM_LEASE_MS: "2000",
        LOG_LEVEL: "warning",
      } as Record<string, string>;
      const run = (args: string[]) => {
        const child = spawn(process.execPath, [TASKWEB_BIN, ...args], {
          env,
          stdio: ["ignore", "pipe", "pipe"],
        });
        child.stdout?.on("data", (d: Buffer) => output.push(d.toString()));
        child.stderr?.on("data", (d: Buffer) => output.push(d.toString()));
        children.push(child);
        return child;
      };
      const migrate = run(["migrate"]);
      expect(await new Promise((r) => migrate.on("exit", r))).toBe(0);
      run(["web", "--port", String(port1)]);
      run(["web", "--port", String(port2)]);
      run(["worker"]);
      run(["worker"]);
      webs = [publicUrl, `http://127.0.0.1:${port2}`];
      for (const web of webs) {
        await waitFor(
          `${web} to be ready`,
          async () => {
            try {
              const response = await fetch(`${web}/readyz`, { signal: AbortSignal.timeout(2000) });
              return response.status === 200 ? true : undefined;
            } catch {
              return undefined;
            }
          },
          60_000,
        ).catch((error: unknown) => {
          throw new Error(`${String(error)}\nprocess output:\n${output.join("")}`);
        });
      }
      b = await startTestCluster(backend, "downstream");
    }, 120_000);

    afterAll(async () => {
      for (const child of children) child.kill("SIGTERM");
      await Promise.all(
        children.map((c) =>
          c.exitCode != null || c.signalCode != null
            ? Promise.resolve()
            : new Promise((r) => c.on("exit", r)),
        ),
      );
      await b?.destroy();
      await rm(scratch, { recursive: true, force: true });
    });

    it("shares tasks between two worker processes and runs each exactly once", async () => {
      const ids = Array.from({ length: 12 }, (_, i) => `job-${i}`);
      // Every execution leaves a line: a task run twice would show twice, whatever the runs
      // table says.
      const ledger = join(scratch, "executions.log");
      for (const [i, taskId] of ids.entries()) {
        const { status } = await api(webs[i % 2]!, "POST", "/api/v1/tasks", {
          taskId,
          payload: { command: ["sh", "-c", `echo ${taskId} >> ${ledger}; sleep 0.3`] },
        });
        expect(status).toBe(201);
      }
      const workers = new Set<string>();
      for (const taskId of ids) {
        const task = await waitFor(
          `${taskId} to complete`,
          async () => {
            const { json } = await api(webs[0]!, "GET", `/api/v1/tasks/${taskId}`);
            return json.state === "completed" ? json : undefined;
          },
          60_000,
        );
        expect(task.runs).toHaveLength(1);
        workers.add(task.runs[0]!.worker_id);
      }
      expect(workers.size).toBe(2);
      const executions = (await readFile(ledger, "utf8")).split("\n").filter((l) => l !== "");
      expect(executions.sort()).toEqual([...ids].sort());
    });

    it("lets a cluster on another server depend on a task run by these processes", async () => {
      const B = b.current();
      const farmActor = `${webs[0]}/clusters/farm`;
      await B.federation.follow(farmActor);
      await waitFor("the follow to be accepted", async () => {
        const row = await B.database.db.selectFrom("following").select("state").executeTakeFirst();
        return row?.state === "accepted" ? true : undefined;
      });
      await B.tasks.createTask({
        taskId: "downstream",
        inputs: [{ task: `${farmActor}/tasks/produce`, artifact: "out.txt" }],
        payload: { command: ["sh", "-c", 'grep -q "made by the farm" "$TASKWEB_INPUTS/out.txt"'] },
      });
      const { status } = await api(webs[1]!, "POST", "/api/v1/tasks", {
        taskId: "produce",
        payload: {
          command: ["sh", "-c", 'echo "made by the farm" > "$TASKWEB_ARTIFACTS/out.txt"'],
        },
      });
      expect(status).toBe(201);
      expect(await waitForResolution(B, "downstream")).toBe("completed");
    });

    it("retries a graph's task on the other worker when its worker is killed mid-task", async () => {
      const flag = join(scratch, "retry-may-finish");
      const { status } = await api(webs[0]!, "POST", "/api/v1/task-groups", {
        taskGroupId: "survive",
        tasks: [
          {
            taskId: "survive-main",
            payload: { command: ["sh", "-c", `if [ -f ${flag} ]; then exit 0; fi; sleep 60`] },
          },
          {
            taskId: "survive-after",
            dependencies: ["survive-main"],
            payload: { command: ["true"] },
          },
        ],
      });
      expect(status).toBe(201);
      const running = await waitFor("the task to run", async () => {
        const { json } = await api(webs[0]!, "GET", "/api/v1/tasks/survive-main");
        return json.state === "running" ? json : undefined;
      });
      const pid = Number(running.runs[0]!.worker_id.split("/")[1]);
      const victim = children.find((c) => c.pid === pid);
      expect(victim).toBeDefined();
      victim!.kill("SIGKILL");
      await new Promise((r) => victim!.on("exit", r));
      await writeFile(flag, "");
      const after = await waitFor(
        "the graph to complete",
        async () => {
          const { json } = await api(webs[1]!, "GET", "/api/v1/tasks/survive-after");
          return json.state === "completed" ? json : undefined;
        },
        60_000,
      );
      expect(after.state).toBe("completed");
      const { json: main } = await api(webs[1]!, "GET", "/api/v1/tasks/survive-main");
      expect(main.runs.map((r) => [r.state, r.reason_resolved])).toEqual([
        ["exception", "claim-expired"],
        ["completed", "completed"],
      ]);
      expect(Number(main.runs[1]!.worker_id.split("/")[1])).not.toBe(pid);
    });

    it("stops a worker cleanly on SIGTERM", async () => {
      const worker =
        children.slice(3).find((c) => c.exitCode == null && c.signalCode == null) ??
        children.slice(2).find((c) => c.exitCode == null && c.signalCode == null)!;
      worker.kill("SIGTERM");
      const code = await new Promise((r) => worker.on("exit", r));
      expect(code).toBe(0);
    });
  });
}
