/**
 * Task graphs on a real database (PGlite, and PostgreSQL when the run has it): the
 * language-neutral vectors of fixtures/graphs/, creation of a whole group in one
 * transaction, idempotent repeats and conflicts, and the creation of 10,000-task graphs.
 * test/e2e/graph-cli.test.ts runs graphs on a cluster.
 *
 * The queue of the bare database is a recording fake of the {@link JobQueue} port: what the
 * service enqueues after commit is part of what these tests check.
 */
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { Ajv2020 } from "ajv/dist/2020.js";
import { parse as parseYaml } from "yaml";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  TASK_GRAPH_SCHEMA,
  type TaskGraphDocument,
  type TaskGraphTaskDocument,
} from "../../protocol/index.ts";
import { ApiError } from "../../server/domain/errors.ts";
import {
  checkTaskGraph,
  parseTaskGraphSource,
  readTaskGroup,
  TASK_GRAPH_LIMITS,
  type TaskGraphProblem,
} from "../../server/domain/task-graph.ts";
import { createTaskService, QUEUES, type TaskService } from "../../server/domain/task-service.ts";
import { createClusterUrls } from "../../server/federation/cluster-urls.ts";
import { openDatabase, type Database } from "../../server/store/database.ts";
import { migrateToLatest } from "../../server/store/migrate.ts";
import { describeEachBackend } from "../support/backends.ts";
import { createRecordingJobQueue } from "../support/recording-job-queue.ts";

interface GraphCase {
  readonly file: string;
  readonly description: string;
  readonly requirement: string;
  readonly valid: boolean;
  readonly existing?: Record<string, unknown>[];
  readonly graph?: unknown;
  readonly source?: string;
  readonly mediaType?: "application/json" | "application/yaml";
  readonly tasks?: number;
  readonly states?: Record<string, string>;
  readonly problems?: { reason: string; field: string }[];
}

const fixtureDirectory = new URL("../../fixtures/graphs/", import.meta.url);
const caseFiles = readdirSync(fixtureDirectory)
  .filter((f) => (f.endsWith(".json") || f.endsWith(".yaml")) && f !== "schema.json")
  .sort();
const rawCases = caseFiles.map((file) => {
  const text = readFileSync(new URL(file, fixtureDirectory), "utf8");
  return { file, data: (file.endsWith(".json") ? JSON.parse(text) : parseYaml(text)) as unknown };
});
const cases: GraphCase[] = rawCases.map(({ file, data }) => ({
  file,
  ...(data as Omit<GraphCase, "file">),
}));

/** Rows of the tables a graph writes to. */
interface RowCounts {
  readonly tasks: number;
  readonly task_dependencies: number;
  readonly task_inputs: number;
  readonly runs: number;
}

/** A prefix no other test of this file uses (they share one database). */
function uid(label: string): string {
  return `${label}-${randomBytes(4).toString("hex")}`;
}

function task(taskId: string, extra: Partial<TaskGraphTaskDocument> = {}): TaskGraphTaskDocument {
  return { taskId, payload: { command: ["true"] }, ...extra };
}

/** 1 root and `n - 1` tasks: each waits on the one before (chain) or on the root (fan-out). */
function bigGraph(
  shape: "chain" | "fan-out",
  n: number,
  rootCommand = ["true"],
): TaskGraphDocument {
  const group = uid(shape);
  const tasks: TaskGraphTaskDocument[] = [
    task(`${group}-0`, { payload: { command: rootCommand } }),
  ];
  for (let i = 1; i < n; i++) {
    tasks.push(
      task(`${group}-${i}`, {
        dependencies: [shape === "chain" ? `${group}-${i - 1}` : `${group}-0`],
      }),
    );
  }
  return { taskGroupId: group, tasks };
}

/** The problems of a refusal, as the fixtures list them. */
async function refusal(promise: Promise<unknown>): Promise<{ reason: string; field: string }[]> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ApiError);
  expect((error as ApiError).code).toBe("InputError");
  const problems = ((error as ApiError).details as { problems: TaskGraphProblem[] }).problems;
  for (const p of problems) expect(p.message.length).toBeGreaterThan(5);
  return problems.map(({ reason, field }) => ({ reason, field }));
}

