/**
 * Task graphs as a user drives them: `taskweb graph submit` and `taskweb graph watch` run as
 * processes against a real cluster on loopback (embedded, and PostgreSQL + Redis), the REST
 * routes behind them, and the documented example graph run to completion in dependency
 * order. test/domain/task-graph.test.ts covers 10,000-task graphs.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { TaskGraphDocument } from "../../protocol/index.ts";
import { describeEachBackend } from "../support/backends.ts";
import { runTaskweb } from "../support/cli.ts";
import { startTestCluster, TEST_TOKEN, waitFor, type TestCluster } from "../support/clusters.ts";

const EXAMPLE = fileURLToPath(new URL("../../examples/release-graph.yaml", import.meta.url));
const EXAMPLE_TASKS = [
  "smoketest",
  "build",
  "test-unit",
  "test-integration",
  "lint",
  "package",
  "approve",
  "publish",
  "report",
].map((id) => `release-example-${id}`);

const taskweb = runTaskweb;

describeEachBackend("taskweb graph", (backend) => {
  let cluster: TestCluster;
  let dir: string;
  let flags: string[];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskweb-graphs-"));
    cluster = await startTestCluster(backend, "graphs");
    flags = ["--url", cluster.current().urls.origin, "--token", TEST_TOKEN];
  });
  afterAll(async () => {
    await cluster?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  const db = () => cluster.current().database.db;

  async function rowCounts(): Promise<Record<string, number>> {
    const count = async (table: "tasks" | "task_dependencies" | "task_inputs" | "runs") =>
      Number(
        (
          await db()
            .selectFrom(table)
            .select((eb) => eb.fn.countAll<string | number>().as("n"))
            .executeTakeFirstOrThrow()
        ).n,
      );
    return {
      tasks: await count("tasks"),
      task_dependencies: await count("task_dependencies"),
      task_inputs: await count("task_inputs"),
      runs: await count("runs"),
    };
  }

  async function graphFile(name: string, graph: unknown, text?: string): Promise<string> {
    const file = join(dir, name);
    await writeFile(file, text ?? JSON.stringify(graph, null, 2));
    return file;
  }

  it("submits the example release graph, approves its breakpoint and watches it complete in dependency order", async () => {
    const submitted = await taskweb(["graph", "submit", EXAMPLE, ...flags]);
    expect(submitted.stderr).toBe("");
    expect(submitted.code).toBe(0);
    expect(submitted.lines[0]).toBe("Task group release-example: 9 tasks created.");

    const watching = taskweb(["graph", "watch", "release-example", "--timeout", "50"], {
      TASKWEB_URL: cluster.current().urls.origin,
      TASKWEB_TOKEN: TEST_TOKEN,
    });
    // The breakpoint waits for a person; publish waits for it.
    await waitFor(
      "the breakpoint to wait",
      async () => {
        const view = await cluster.current().tasks.getTask("release-example-approve");
        return view?.task.state === "running" ? true : undefined;
      },
      40_000,
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    const publish = await cluster.current().tasks.getTask("release-example-publish");
    expect(publish?.task.state).toBe("unscheduled");
    const approved = await taskweb([
      "task",
      "resolve",
      "release-example-approve",
      "--note",
      "checked by the release manager",
      ...flags,
    ]);
    expect(approved.stderr).toBe("");
    expect(approved.lines).toEqual(["release-example-approve: run 0 resolved completed"]);

    const watched = await watching;
    expect(watched.stderr).toBe("");
    expect(watched.code).toBe(0);
    expect(watched.lines).toContainEqual(
      expect.stringMatching(
        /^release-example-approve: (unscheduled → )?running \(a breakpoint: resolve it with taskweb task resolve release-example-approve\)$/,
      ),
    );
    expect(watched.lines).toContain("release-example-approve: running → completed");
    expect(watched.lines.at(-1)).toBe("9/9 resolved (9 completed, 0 failed, 0 exception)");
    for (const id of EXAMPLE_TASKS) {
      expect(watched.lines).toContainEqual(
        expect.stringMatching(new RegExp(`^${id}: .*completed$`)),
      );
    }

    // Every run started after each of its task's dependencies resolved.
    for (const id of EXAMPLE_TASKS) {
      const view = await cluster.current().tasks.getTask(id);
      const started = new Date(view!.runs[0]!.started_at!).getTime();
      for (const dep of view!.dependencies) {
        const upstream = await cluster.current().tasks.getTask(dep.dependency);
        expect(started).toBeGreaterThanOrEqual(new Date(upstream!.task.resolved_at!).getTime());
      }
    }
    const report = await db()
      .selectFrom("artifacts")
      .select("content")
      .where("task_id", "=", "release-example-report")
      .where("name", "=", "public/report.txt")
      .executeTakeFirstOrThrow();
    expect(Buffer.from(report.content).toString("utf8")).toBe(
      EXAMPLE_TASKS.slice(0, -1)
        .map((id) => `${id} completed\n`)
        .join(""),
    );

    const before = await rowCounts();
    const again = await taskweb(["graph", "submit", EXAMPLE, ...flags]);
    expect(again.code).toBe(0);
    expect(again.lines[0]).toBe(
      "Task group release-example: the same 9 tasks exist already; nothing created.",
    );
    expect(await rowCounts()).toEqual(before);
  });

  it("downloads an artifact by its id with artifact get, verified, and refuses altered bytes", async () => {
    // The example graph above published public/app.txt from its build task.
    const C = cluster.current();
    const url = C.urls.artifact("release-example-build", "public/app.txt");
    const dest = join(dir, "app.txt");
    const got = await taskweb(["artifact", "get", url, "-o", dest]);
    expect(got.code).toBe(0);
    expect(got.stderr).toMatch(/public\/app\.txt: 100% of 0\.0 MiB/);
    const stored = await db()
      .selectFrom("artifacts")
      .select(["content", "sha256"])
      .where("task_id", "=", "release-example-build")
      .where("name", "=", "public/app.txt")
      .executeTakeFirstOrThrow();
    expect(await readFile(dest, "utf8")).toBe("app 1.0.0\n");
    expect(got.lines).toEqual([`${dest}  10 bytes  sha256:${stored.sha256} (verified)`]);

    const notArtifact = await taskweb(["artifact", "get", C.urls.task("release-example-build")]);
    expect(notArtifact.code).toBe(1);
    expect(notArtifact.stderr).toMatch(/is not a valid artifact document/);

    // Bytes that no longer match what was published are refused, and no file is left.
    await db()
      .updateTable("artifacts")
      .set({ content: Buffer.from("app 6.6.6\n") })
      .where("task_id", "=", "release-example-build")
      .where("name", "=", "public/app.txt")
      .execute();
    const altered = join(dir, "altered.txt");
    const refused = await taskweb(["artifact", "get", url, "-o", altered, "--attempts", "2"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/expected sha256 [0-9a-f]{64} \(10 bytes\), got/);
    await expect(readFile(altered)).rejects.toThrow(/ENOENT/);
    await expect(readFile(`${altered}.partial`)).rejects.toThrow(/ENOENT/);
    await db()
      .updateTable("artifacts")
      .set({ content: stored.content })
      .where("task_id", "=", "release-example-build")
      .where("name", "=", "public/app.txt")
      .execute();
  });

  it("prints every problem of a refused graph on its own line, exits 1 and creates nothing", async () => {
    const file = await graphFile(
      "refused.yaml",
      undefined,
      [
        "taskGroupId: refused",
        "tasks:",
        "  - taskId: refused-a",
        "    dependencies: [refused-c]",
        '    payload: {command: ["true"]}',
        "  - taskId: refused-b",
        "    dependencies: [refused-a, nowhere]",
        "    payload: {command: []}",
        "  - taskId: refused-c",
        "    dependencies: [refused-a]",
        '    payload: {command: ["true"]}',
        "",
      ].join("\n"),
    );
    const before = await rowCounts();
    const result = await taskweb(["graph", "submit", file, ...flags]);
    expect(result.code).toBe(1);
    expect(result.stdout).toBe("");
    expect(result.stderr.split("\n").filter((l) => l !== "")).toEqual([
      "taskweb: The task graph is invalid (3 problems); nothing was created.",
      expect.stringMatching(
        /^tasks\[0\] \(taskId "refused-a"\)\.dependencies\[0\]: Dependency cycle "refused-a" → "refused-c" → "refused-a"/,
      ),
      expect.stringMatching(
        /^tasks\[1\] \(taskId "refused-b"\)\.payload\.command: Must have at least 1 item/,
      ),
      expect.stringMatching(
        /^tasks\[1\] \(taskId "refused-b"\)\.dependencies\[1\]: No task "nowhere" in this graph or on this cluster/,
      ),
    ]);
    expect(await rowCounts()).toEqual(before);

    const unknown = await graphFile("unknown.json", {
      taskGroupId: "unknown",
      tasks: [{ taskId: "unknown-a", dependencies: ["nowhere"], payload: { command: ["true"] } }],
    });
    const second = await taskweb(["graph", "submit", unknown, ...flags]);
    expect(second.code).toBe(1);
    expect(second.stderr).toContain(
      'tasks[0] (taskId "unknown-a").dependencies[0]: No task "nowhere" in this graph or on this cluster',
    );
    expect(await rowCounts()).toEqual(before);
  });

  it("reports a conflicting graph and exits 1", async () => {
    const graph: TaskGraphDocument = {
      taskGroupId: "conflict",
      tasks: [{ taskId: "conflict-a", payload: { command: ["true"] } }],
    };
    expect(
      (await taskweb(["graph", "submit", await graphFile("c1.json", graph), ...flags])).code,
    ).toBe(0);
    graph.tasks[0]!.payload = { command: ["false"] };
    const result = await taskweb(["graph", "submit", await graphFile("c2.json", graph), ...flags]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /^taskweb: Task group "conflict" already exists, and this graph differs in task "conflict-a"/,
    );
  });

  it("watches a failing graph to its end and exits 1", async () => {
    const file = await graphFile("failing.json", {
      taskGroupId: "failing",
      tasks: [
        { taskId: "failing-a", payload: { command: ["sh", "-c", "exit 3"] } },
        { taskId: "failing-b", dependencies: ["failing-a"], payload: { command: ["true"] } },
        {
          taskId: "failing-report",
          requires: "all-resolved",
          dependencies: ["failing-b"],
          payload: { command: ["true"] },
        },
      ],
    } satisfies TaskGraphDocument);
    expect((await taskweb(["graph", "submit", file, ...flags])).code).toBe(0);
    const watched = await taskweb(["graph", "watch", "failing", "--timeout", "30", ...flags]);
    expect(watched.code).toBe(1);
    expect(watched.lines).toContainEqual(
      expect.stringMatching(/^failing-b: (unscheduled → )?exception \(dependency-failed\)$/),
    );
    expect(watched.lines).toContainEqual(expect.stringMatching(/^failing-a: .*failed$/));
    expect(watched.lines.at(-1)).toBe("3/3 resolved (1 completed, 1 failed, 1 exception)");

    const json = await taskweb(["graph", "watch", "failing", "--json", ...flags]);
    expect(json.code).toBe(1);
    const events = json.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(events.slice(0, 3)).toEqual([
      { taskId: "failing-a", state: "failed", previous: null, reasonResolved: "failed" },
      {
        taskId: "failing-b",
        state: "exception",
        previous: null,
        reasonResolved: "dependency-failed",
      },
      { taskId: "failing-report", state: "completed", previous: null, reasonResolved: "completed" },
    ]);
    expect(events[3]).toMatchObject({ resolved: 3, total: 3, counts: { failed: 1 } });
  });

  it("gives up watching after --timeout and exits 1", async () => {
    // Its dependency is on a cluster that never answers: the task stays unscheduled.
    const file = await graphFile("waiting.json", {
      taskGroupId: "waiting",
      tasks: [
        {
          taskId: "waiting-a",
          dependencies: ["http://127.0.0.1:9/clusters/gone/tasks/never"],
          payload: { command: ["true"] },
        },
      ],
    });
    expect((await taskweb(["graph", "submit", file, ...flags])).code).toBe(0);
    const watched = await taskweb(["graph", "watch", "waiting", "--timeout", "1", ...flags]);
    expect(watched.code).toBe(1);
    expect(watched.lines).toEqual([
      "waiting-a: unscheduled",
      "0/1 resolved (0 completed, 0 failed, 0 exception)",
    ]);
    expect(watched.stderr).toBe(
      "taskweb: timed out after 1 s at 0/1 resolved (0 completed, 0 failed, 0 exception).\n",
    );
  });

  it("exits 2 on usage errors and 1 on an unknown task group", async () => {
    // Independent runs, started together: each process takes a while to start.
    const [noId, badTimeout, noToken, noFile, unknown] = await Promise.all([
      taskweb(["graph", "watch", ...flags]),
      taskweb(["graph", "watch", "x", "--timeout", "soon", ...flags]),
      taskweb(["graph", "submit", EXAMPLE, "--url", cluster.current().urls.origin]),
      taskweb(["graph", "submit", join(dir, "missing.yaml"), ...flags]),
      taskweb(["graph", "watch", "no-such-group", ...flags]),
    ]);
    expect(noId.code).toBe(2);
    expect(noId.stderr).toContain("missing required argument");
    expect(badTimeout.code).toBe(2);
    expect(badTimeout.stderr).toContain("--timeout must be a positive number of seconds");
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toContain("--token or TASKWEB_TOKEN");
    expect(noFile.code).toBe(2);
    expect(noFile.stderr).toContain("Cannot read");
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('No task group "no-such-group" on this cluster');
  });

  it("answers the REST API with JSON and YAML bodies", async () => {
    const post = (body: string, contentType: string, token = TEST_TOKEN) =>
      fetch(`${cluster.current().urls.origin}/api/v1/task-groups`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": contentType },
        body,
      });
    const graph = {
      taskGroupId: "rest",
      tasks: [
        { taskId: "rest-a", payload: { command: ["true"] } },
        { taskId: "rest-b", dependencies: ["rest-a"], payload: { command: ["true"] } },
      ],
    };
    const created = await post(JSON.stringify(graph), "application/json");
    expect(created.status).toBe(201);
    expect(await created.json()).toEqual({ taskGroupId: "rest", tasks: 2, created: true });
    const repeated = await post(JSON.stringify(graph), "application/json");
    expect(repeated.status).toBe(200);
    expect(await repeated.json()).toEqual({ taskGroupId: "rest", tasks: 2, created: false });

    const yaml =
      'taskGroupId: rest-yaml\ntasks:\n  - taskId: rest-yaml-a\n    payload: {command: ["true"]}\n';
    expect((await post(yaml, "application/yaml")).status).toBe(201);
    expect((await post(yaml, "text/yaml; charset=utf-8")).status).toBe(200);
    expect((await post(yaml, "text/plain")).status).toBe(415);
    expect((await post(yaml, "application/yaml", "wrong-token-0123456789")).status).toBe(401);
    const bomb = await post(
      "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b]\n",
      "application/yaml",
    );
    expect(bomb.status).toBe(400);
    expect(await bomb.json()).toMatchObject({
      code: "InputError",
      details: { problems: [{ reason: "not-parseable", field: "" }] },
    });
    const huge = await post(`# ${"x".repeat(5 * 1024 * 1024)}\n`, "application/yaml");
    expect(huge.status).toBe(413);
    expect(((await huge.json()) as { message: string }).message).toContain("larger than 5 MiB");

    const get = (id: string) =>
      fetch(`${cluster.current().urls.origin}/api/v1/task-groups/${id}`, {
        headers: { authorization: `Bearer ${TEST_TOKEN}` },
      });
    expect((await get("no-such-group")).status).toBe(404);
    const group = (await (await get("rest")).json()) as {
      total: number;
      counts: Record<string, number>;
      tasks: { taskId: string; state: string; url: string }[];
    };
    expect(group.total).toBe(2);
    expect(Object.keys(group.counts).sort()).toEqual([
      "completed",
      "exception",
      "failed",
      "pending",
      "running",
      "unscheduled",
    ]);
    expect(group.tasks.map((t) => [t.taskId, t.url])).toEqual([
      ["rest-a", cluster.current().urls.task("rest-a")],
      ["rest-b", cluster.current().urls.task("rest-b")],
    ]);
  });

  it("submits a JSON graph over the API's 1 MiB JSON limit (the CLI sends it as YAML)", async () => {
    // A command of 8 arguments of 150 kB each: 1.2 MB of JSON in two tasks.
    const big = Array.from({ length: 8 }, (_, i) => `${i}`.repeat(150_000));
    const graph: TaskGraphDocument = {
      taskGroupId: "large",
      tasks: [
        { taskId: "large-gate", payload: { command: ["false"] } },
        {
          taskId: "large-echo",
          dependencies: ["large-gate"],
          payload: { command: ["echo", ...big] },
        },
      ],
    };
    const file = await graphFile("large.json", graph);
    const submitted = await taskweb(["graph", "submit", file, "--json", ...flags]);
    expect(submitted.stderr).toBe("");
    expect(JSON.parse(submitted.stdout)).toEqual({ taskGroupId: "large", tasks: 2, created: true });
    const stored = await cluster.current().tasks.getTask("large-echo");
    expect((stored?.task.definition as { payload: { command: string[] } }).payload.command).toEqual(
      ["echo", ...big],
    );
    const watched = await taskweb(["graph", "watch", "large", "--timeout", "30", ...flags]);
    expect(watched.code).toBe(1);
    expect(watched.lines.at(-1)).toBe("2/2 resolved (0 completed, 1 failed, 1 exception)");
  });
});