describe("task graph format", () => {
  it("describes the same task fields as the task definition and the document type", () => {
    const defs = TASK_GRAPH_SCHEMA.$defs as { task: { properties: Record<string, unknown> } };
    // `satisfies` fails to compile when the type gains or loses a field.
    const typeFields = {
      taskId: true,
      taskGroupId: true,
      name: true,
      payload: true,
      dependencies: true,
      requires: true,
      inputs: true,
      deadline: true,
      retries: true,
      inactive: true,
      priority: true,
      breakpoint: true,
      tags: true,
      join: true,
    } satisfies Record<keyof TaskGraphTaskDocument, true>;
    expect(Object.keys(defs.task.properties).sort()).toEqual(Object.keys(typeFields).sort());
    // validateTaskDefinition names every field it knows when it meets an unknown one.
    const check = checkTaskGraph({
      taskGroupId: "g",
      tasks: [{ taskId: "a", payload: { command: ["true"] }, unknown: 1 }],
    });
    const known = check.problems[0]?.message.match(/known fields are (.*)\.$/)?.[1]?.split(", ");
    expect(known?.sort()).toEqual(Object.keys(typeFields).sort());
  });

  const validateCase = new Ajv2020({ strict: true, strictRequired: false }).compile(
    JSON.parse(readFileSync(new URL("schema.json", fixtureDirectory), "utf8")) as object,
  );
  it.each(rawCases.map((c) => [c.file, c.data] as const))(
    "%s matches the fixture schema",
    (_file, data) => {
      validateCase(data);
      expect(validateCase.errors ?? []).toEqual([]);
    },
  );

  it("has vectors for every requirement but idempotence, which needs two submissions", () => {
    const requirements = new Set(cases.map((c) => c.requirement));
    for (const i of [1, 2, 3, 4, 5, 6, 7, 9]) expect(requirements).toContain(`TW-GRAPH-${i}`);
    expect(cases.filter((c) => c.valid).length).toBeGreaterThanOrEqual(3);
  });

  it("refuses a document over 5 MiB before parsing it", () => {
    const text = `taskGroupId: big\n# ${"x".repeat(TASK_GRAPH_LIMITS.maxSourceBytes)}\n`;
    for (const format of ["yaml", "json"] as const) {
      expect(parseTaskGraphSource(text, format)).toMatchObject({
        ok: false,
        problems: [{ reason: "too-large", field: "" }],
      });
    }
  });

  it("refuses more than 10,000 tasks with one problem naming the limit", () => {
    const graph = bigGraph("fan-out", TASK_GRAPH_LIMITS.maxTasks + 1);
    const check = checkTaskGraph(graph);
    expect(check.problems.map(({ reason, field }) => ({ reason, field }))).toEqual([
      { reason: "too-many-tasks", field: "tasks" },
    ]);
  });

  it("names a long cycle by its ends and the dependency that closes it", () => {
    const graph = bigGraph("chain", 5000);
    graph.tasks[0] = task(graph.tasks[0]!.taskId, { dependencies: [graph.tasks[4999]!.taskId] });
    const [problem, ...rest] = checkTaskGraph(graph).problems;
    expect(rest).toEqual([]);
    expect(problem).toMatchObject({ reason: "cycle", task: 0 });
    expect(problem!.field).toBe(`tasks[0] (taskId "${graph.tasks[0]!.taskId}").dependencies[0]`);
    expect(problem!.message).toContain("of 5000 tasks");
    expect(problem!.message.length).toBeLessThan(500);
  });

  it("reports at most 1000 problems and counts the rest", () => {
    const tasks = Array.from({ length: 1500 }, (_, i) => ({ taskId: `t${i}`, payload: {} }));
    const problems = checkTaskGraph({ taskGroupId: "g", tasks }).problems;
    expect(problems).toHaveLength(TASK_GRAPH_LIMITS.maxProblems + 1);
    expect(problems.at(-1)).toMatchObject({ reason: "too-many-problems", field: "" });
    expect(problems.at(-1)!.message).toContain("500 more");
  });

  it("reads a JSON graph written as YAML (YAML 1.2 reads JSON as is)", () => {
    const graph = bigGraph("fan-out", 3);
    expect(parseTaskGraphSource(JSON.stringify(graph), "yaml")).toEqual({ ok: true, value: graph });
  });
});

describeEachBackend("task groups", (backend) => {
  const urls = createClusterUrls("http://127.0.0.1:1", "t");
  let database: Database;
  let jobs: ReturnType<typeof createRecordingJobQueue>;
  let tasks: TaskService;

  beforeAll(async () => {
    database = await openDatabase(backend.database());
    await migrateToLatest(database.db as never);
    jobs = createRecordingJobQueue();
    tasks = createTaskService({ db: database.db, jobs, urls });
  });
  afterAll(async () => {
    await database?.close();
  });
  beforeEach(() => {
    jobs.enqueued.length = 0;
  });

  const db = () => database.db;

  async function rowCounts(): Promise<RowCounts> {
    const count = async (table: "tasks" | "task_dependencies" | "task_inputs" | "runs") => {
      const row = await db()
        .selectFrom(table)
        .select((eb) => eb.fn.countAll<string | number>().as("n"))
        .executeTakeFirstOrThrow();
      return Number(row.n);
    };
    return {
      tasks: await count("tasks"),
      task_dependencies: await count("task_dependencies"),
      task_inputs: await count("task_inputs"),
      runs: await count("runs"),
    };
  }

  async function states(ids: readonly string[]): Promise<Record<string, string>> {
    const rows = await db()
      .selectFrom("tasks")
      .select(["task_id", "state"])
      .where("task_id", "in", ids)
      .execute();
    return Object.fromEntries(rows.map((r) => [r.task_id, r.state]));
  }

  /** Submits a vector as the REST route would: a JSON body, or a raw body to parse first. */
  async function submit(c: GraphCase) {
    if (c.source == null) return await tasks.createTaskGroup(c.graph);
    const parsed = parseTaskGraphSource(
      c.source,
      c.mediaType === "application/yaml" ? "yaml" : "json",
    );
    if (!parsed.ok) {
      throw new ApiError("InputError", "The task graph could not be read.", {
        problems: parsed.problems,
      });
    }
    return await tasks.createTaskGroup(parsed.value);
  }

  describe("fixtures", () => {
    it.each(cases)("$file: $description ($requirement)", async (c) => {
      for (const definition of c.existing ?? []) await tasks.createTask(definition);
      const before = await rowCounts();
      if (c.valid) {
        const result = await submit(c);
        expect(result).toMatchObject({ tasks: c.tasks, created: true });
        expect(await states(Object.keys(c.states ?? {}))).toEqual(c.states);
        expect((await rowCounts()).tasks).toBe(before.tasks + (c.tasks ?? 0));
      } else {
        expect(await refusal(submit(c))).toEqual(c.problems);
        expect(await rowCounts()).toEqual(before);
      }
    });
  });

  it("creates every task, dependency and input at once, and schedules only the root", async () => {
    const g = uid("g");
    const graph: TaskGraphDocument = {
      taskGroupId: g,
      tasks: [
        task(`${g}-test`, {
          inputs: [{ task: `${g}-build`, artifact: "public/app.tar.gz" }],
          requires: "all-resolved",
        }),
        task(`${g}-build`, { dependencies: [urls.task(`${g}-fetch`)], retries: 2 }),
        task(`${g}-fetch`, { name: "Fetch sources", payload: { command: ["sh", "-c", "true"] } }),
      ],
    };
    const before = await rowCounts();
    expect(await tasks.createTaskGroup(graph)).toEqual({ taskGroupId: g, tasks: 3, created: true });
    expect(await rowCounts()).toEqual({
      tasks: before.tasks + 3,
      task_dependencies: before.task_dependencies + 2,
      task_inputs: before.task_inputs + 1,
      runs: before.runs + 1,
    });
    expect(await states([`${g}-fetch`, `${g}-build`, `${g}-test`])).toEqual({
      [`${g}-fetch`]: "pending",
      [`${g}-build`]: "unscheduled",
      [`${g}-test`]: "unscheduled",
    });
    expect(jobs.enqueued).toEqual([
      {
        queue: QUEUES.tasks,
        jobId: `${g}-fetch/0`,
        data: { taskId: `${g}-fetch`, runId: 0 },
        options: { priority: 7 },
      },
    ]);
    const build = await tasks.getTask(`${g}-build`);
    expect(build?.task).toMatchObject({ task_group_id: g, retries: 2, retries_left: 2 });
    // A local task's URL is stored as its id, as createTask does.
    expect(build?.dependencies).toEqual([
      { task_id: `${g}-build`, dependency: `${g}-fetch`, remote: false, resolution: null },
    ]);
    const test = await tasks.getTask(`${g}-test`);
    expect(test?.inputs).toEqual([
      {
        task_id: `${g}-test`,
        path: "app.tar.gz",
        artifact_url: urls.artifact(`${g}-build`, "public/app.tar.gz"),
        task_url: urls.task(`${g}-build`),
        // Recorded when a run fetches the input; none has yet.
        sha256: null,
      },
    ]);
    expect(test?.task.requires).toBe("all-resolved");
    const view = await readTaskGroup(db(), g);
    expect(view).toMatchObject({
      taskGroupId: g,
      total: 3,
      resolved: 0,
      counts: { unscheduled: 2, pending: 1, running: 0, completed: 0, failed: 0, exception: 0 },
    });
    expect(await readTaskGroup(db(), uid("nothing"))).toBeUndefined();
  });

  it("treats the same graph submitted again as a success that creates nothing", async () => {
    const graph = bigGraph("chain", 20);
    expect((await tasks.createTaskGroup(graph)).created).toBe(true);
    const before = await rowCounts();
    jobs.enqueued.length = 0;
    // Key order and defaults written out do not make it another graph.
    const again = JSON.parse(JSON.stringify(graph)) as TaskGraphDocument;
    again.tasks[3] = { ...again.tasks[3]!, requires: "all-completed", retries: 5 };
    again.tasks.reverse();
    expect(await tasks.createTaskGroup(again)).toEqual({
      taskGroupId: graph.taskGroupId,
      tasks: 20,
      created: false,
    });
    expect(await rowCounts()).toEqual(before);
    expect(jobs.enqueued).toEqual([]);
  });

  it("refuses the same taskGroupId with different content, creating nothing", async () => {
    const graph = bigGraph("fan-out", 5);
    await tasks.createTaskGroup(graph);
    const before = await rowCounts();
    const changed = structuredClone(graph);
    changed.tasks[2] = task(changed.tasks[2]!.taskId, {
      dependencies: [graph.tasks[0]!.taskId],
      payload: { command: ["false"] },
    });
    const error = await tasks.createTaskGroup(changed).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "RequestConflict" });
    expect((error as ApiError).message).toContain(graph.tasks[2]!.taskId);

    const bigger = structuredClone(graph);
    bigger.tasks.push(task(`${graph.taskGroupId}-extra`));
    expect(await tasks.createTaskGroup(bigger).catch((e: unknown) => e)).toMatchObject({
      code: "RequestConflict",
      message: expect.stringContaining("already exists") as string,
    });
    expect(await rowCounts()).toEqual(before);
  });

  it("refuses a taskId that exists in another task group, naming it", async () => {
    const taken = uid("taken");
    await tasks.createTask({ taskId: taken, payload: { command: ["true"] } });
    const before = await rowCounts();
    const g = uid("g");
    const error = await tasks
      .createTaskGroup({ taskGroupId: g, tasks: [task(`${g}-a`), task(taken)] })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "RequestConflict", details: { taskIds: [taken] } });
    expect((error as ApiError).message).toContain(`"${taken}" (in task group "${taken}")`);
    expect(await rowCounts()).toEqual(before);
  });

  it("refuses a graph under a task group that single tasks created", async () => {
    const g = uid("g");
    await tasks.createTask({
      taskId: `${g}-decision`,
      taskGroupId: g,
      payload: { command: ["true"] },
    });
    const before = await rowCounts();
    expect(
      await tasks
        .createTaskGroup({ taskGroupId: g, tasks: [task(`${g}-a`)] })
        .catch((e: unknown) => e),
    ).toMatchObject({ code: "RequestConflict" });
    expect(await rowCounts()).toEqual(before);
  });

  it("resolves at creation the tasks whose existing dependency already failed", async () => {
    const g = uid("g");
    await tasks.createTask({ taskId: `${g}-base`, payload: { command: ["false"] } });
    await tasks.claimRun(`${g}-base`, 0, "worker-1", 60_000);
    await tasks.resolveRun(`${g}-base`, 0, "worker-1", {
      state: "failed",
      reason: "failed",
      exitCode: 1,
      log: "",
      artifacts: [],
    });
    await tasks.createTaskGroup({
      taskGroupId: g,
      tasks: [
        task(`${g}-report`, { requires: "all-resolved", dependencies: [`${g}-b`] }),
        task(`${g}-b`, { dependencies: [`${g}-a`] }),
        task(`${g}-a`, { dependencies: [`${g}-base`] }),
      ],
    });
    expect(await states([`${g}-a`, `${g}-b`, `${g}-report`])).toEqual({
      [`${g}-a`]: "exception",
      [`${g}-b`]: "exception",
      [`${g}-report`]: "pending",
    });
    const a = await tasks.getTask(`${g}-a`);
    expect(a?.runs.map((r) => r.reason_resolved)).toEqual(["dependency-failed"]);
  });

  it("asks other clusters about remote dependencies it does not know resolved", async () => {
    const known = `http://127.0.0.1:2/clusters/up/tasks/${uid("known")}`;
    const unknown = `http://127.0.0.1:2/clusters/up/tasks/${uid("unknown")}`;
    await tasks.applyRemoteTask({
      taskUrl: known,
      actorId: "http://127.0.0.1:2/clusters/up",
      state: "completed",
      resolvedAt: new Date().toISOString(),
      artifacts: [],
      source: "dereference",
    });
    jobs.enqueued.length = 0;
    const g = uid("g");
    await tasks.createTaskGroup({
      taskGroupId: g,
      tasks: [
        task(`${g}-a`, { dependencies: [known] }),
        task(`${g}-b`, { dependencies: [unknown] }),
      ],
    });
    expect(await states([`${g}-a`, `${g}-b`])).toEqual({
      [`${g}-a`]: "pending",
      [`${g}-b`]: "unscheduled",
    });
    expect(jobs.enqueued.filter((j) => j.queue === QUEUES.dereference)).toEqual([
      { queue: QUEUES.dereference, jobId: unknown, data: { url: unknown }, options: {} },
    ]);
  });

  it("creates a graph submitted twice at the same time once", async () => {
    const graph = bigGraph("fan-out", 200);
    const results = await Promise.all([
      tasks.createTaskGroup(graph),
      tasks.createTaskGroup(structuredClone(graph)),
    ]);
    expect(results.map((r) => r.created).sort()).toEqual([false, true]);
    expect((await readTaskGroup(db(), graph.taskGroupId))?.total).toBe(200);
  });

  it("creates a 10,000-task chain in bounded time", async () => {
    const graph = bigGraph("chain", 10_000);
    const before = await rowCounts();
    const started = performance.now();
    const result = await tasks.createTaskGroup(graph);
    const ms = Math.round(performance.now() - started);
    console.log(`[timing] ${backend.name}: created a 10,000-task chain in ${ms} ms`);
    expect(result).toEqual({ taskGroupId: graph.taskGroupId, tasks: 10_000, created: true });
    expect(await rowCounts()).toEqual({
      tasks: before.tasks + 10_000,
      task_dependencies: before.task_dependencies + 9_999,
      task_inputs: before.task_inputs,
      runs: before.runs + 1,
    });
    expect(await states([graph.tasks[0]!.taskId, graph.tasks[9_999]!.taskId])).toEqual({
      [graph.tasks[0]!.taskId]: "pending",
      [graph.tasks[9_999]!.taskId]: "unscheduled",
    });
    expect(ms).toBeLessThan(30_000);
  });

  it("creates a 10,000-task fan-out whose root fails, and resolves every dependent exception", async () => {
    const graph = bigGraph("fan-out", 10_000, ["false"]);
    const root = graph.tasks[0]!.taskId;
    const before = await rowCounts();
    let started = performance.now();
    expect((await tasks.createTaskGroup(graph)).created).toBe(true);
    const createMs = Math.round(performance.now() - started);
    expect(await rowCounts()).toEqual({
      tasks: before.tasks + 10_000,
      task_dependencies: before.task_dependencies + 9_999,
      task_inputs: before.task_inputs,
      runs: before.runs + 1,
    });
    expect((await readTaskGroup(db(), graph.taskGroupId))?.counts).toMatchObject({
      pending: 1,
      unscheduled: 9_999,
    });
    started = performance.now();
    expect((await tasks.createTaskGroup(graph)).created).toBe(false);
    const repeatMs = Math.round(performance.now() - started);

    // What a worker does when the root's `false` exits 1: claim run 0, resolve it failed.
    expect(await tasks.claimRun(root, 0, "worker-1", 60_000)).toBeDefined();
    started = performance.now();
    await tasks.resolveRun(root, 0, "worker-1", {
      state: "failed",
      reason: "failed",
      exitCode: 1,
      log: "",
      artifacts: [],
    });
    const cascadeMs = Math.round(performance.now() - started);
    console.log(
      `[timing] ${backend.name}: created a 10,000-task fan-out in ${createMs} ms, recognised ` +
        `the repeat in ${repeatMs} ms, resolved its 9,999 dependents in ${cascadeMs} ms`,
    );
    const view = await readTaskGroup(db(), graph.taskGroupId);
    expect(view?.counts).toEqual({
      unscheduled: 0,
      pending: 0,
      running: 0,
      completed: 0,
      failed: 1,
      exception: 9_999,
    });
    expect(
      new Set(view?.tasks.filter((t) => t.taskId !== root).map((t) => t.reasonResolved)),
    ).toEqual(new Set(["dependency-failed"]));
    expect(createMs).toBeLessThan(30_000);
  }, 180_000);
});
