/**
 * The task state machine on a real database (PGlite, and PostgreSQL when the run has it):
 * every transition of a task and its runs, dependency evaluation, claims and their leases,
 * idempotent creation, what remote reports change, what the reconciler finds again, and the
 * activities a resolution writes to the outbox.
 *
 * The queue is a recording fake of the {@link JobQueue} port: the service only enqueues
 * after commit, and what it enqueues is part of what these tests check.
 */
import { createHash, randomBytes } from "node:crypto";
import type { Transaction } from "kysely";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { parseActivity, type TaskwebActivity } from "../../protocol/index.ts";
import { ApiError } from "../../server/domain/errors.ts";
import { JOIN_QUEUE } from "../../server/domain/task-joins.ts";
import {
  createTaskService,
  QUEUES,
  type NewArtifact,
  type RemoteArtifactReport,
  type RemoteTaskReport,
  type RunOutcome,
  type TaskService,
} from "../../server/domain/task-service.ts";
import { createClusterUrls } from "../../server/federation/cluster-urls.ts";
import { openDatabase, sql, type Database } from "../../server/store/database.ts";
import type { DatabaseSchema } from "../../server/store/schema.ts";
import { migrateToLatest } from "../../server/store/migrate.ts";
import { describeEachBackend } from "../support/backends.ts";
import { createRecordingJobQueue } from "../support/recording-job-queue.ts";

const LEASE_MS = 60_000;
const REMOTE_ORIGIN = "http://127.0.0.1:2";
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A task id no other test of this file uses (they share one database). */
function uid(label: string): string {
  return `${label}-${randomBytes(4).toString("hex")}`;
}

function remoteTaskUrl(label: string, origin = REMOTE_ORIGIN): string {
  return `${origin}/clusters/up/tasks/${uid(label)}`;
}

function artifact(name: string, text: string): NewArtifact {
  const content = new TextEncoder().encode(text);
  return {
    name,
    mediaType: "text/plain",
    content,
    sha256: createHash("sha256").update(content).digest("hex"),
  };
}

function outcome(state: RunOutcome["state"], extra: Partial<RunOutcome> = {}): RunOutcome {
  return {
    state,
    reason: state,
    exitCode: state === "completed" ? 0 : state === "failed" ? 1 : null,
    log: `log of a ${state} run\n`,
    artifacts: [],
    ...extra,
  };
}

describeEachBackend("task service", (backend) => {
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

  /**
   * Two transactions that overlap: `first` runs in a transaction held open while `second`
   * starts; once `second` has had the time to finish had it not waited for the first (300 ms),
   * the held one ends with `last` (if given) and commits. On PostgreSQL a `second` that needs
   * a row `first` locked waits for that commit; PGlite runs one transaction at a time anyway.
   * @returns what `second` returned.
   */
  async function overlapping<T>(
    first: (held: Transaction<DatabaseSchema>) => Promise<unknown>,
    second: () => Promise<T>,
    last?: (held: Transaction<DatabaseSchema>) => Promise<unknown>,
  ): Promise<T> {
    const held = await db().startTransaction().execute();
    let started: Promise<T>;
    try {
      await first(held);
      started = second();
      await Promise.race([started, sleep(300)]);
      await last?.(held);
      await held.commit().execute();
    } catch (error) {
      await held.rollback().execute();
      throw error;
    }
    return await started;
  }

  /** A cluster this one follows (a join may only list such clusters). */
  async function followed(label: string): Promise<string> {
    const publisher = `${REMOTE_ORIGIN}/clusters/${uid(label)}`;
    await db()
      .insertInto("following")
      .values({
        actor_id: publisher,
        inbox: `${publisher}/inbox`,
        shared_inbox: null,
        follow_id: `${urls.actor}/follows/${uid("f")}`,
        state: "accepted",
        updated_at: new Date(),
      })
      .execute();
    return publisher;
  }

  /** An artifact `publisher` published, as its ArtifactPublished reports it. */
  function publishedArtifact(publisher: string, name = "public/data.csv"): RemoteArtifactReport {
    const taskUrl = `${publisher}/tasks/${uid("data")}`;
    return {
      artifactUrl: `${taskUrl}/artifacts/${name}`,
      taskUrl,
      actorId: publisher,
      name,
      contentUrl: `${publisher}/content/${uid("c")}/${name}`,
      sha256: "0".repeat(64),
      size: 1,
      mediaType: "text/csv",
    };
  }

  async function view(taskId: string) {
    const found = await tasks.getTask(taskId);
    if (found == null) throw new Error(`task ${taskId} does not exist`);
    return found;
  }

  async function stateOf(taskId: string): Promise<string> {
    return (await view(taskId)).task.state;
  }

  function dispatched(taskId: string): string[] {
    return jobs.enqueued
      .filter((e) => e.queue === QUEUES.tasks && e.jobId.startsWith(`${taskId}/`))
      .map((e) => e.jobId);
  }

  /** Creates a task that runs at once (no dependencies) and claims its run 0 for `worker`. */
  async function runningTask(
    label: string,
    extra: Record<string, unknown> = {},
    worker = "worker-1",
    leaseMs = LEASE_MS,
  ): Promise<string> {
    const taskId = uid(label);
    await tasks.createTask({ taskId, payload: { command: ["true"] }, ...extra });
    const claim = await tasks.claimRun(taskId, 0, worker, leaseMs);
    if (claim == null) throw new Error(`could not claim ${taskId}`);
    return taskId;
  }

  async function rowCounts(): Promise<Record<string, number>> {
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

  async function lastOutboxSeq(): Promise<number> {
    const row = await db()
      .selectFrom("outbox")
      .select((eb) => eb.fn.max("seq").as("seq"))
      .executeTakeFirst();
    return row?.seq == null ? 0 : Number(row.seq);
  }

  /**
   * Outbox rows written after `seq`, oldest first, each parsed with the protocol library;
   * `TaskGroupResolved` rows only when `groups` is true.
   */
  async function outboxAfter(seq: number, groups = false) {
    const rows = await db()
      .selectFrom("outbox")
      .select(["seq", "activity_id", "activity", "fanned_out_at"])
      .where(sql<boolean>`seq > ${seq}`)
      .orderBy("seq")
      .execute();
    return rows
      .map((row) => {
        const parsed = parseActivity(row.activity);
        if (!parsed.ok) throw new Error(`outbox row does not parse: ${JSON.stringify(parsed)}`);
        return { row, activity: parsed.value };
      })
      .filter(({ activity }) => groups || activity.kind !== "TaskGroupResolved");
  }

  function taskOf(activity: TaskwebActivity) {
    if (activity.kind === "ArtifactPublished" || activity.kind === "TaskGroupResolved") {
      throw new Error("not a task activity");
    }
    return activity.task;
  }

  describe("state transitions", () => {
    it("makes a task without dependencies pending with run 0 and dispatches that run", async () => {
      const taskId = uid("solo");
      const result = await tasks.createTask({ taskId, payload: { command: ["true"] } });
      expect(result).toEqual({ taskId, created: true });
      const found = await view(taskId);
      expect(found.task.state).toBe("pending");
      expect(found.runs.map((r) => [r.run_id, r.state, r.reason_created])).toEqual([
        [0, "pending", "scheduled"],
      ]);
      expect(jobs.enqueued).toContainEqual({
        queue: QUEUES.tasks,
        jobId: `${taskId}/0`,
        data: { taskId, runId: 0 },
        // The default priority, lowest, is the queue's 7th level.
        options: { priority: 7 },
      });
    });

    it("keeps a task unscheduled until its local dependency completes, then makes it pending", async () => {
      const up = await runningTask("up");
      const down = uid("down");
      await tasks.createTask({ taskId: down, dependencies: [up], payload: { command: ["true"] } });
      expect(await stateOf(down)).toBe("unscheduled");
      expect((await view(down)).runs).toEqual([]);
      expect(dispatched(down)).toEqual([]);

      expect(await tasks.resolveRun(up, 0, "worker-1", outcome("completed"))).toBe(true);
      const found = await view(down);
      expect(found.task.state).toBe("pending");
      expect(found.dependencies.map((d) => [d.dependency, d.remote, d.resolution])).toEqual([
        [up, false, "completed"],
      ]);
      expect(found.runs.map((r) => [r.run_id, r.state])).toEqual([[0, "pending"]]);
      expect(dispatched(down)).toEqual([`${down}/0`]);
    });

    it("waits for every dependency, not just the first to complete", async () => {
      const first = await runningTask("first");
      const second = await runningTask("second");
      const down = uid("down");
      await tasks.createTask({
        taskId: down,
        dependencies: [first, urls.task(second)],
        payload: { command: ["true"] },
      });
      await tasks.resolveRun(first, 0, "worker-1", outcome("completed"));
      expect(await stateOf(down)).toBe("unscheduled");
      await tasks.resolveRun(second, 0, "worker-1", outcome("completed"));
      expect(await stateOf(down)).toBe("pending");
    });

    it("moves a pending run to running when a worker claims it, with the task's definition", async () => {
      const taskId = uid("claim");
      await tasks.createTask({
        taskId,
        payload: { command: ["echo", "hi"], env: { A: "1" }, maxRunTime: 30 },
      });
      const before = Date.now();
      const claim = await tasks.claimRun(taskId, 0, "worker-a", LEASE_MS);
      expect(claim).toBeDefined();
      expect(claim!.definition.payload).toEqual({
        command: ["echo", "hi"],
        env: { A: "1" },
        maxRunTime: 30,
      });
      expect(claim!.takenUntil.getTime()).toBeGreaterThanOrEqual(before + LEASE_MS);
      const found = await view(taskId);
      expect(found.task.state).toBe("running");
      const run = found.runs[0]!;
      expect([run.state, run.worker_id]).toEqual(["running", "worker-a"]);
      expect(run.started_at).not.toBeNull();
      expect(new Date(run.taken_until!).getTime()).toBe(claim!.takenUntil.getTime());
    });

    it("refuses to claim a run that is not pending", async () => {
      const taskId = await runningTask("claimed");
      expect(await tasks.claimRun(taskId, 0, "worker-2", LEASE_MS)).toBeUndefined();
      expect(await tasks.claimRun(taskId, 7, "worker-2", LEASE_MS)).toBeUndefined();
      expect((await view(taskId)).runs[0]!.worker_id).toBe("worker-1");
    });

    it("extends the lease of a claim its worker still holds", async () => {
      const taskId = await runningTask("renew", {}, "worker-1", 1000);
      const before = (await view(taskId)).runs[0]!.taken_until!;
      expect(await tasks.renewClaim(taskId, 0, "worker-1", LEASE_MS)).toBe(true);
      const after = (await view(taskId)).runs[0]!.taken_until!;
      expect(new Date(after).getTime()).toBeGreaterThan(new Date(before).getTime());
      expect(await tasks.renewClaim(taskId, 0, "someone-else", LEASE_MS)).toBe(false);
    });

    it.each(["completed", "failed", "exception"] as const)(
      "resolves a running run as %s with what the worker reported",
      async (state) => {
        const taskId = await runningTask(state);
        const reported = outcome(state, {
          reason: state === "exception" ? "malformed-payload" : state,
          log: `the ${state} log\n`,
        });
        expect(await tasks.resolveRun(taskId, 0, "worker-1", reported)).toBe(true);
        const found = await view(taskId);
        expect(found.task.state).toBe(state);
        expect(found.task.resolved_at).not.toBeNull();
        const run = found.runs[0]!;
        expect([run.state, run.reason_resolved, run.exit_code, run.log, run.taken_until]).toEqual([
          state,
          reported.reason,
          reported.exitCode,
          reported.log,
          null,
        ]);
        // A second resolution of the same run changes nothing.
        expect(await tasks.resolveRun(taskId, 0, "worker-1", outcome("completed"))).toBe(false);
        expect(await stateOf(taskId)).toBe(state);
      },
    );

    it("stores a run's artifacts with their size and digest", async () => {
      const taskId = await runningTask("artifacts");
      const files = [artifact("public/a.txt", "alpha"), artifact("b/c.txt", "gamma gamma")];
      await tasks.resolveRun(taskId, 0, "worker-1", outcome("completed", { artifacts: files }));
      const stored = await db()
        .selectFrom("artifacts")
        .select(["name", "run_id", "size", "sha256", "content", "media_type"])
        .where("task_id", "=", taskId)
        .orderBy("name")
        .execute();
      expect(stored.map((a) => [a.name, a.run_id, Number(a.size), a.sha256, a.media_type])).toEqual(
        [...files]
          .sort((x, y) => x.name.localeCompare(y.name))
          .map((f) => [f.name, 0, f.content.byteLength, f.sha256, f.mediaType]),
      );
      for (const row of stored) {
        const file = files.find((f) => f.name === row.name)!;
        expect(Buffer.from(row.content).equals(Buffer.from(file.content))).toBe(true);
      }
    });
  });

  describe("deadlines", () => {
    it("resolves a pending task past its deadline as exception on its pending run", async () => {
      const taskId = uid("late-pending");
      await tasks.createTask({
        taskId,
        payload: { command: ["true"] },
        deadline: new Date(Date.now() + 300).toISOString(),
      });
      expect(await stateOf(taskId)).toBe("pending");
      await sleep(400);
      expect(await tasks.resolveDeadlines()).toBeGreaterThanOrEqual(1);
      const found = await view(taskId);
      expect(found.task.state).toBe("exception");
      expect(found.runs.map((r) => [r.run_id, r.state, r.reason_resolved, r.started_at])).toEqual([
        [0, "exception", "deadline-exceeded", null],
      ]);
      // The dispatched run can no longer be claimed.
      expect(await tasks.claimRun(taskId, 0, "worker-1", LEASE_MS)).toBeUndefined();
    });

    it("resolves an unscheduled task past its deadline as exception with a run saying why", async () => {
      const up = uid("never-done");
      await tasks.createTask({ taskId: up, payload: { command: ["true"] } });
      const taskId = uid("late-unscheduled");
      const seq = await lastOutboxSeq();
      await tasks.createTask({
        taskId,
        dependencies: [up],
        payload: { command: ["true"] },
        deadline: new Date(Date.now() + 300).toISOString(),
      });
      expect(await stateOf(taskId)).toBe("unscheduled");
      await sleep(400);
      await tasks.resolveDeadlines();
      const found = await view(taskId);
      expect(found.task.state).toBe("exception");
      expect(found.runs.map((r) => [r.run_id, r.state, r.reason_resolved])).toEqual([
        [0, "exception", "deadline-exceeded"],
      ]);
      // The dependency is untouched, and the resolution is announced.
      expect(await stateOf(up)).toBe("pending");
      const written = await outboxAfter(seq);
      expect(written.map((w) => w.activity.kind)).toEqual(["TaskFailed"]);
      expect(taskOf(written[0]!.activity).reasonResolved).toBe("deadline-exceeded");
    });

    it("resolves a running task past its deadline as exception, and its worker loses the claim", async () => {
      const taskId = await runningTask("late-running", {
        deadline: new Date(Date.now() + 300).toISOString(),
      });
      expect(await tasks.renewClaim(taskId, 0, "worker-1", LEASE_MS)).toBe(true);
      await sleep(400);
      await tasks.resolveDeadlines();
      const found = await view(taskId);
      expect(found.task.state).toBe("exception");
      expect(found.runs.map((r) => [r.run_id, r.state, r.reason_resolved])).toEqual([
        [0, "exception", "deadline-exceeded"],
      ]);
      // The worker finds out at its next renewal and stops the process.
      expect(await tasks.renewClaim(taskId, 0, "worker-1", LEASE_MS)).toBe(false);
      // Its late report changes nothing.
      expect(
        await tasks.resolveRun(taskId, 0, "worker-1", {
          state: "completed",
          reason: "completed",
          exitCode: 0,
          log: "",
          artifacts: [],
        }),
      ).toBe(false);
      expect(await stateOf(taskId)).toBe("exception");
    });
  });

  describe("expired claims", () => {
    it("retries a run whose claim expired as a new pending run while retries remain, then resolves exception", async () => {
      const taskId = await runningTask("flaky", { retries: 1 }, "worker-1", 1);
      await sleep(20);
      expect(await tasks.reapExpiredClaims()).toBeGreaterThanOrEqual(1);
      let found = await view(taskId);
      expect(found.task.state).toBe("pending");
      expect(found.task.retries_left).toBe(0);
      expect(
        found.runs.map((r) => [r.run_id, r.state, r.reason_created, r.reason_resolved]),
      ).toEqual([
        [0, "exception", "scheduled", "claim-expired"],
        [1, "pending", "retry", null],
      ]);
      expect(dispatched(taskId)).toEqual([`${taskId}/0`, `${taskId}/1`]);

      expect(await tasks.claimRun(taskId, 1, "worker-2", 1)).toBeDefined();
      await sleep(20);
      const seq = await lastOutboxSeq();
      await tasks.reapExpiredClaims();
      found = await view(taskId);
      expect(found.task.state).toBe("exception");
      expect(found.runs.map((r) => [r.run_id, r.state, r.reason_resolved])).toEqual([
        [0, "exception", "claim-expired"],
        [1, "exception", "claim-expired"],
      ]);
      const written = await outboxAfter(seq);
      expect(written.map((w) => w.activity.kind)).toEqual(["TaskFailed"]);
      expect(taskOf(written[0]!.activity)).toMatchObject({
        taskState: "exception",
        reasonResolved: "claim-expired",
        runId: 1,
      });
    });

    it("does not reap a claim whose lease is still running", async () => {
      const taskId = await runningTask("healthy");
      await tasks.reapExpiredClaims();
      expect((await view(taskId)).runs.map((r) => r.state)).toEqual(["running"]);
    });

    it("changes nothing when a worker that lost its claim resolves the run", async () => {
      const taskId = await runningTask("lost", { retries: 2 }, "worker-old", 1);
      await sleep(20);
      await tasks.reapExpiredClaims();
      expect(await tasks.claimRun(taskId, 1, "worker-new", LEASE_MS)).toBeDefined();
      const before = await view(taskId);
      const seq = await lastOutboxSeq();

      const late = outcome("completed", { artifacts: [artifact("public/late.txt", "late")] });
      expect(await tasks.resolveRun(taskId, 0, "worker-old", late)).toBe(false);
      expect(await tasks.resolveRun(taskId, 1, "worker-old", late)).toBe(false);
      expect(await tasks.renewClaim(taskId, 0, "worker-old", LEASE_MS)).toBe(false);

      expect(await view(taskId)).toEqual(before);
      expect(await outboxAfter(seq)).toEqual([]);
      // The worker that holds the claim now still can.
      expect(await tasks.resolveRun(taskId, 1, "worker-new", outcome("completed"))).toBe(true);
      expect(await stateOf(taskId)).toBe("completed");
    });
  });

  describe("concurrent claims", () => {
    it("lets exactly one of two concurrent claims of one run win", async () => {
      for (let i = 0; i < 5; i++) {
        const taskId = uid("race");
        await tasks.createTask({ taskId, payload: { command: ["true"] } });
        const claims = await Promise.all([
          tasks.claimRun(taskId, 0, "worker-a", LEASE_MS),
          tasks.claimRun(taskId, 0, "worker-b", LEASE_MS),
        ]);
        const winners = claims.flatMap((c, index) => (c == null ? [] : [index]));
        expect(winners).toHaveLength(1);
        const run = (await view(taskId)).runs;
        expect(run).toHaveLength(1);
        expect(run[0]!.worker_id).toBe(winners[0] === 0 ? "worker-a" : "worker-b");
      }
    });
  });

  // A cancel locks the task's row and then its run's; a worker's claim, resolution or hand-back
  // and the reaper of expired claims must take the two rows in the same order. Here a
  // transaction does what a cancel does: it locks the task's row, lets the worker's operation
  // start, and only then closes the run. On PostgreSQL the worker's operation must wait for
  // the task's row before it touches the run's (had it locked the run first, one of the two
  // would fail with "deadlock detected"), and then find the run closed and change nothing.
  describe("a cancel overlapping a worker's transaction", () => {
    for (const operation of [
      "claimRun",
      "resolveRun",
      "handBackRun",
      "reapExpiredClaims",
    ] as const) {
      it(`lets ${operation} wait for the cancel, then change nothing`, async () => {
        const taskId =
          operation === "claimRun"
            ? uid(operation)
            : await runningTask(
                operation,
                { retries: 2 },
                "worker-1",
                operation === "reapExpiredClaims" ? 1 : LEASE_MS,
              );
        if (operation === "claimRun") {
          await tasks.createTask({ taskId, retries: 2, payload: { command: ["true"] } });
        } else if (operation === "reapExpiredClaims") {
          await sleep(20);
        }
        const seq = await lastOutboxSeq();
        const result = await overlapping<unknown>(
          (held) =>
            held
              .selectFrom("tasks")
              .select("state")
              .where("task_id", "=", taskId)
              .forUpdate()
              .executeTakeFirstOrThrow(),
          () =>
            operation === "claimRun"
              ? tasks.claimRun(taskId, 0, "worker-1", LEASE_MS)
              : operation === "resolveRun"
                ? tasks.resolveRun(
                    taskId,
                    0,
                    "worker-1",
                    outcome("completed", { artifacts: [artifact("public/a.txt", "a")] }),
                  )
                : operation === "handBackRun"
                  ? tasks.handBackRun(taskId, 0, "worker-1")
                  : tasks.reapExpiredClaims(),
          async (held) => {
            // The cancel closes the run and the task.
            const now = new Date();
            await held
              .updateTable("runs")
              .set({
                state: "exception",
                reason_resolved: "canceled",
                resolved_at: now,
                taken_until: null,
              })
              .where("task_id", "=", taskId)
              .where("state", "in", ["pending", "running"])
              .execute();
            await held
              .updateTable("tasks")
              .set({ state: "exception", resolved_at: now, updated_at: now })
              .where("task_id", "=", taskId)
              .execute();
          },
        );
        if (operation === "claimRun") expect(result).toBeUndefined();
        if (operation === "resolveRun" || operation === "handBackRun") expect(result).toBe(false);
        const found = await view(taskId);
        expect(found.task.state).toBe("exception");
        expect(found.task.retries_left).toBe(2);
        expect(found.runs.map((r) => [r.run_id, r.state, r.reason_resolved])).toEqual([
          [0, "exception", "canceled"],
        ]);
        expect(found.artifacts).toEqual([]);
        // No retry was dispatched, and nothing about the task was announced.
        expect(dispatched(taskId)).toEqual([`${taskId}/0`]);
        const announced = (await outboxAfter(seq, true)).filter(({ row }) =>
          JSON.stringify(row.activity).includes(taskId),
        );
        expect(announced).toEqual([]);
      });
    }

    it("settles a cancel and a run's resolution at the same moment one way or the other", async () => {
      for (let round = 0; round < 5; round++) {
        const taskId = await runningTask(`cancel-race-${round}`);
        const [cancel, resolved] = await Promise.all([
          tasks.cancelTask(taskId),
          tasks.resolveRun(taskId, 0, "worker-1", outcome("completed")),
        ]);
        const found = await view(taskId);
        const runs = found.runs.map((r) => [r.run_id, r.state, r.reason_resolved]);
        if (resolved) {
          expect(cancel).toEqual({ state: "completed", changed: false });
          expect(found.task.state).toBe("completed");
          expect(runs).toEqual([[0, "completed", "completed"]]);
        } else {
          expect(cancel).toEqual({ state: "exception", changed: true });
          expect(found.task.state).toBe("exception");
          expect(runs).toEqual([[0, "exception", "canceled"]]);
        }
      }
    });
  });

  describe("requires", () => {
    it("resolves dependents exception (dependency-failed) down a chain when a dependency fails under all-completed", async () => {
      const a = await runningTask("a");
      const b = uid("b");
      const c = uid("c");
      await tasks.createTask({ taskId: b, dependencies: [a], payload: { command: ["true"] } });
      await tasks.createTask({ taskId: c, dependencies: [b], payload: { command: ["true"] } });
      const seq = await lastOutboxSeq();

      await tasks.resolveRun(a, 0, "worker-1", outcome("failed"));
      for (const taskId of [b, c]) {
        const found = await view(taskId);
        expect(found.task.state).toBe("exception");
        expect(found.runs.map((r) => [r.state, r.reason_resolved, r.started_at])).toEqual([
          ["exception", "dependency-failed", null],
        ]);
        expect(dispatched(taskId)).toEqual([]);
      }
      const written = await outboxAfter(seq);
      expect(written.map((w) => [taskOf(w.activity).id, taskOf(w.activity).taskState])).toEqual([
        [urls.task(a), "failed"],
        [urls.task(b), "exception"],
        [urls.task(c), "exception"],
      ]);
    });

    it("runs a dependent anyway under all-resolved when its dependency fails", async () => {
      const a = await runningTask("a");
      const d = uid("d");
      await tasks.createTask({
        taskId: d,
        dependencies: [a],
        requires: "all-resolved",
        payload: { command: ["true"] },
      });
      await tasks.resolveRun(a, 0, "worker-1", outcome("failed"));
      const found = await view(d);
      expect(found.task.state).toBe("pending");
      expect(found.dependencies.map((x) => x.resolution)).toEqual(["failed"]);
      expect(dispatched(d)).toEqual([`${d}/0`]);
    });

    it("stops a cascade at a task that requires all-resolved", async () => {
      const a = await runningTask("a");
      const b = uid("b");
      const c = uid("c");
      await tasks.createTask({ taskId: b, dependencies: [a], payload: { command: ["true"] } });
      await tasks.createTask({
        taskId: c,
        dependencies: [b],
        requires: "all-resolved",
        payload: { command: ["true"] },
      });
      await tasks.resolveRun(a, 0, "worker-1", outcome("exception"));
      expect(await stateOf(b)).toBe("exception");
      expect(await stateOf(c)).toBe("pending");
    });

    it("never strands a task created while its dependency resolves", async () => {
      for (const state of ["completed", "failed"] as const) {
        const up = await runningTask("up");
        const downs = Array.from({ length: 8 }, () => uid("down"));
        await Promise.all([
          ...downs.map((taskId) =>
            tasks.createTask({ taskId, dependencies: [up], payload: { command: ["true"] } }),
          ),
          tasks.resolveRun(up, 0, "worker-1", outcome(state)),
        ]);
        for (const taskId of downs) {
          expect({ taskId, state: await stateOf(taskId) }).toEqual({
            taskId,
            state: state === "completed" ? "pending" : "exception",
          });
        }
      }
    });

    it("resolves a task created after its dependency failed at once under all-completed", async () => {
      const a = await runningTask("a");
      await tasks.resolveRun(a, 0, "worker-1", outcome("failed"));
      const b = uid("b");
      await tasks.createTask({ taskId: b, dependencies: [a], payload: { command: ["true"] } });
      const found = await view(b);
      expect(found.task.state).toBe("exception");
      expect(found.runs.map((r) => r.reason_resolved)).toEqual(["dependency-failed"]);
    });
  });

  describe("createTask", () => {
    it("succeeds without change when the same definition is submitted again", async () => {
      const taskId = uid("same");
      const definition = {
        taskId,
        name: "same task",
        payload: { command: ["sh", "-c", "echo $X"], env: { X: "1", A: "2" }, maxRunTime: 60 },
        dependencies: [remoteTaskUrl("up")],
        requires: "all-resolved",
        retries: 3,
      };
      expect(await tasks.createTask(definition)).toEqual({ taskId, created: true });
      const before = await view(taskId);
      // The default deadline differs between the two submissions: it is not part of identity.
      expect(await tasks.createTask(structuredClone(definition))).toEqual({
        taskId,
        created: false,
      });
      expect(await view(taskId)).toEqual(before);
    });

    it("creates a task once when the same definition is submitted twice at the same time", async () => {
      for (let i = 0; i < 3; i++) {
        const taskId = uid("twice");
        const definition = { taskId, payload: { command: ["true"] } };
        const results = await Promise.all([
          tasks.createTask(definition),
          tasks.createTask(structuredClone(definition)),
        ]);
        expect(results.map((r) => r.created).sort()).toEqual([false, true]);
        expect((await view(taskId)).runs).toHaveLength(1);
      }
    });

    it("counts a local dependency named both by id and by URL once", async () => {
      const up = await runningTask("up");
      const taskId = uid("down");
      const result = await tasks.createTask({
        taskId,
        dependencies: [urls.task(up)],
        inputs: [{ task: up, artifact: "public/x.txt" }],
        payload: { command: ["true"] },
      });
      expect(result.created).toBe(true);
      expect((await view(taskId)).dependencies.map((d) => [d.dependency, d.remote])).toEqual([
        [up, false],
      ]);
      await tasks.resolveRun(up, 0, "worker-1", outcome("completed"));
      expect(await stateOf(taskId)).toBe("pending");
    });

    it("refuses a different definition under an existing taskId with RequestConflict", async () => {
      const taskId = uid("conflict");
      await tasks.createTask({ taskId, payload: { command: ["true"] } });
      const before = await view(taskId);
      const counts = await rowCounts();
      const error = await tasks
        .createTask({ taskId, payload: { command: ["false"] } })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ApiError);
      expect((error as ApiError).code).toBe("RequestConflict");
      expect((error as ApiError).message).toContain(taskId);
      expect(await view(taskId)).toEqual(before);
      expect(await rowCounts()).toEqual(counts);
    });

    it.each([
      ["fails validation", () => ({ taskId: "bad id", payload: { command: [] } })],
      [
        "names a local dependency that does not exist",
        () => ({
          taskId: uid("orphan"),
          dependencies: [remoteTaskUrl("up"), uid("missing")],
          inputs: [{ task: remoteTaskUrl("up2"), artifact: "public/x" }],
          payload: { command: ["true"] },
        }),
      ],
      [
        "takes an input from a local task that does not exist",
        () => ({
          taskId: uid("orphan"),
          inputs: [{ task: uid("missing"), artifact: "public/x" }],
          payload: { command: ["true"] },
        }),
      ],
    ])("creates nothing when the definition %s", async (_why, definition) => {
      const counts = await rowCounts();
      const input = definition();
      await expect(tasks.createTask(input)).rejects.toMatchObject({ code: "InputError" });
      expect(await rowCounts()).toEqual(counts);
      expect(jobs.enqueued).toEqual([]);
    });

    it("reports every problem of an invalid definition in details, by field", async () => {
      const error = await tasks
        .createTask({ taskId: "bad id", payload: { command: [] }, retries: -1 })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ApiError);
      const { problems } = (error as ApiError).details as { problems: { field: string }[] };
      expect(problems.map((p) => p.field)).toEqual(
        expect.arrayContaining(["taskId", "payload.command", "retries"]),
      );
    });

    it("names an unknown local dependency in an InputError", async () => {
      const missing = uid("missing");
      const existing = await runningTask("exists");
      const error = await tasks
        .createTask({
          taskId: uid("t"),
          dependencies: [existing, missing],
          payload: { command: ["true"] },
        })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ApiError);
      expect((error as ApiError).code).toBe("InputError");
      expect((error as ApiError).details).toEqual({
        problems: [{ field: "dependencies", message: expect.stringContaining(missing) as string }],
      });
    });

    it("records inputs with their artifact URLs and makes their tasks dependencies", async () => {
      const up = await runningTask("producer");
      const remote = remoteTaskUrl("remote");
      const taskId = uid("consumer");
      await tasks.createTask({
        taskId,
        inputs: [
          { task: up, artifact: "public/a b.txt", path: "local.txt" },
          { task: remote, artifact: "public/app.tar.gz" },
        ],
        payload: { command: ["true"] },
      });
      const found = await view(taskId);
      expect(found.inputs.map((i) => [i.path, i.task_url, i.artifact_url]).sort()).toEqual(
        [
          ["local.txt", urls.task(up), urls.artifact(up, "public/a b.txt")],
          ["app.tar.gz", remote, `${remote}/artifacts/public/app.tar.gz`],
        ].sort(),
      );
      expect(found.dependencies.map((d) => [d.dependency, d.remote]).sort()).toEqual(
        [
          [up, false],
          [remote, true],
        ].sort(),
      );
      // A remote dependency not known to be resolved is asked of its cluster.
      expect(jobs.enqueued).toContainEqual({
        queue: QUEUES.dereference,
        jobId: remote,
        data: { url: remote },
        options: {},
      });
    });
  });

  describe("remote tasks", () => {
    function report(taskUrl: string, state: RemoteTaskReport["state"]): RemoteTaskReport {
      const name = "public/app.tar.gz";
      return {
        taskUrl,
        actorId: `${REMOTE_ORIGIN}/clusters/up`,
        state,
        resolvedAt: new Date().toISOString(),
        source: "activity",
        artifacts: [
          {
            artifactUrl: `${taskUrl}/artifacts/${name}`,
            taskUrl,
            actorId: `${REMOTE_ORIGIN}/clusters/up`,
            name,
            contentUrl: `${REMOTE_ORIGIN}/clusters/up/content/x/${name}`,
            sha256: createHash("sha256").update(taskUrl).digest("hex"),
            size: 123,
            mediaType: "application/gzip",
          },
        ],
      };
    }

    it("applies the same remote completion twice with one effect", async () => {
      const remote = remoteTaskUrl("build");
      const taskId = uid("waiting");
      await tasks.createTask({ taskId, dependencies: [remote], payload: { command: ["true"] } });
      expect(await stateOf(taskId)).toBe("unscheduled");

      await tasks.applyRemoteTask(report(remote, "completed"));
      const once = await view(taskId);
      expect(once.task.state).toBe("pending");
      expect(dispatched(taskId)).toEqual([`${taskId}/0`]);

      await tasks.applyRemoteTask(report(remote, "completed"));
      const twice = await view(taskId);
      expect(twice.runs).toEqual(once.runs);
      expect(twice.task.state).toBe("pending");
      expect(dispatched(taskId)).toEqual([`${taskId}/0`]);
      const remembered = await db()
        .selectFrom("remote_tasks")
        .select(["task_url", "state"])
        .where("task_url", "=", remote)
        .execute();
      expect(remembered).toEqual([{ task_url: remote, state: "completed" }]);
      const artifacts = await db()
        .selectFrom("remote_artifacts")
        .select(["sha256", "size"])
        .where("task_url", "=", remote)
        .execute();
      expect(artifacts.map((a) => [a.sha256, Number(a.size)])).toEqual([
        [report(remote, "completed").artifacts[0]!.sha256, 123],
      ]);
    });

    it("leaves a dependent waiting when a remote task is reported still running", async () => {
      const remote = remoteTaskUrl("build");
      const taskId = uid("waiting");
      await tasks.createTask({ taskId, dependencies: [remote], payload: { command: ["true"] } });
      await tasks.applyRemoteTask(report(remote, "running"));
      expect(await stateOf(taskId)).toBe("unscheduled");
    });

    it("unblocks a task created after its remote dependency was already known completed", async () => {
      const remote = remoteTaskUrl("early");
      await tasks.applyRemoteTask(report(remote, "completed"));
      jobs.enqueued.length = 0;
      const taskId = uid("late");
      await tasks.createTask({ taskId, dependencies: [remote], payload: { command: ["true"] } });
      const found = await view(taskId);
      expect(found.task.state).toBe("pending");
      expect(found.dependencies.map((d) => d.resolution)).toEqual(["completed"]);
      // Nothing to ask: the answer is already known.
      expect(jobs.enqueued.filter((e) => e.queue === QUEUES.dereference)).toEqual([]);
    });

    it("resolves a task created after its remote dependency was known failed at once", async () => {
      const remote = remoteTaskUrl("broken");
      await tasks.applyRemoteTask(report(remote, "failed"));
      const taskId = uid("late");
      await tasks.createTask({ taskId, dependencies: [remote], payload: { command: ["true"] } });
      expect((await view(taskId)).runs.map((r) => [r.state, r.reason_resolved])).toEqual([
        ["exception", "dependency-failed"],
      ]);
    });

    // The last join arrival and the last remote dependency, applied in two transactions that
    // overlap: whichever commits second must see the other and schedule the task. The first
    // is held open while the second runs; on PostgreSQL the second must wait for the task row.
    for (const first of ["join arrival", "dependency"] as const) {
      it(`schedules a joining task when its ${first} commits while the other condition is applied`, async () => {
        const publisher = await followed("pub");
        const remote = remoteTaskUrl("input");
        const taskId = uid("joining");
        await tasks.createTask({
          taskId,
          dependencies: [remote],
          join: { clusters: [publisher], artifact: "public/*", deadline: "PT10M" },
          payload: { command: ["true"] },
        });
        const arrival = publishedArtifact(publisher);
        if (first === "join arrival") {
          await overlapping(
            (held) => tasks.applyPublishedArtifact(arrival, held),
            () => tasks.applyRemoteTask(report(remote, "completed")),
          );
        } else {
          await overlapping(
            (held) => tasks.applyRemoteTask(report(remote, "completed"), held),
            () =>
              db()
                .transaction()
                .execute((trx) => tasks.applyPublishedArtifact(arrival, trx)),
          );
        }
        expect(await stateOf(taskId)).toBe("pending");
      });
    }

    // A join's deadline job and its last arrival, in two transactions that overlap: the join
    // settles once, as the first to lock its row decides. The arrival is held open while the
    // deadline job runs; on PostgreSQL the job must wait for the join's row and then find the
    // join complete, and neither fail the task scheduled by the arrival nor schedule it again.
    it("settles a join once when its deadline job runs while its last arrival commits", async () => {
      const publisher = await followed("pub");
      const taskId = uid("joining");
      await tasks.createTask({
        taskId,
        join: {
          clusters: [publisher],
          artifact: "public/*",
          deadline: "PT10M",
          atDeadline: "fail",
        },
        payload: { command: ["true"] },
      });
      // The deadline has passed by the time its job runs.
      await db()
        .updateTable("task_joins")
        .set({ deadline: new Date(Date.now() - 1000) })
        .where("task_id", "=", taskId)
        .execute();
      const arrival = publishedArtifact(publisher);
      const deadline = await overlapping(
        (held) => tasks.applyPublishedArtifact(arrival, held),
        () => tasks.closeJoin(taskId),
      );
      expect(deadline).toBe("nothing-to-do");
      const { task, runs, join } = await view(taskId);
      expect(task.state).toBe("pending");
      expect(runs.map((r) => [r.run_id, r.state])).toEqual([[0, "pending"]]);
      expect(join?.state).toBe("complete");
    });

    it("lists unresolved remote dependencies, optionally of one origin only", async () => {
      const here = remoteTaskUrl("here", "http://127.0.0.1:3");
      const longer = remoteTaskUrl("there", "http://127.0.0.1:31");
      for (const dep of [here, longer]) {
        await tasks.createTask({
          taskId: uid("w"),
          dependencies: [dep],
          payload: { command: ["true"] },
        });
      }
      const all = await tasks.unresolvedRemoteDependencies();
      expect(all).toEqual(expect.arrayContaining([here, longer]));
      const one = await tasks.unresolvedRemoteDependencies("http://127.0.0.1:3");
      expect(one).toContain(here);
      expect(one).not.toContain(longer);
      await tasks.applyRemoteTask(report(here, "completed"));
      expect(await tasks.unresolvedRemoteDependencies()).not.toContain(here);
    });
  });

  describe("priorities", () => {
    it("dispatches each run with its task's priority, highest as the queue's first level", async () => {
      const levels = ["highest", "very-high", "high", "medium", "low", "very-low", "lowest"];
      const ids: string[] = [];
      for (const priority of levels) {
        const taskId = uid(`prio-${priority}`);
        ids.push(taskId);
        await tasks.createTask({ taskId, priority, payload: { command: ["true"] } });
      }
      const given = ids.map(
        (taskId) => jobs.enqueued.find((e) => e.jobId === `${taskId}/0`)?.options.priority,
      );
      expect(given).toEqual([1, 2, 3, 4, 5, 6, 7]);
    });

    it("keeps the priority for retries and reruns, and when the queue is rebuilt", async () => {
      const taskId = await runningTask("prio-retry", { priority: "high", retries: 1 }, "w", 1);
      await sleep(20);
      await tasks.reapExpiredClaims();
      expect(jobs.enqueued.find((e) => e.jobId === `${taskId}/1`)?.options.priority).toBe(3);
      const recovered = await tasks.recoverEffects();
      expect(recovered.dispatch).toContainEqual({ taskId, runId: 1, priority: "high" });
      await tasks.claimRun(taskId, 1, "w", LEASE_MS);
      await tasks.resolveRun(taskId, 1, "w", outcome("completed"));
      await tasks.rerunTask(taskId);
      expect(jobs.enqueued.find((e) => e.jobId === `${taskId}/2`)?.options.priority).toBe(3);
    });
  });

  describe("breakpoint tasks", () => {
    /** build → gate (breakpoint) → deploy, with build running on worker-1. */
    async function gatedChain(label: string, gate: Record<string, unknown> = {}) {
      const build = await runningTask(`${label}-build`);
      const group = uid(`${label}-group`);
      const gateId = uid(`${label}-gate`);
      const deploy = uid(`${label}-deploy`);
      await tasks.createTask({ taskId: gateId, breakpoint: true, dependencies: [build], ...gate });
      await tasks.createTask({
        taskId: deploy,
        taskGroupId: group,
        dependencies: [gateId],
        payload: { command: ["true"] },
      });
      return { build, gate: gateId, deploy };
    }

    it("waits in running for a person once its dependencies allow, and is never dispatched", async () => {
      const { build, gate, deploy } = await gatedChain("bp-wait");
      expect(await stateOf(gate)).toBe("unscheduled");
      await tasks.resolveRun(build, 0, "worker-1", outcome("completed"));
      const found = await view(gate);
      expect(found.task.state).toBe("running");
      expect(found.runs.map((r) => [r.run_id, r.state, r.worker_id, r.taken_until])).toEqual([
        [0, "running", null, null],
      ]);
      expect(dispatched(gate)).toEqual([]);
      expect((await tasks.recoverEffects()).dispatch.map((d) => d.taskId)).not.toContain(gate);
      expect(await tasks.claimRun(gate, 0, "worker-1", LEASE_MS)).toBeUndefined();
      // A waiting breakpoint has no lease to expire.
      await tasks.reapExpiredClaims();
      expect(await stateOf(gate)).toBe("running");
      expect(await stateOf(deploy)).toBe("unscheduled");
    });

    it("lets its dependents run once resolved completed, with the note as the run's log", async () => {
      const { build, gate, deploy } = await gatedChain("bp-ok");
      await tasks.resolveRun(build, 0, "worker-1", outcome("completed"));
      const seq = await lastOutboxSeq();
      expect(
        await tasks.resolveBreakpoint(gate, { state: "completed", note: "approved by ops" }),
      ).toEqual({ state: "completed", runId: 0 });
      const found = await view(gate);
      expect(found.runs.map((r) => [r.state, r.reason_resolved, r.log])).toEqual([
        ["completed", "completed", "approved by ops\n"],
      ]);
      expect(await stateOf(deploy)).toBe("pending");
      expect(dispatched(deploy)).toEqual([`${deploy}/0`]);
      const written = await outboxAfter(seq);
      expect(written.map((w) => [w.activity.kind, taskOf(w.activity).id])).toEqual([
        ["TaskCompleted", urls.task(gate)],
      ]);
    });

    it("fails its all-completed dependents when resolved failed", async () => {
      const { build, gate, deploy } = await gatedChain("bp-no");
      await tasks.resolveRun(build, 0, "worker-1", outcome("completed"));
      await tasks.resolveBreakpoint(gate, { state: "failed" });
      expect(await stateOf(gate)).toBe("failed");
      const found = await view(deploy);
      expect(found.task.state).toBe("exception");
      expect(found.runs.at(-1)?.reason_resolved).toBe("dependency-failed");
    });

    it("refuses to resolve a task that is not a waiting breakpoint, and changes nothing", async () => {
      const { build, gate } = await gatedChain("bp-refuse");
      const conflict = { name: "ApiError", code: "RequestConflict" };
      // Still waiting for its dependency.
      await expect(tasks.resolveBreakpoint(gate, { state: "completed" })).rejects.toMatchObject(
        conflict,
      );
      expect(await stateOf(gate)).toBe("unscheduled");
      // Not a breakpoint task: a worker holds it.
      await expect(tasks.resolveBreakpoint(build, { state: "completed" })).rejects.toMatchObject(
        conflict,
      );
      expect(await stateOf(build)).toBe("running");
      await tasks.resolveRun(build, 0, "worker-1", outcome("completed"));
      await tasks.resolveBreakpoint(gate, { state: "completed" });
      // Already resolved.
      await expect(tasks.resolveBreakpoint(gate, { state: "failed" })).rejects.toMatchObject(
        conflict,
      );
      expect(await stateOf(gate)).toBe("completed");
      await expect(
        tasks.resolveBreakpoint(uid("missing"), { state: "completed" }),
      ).rejects.toMatchObject({ code: "ResourceNotFound" });
    });

    it("waits again after a rerun, and resolves exception when canceled or past its deadline", async () => {
      const { build, gate } = await gatedChain("bp-again", {
        deadline: new Date(Date.now() + 2000).toISOString(),
      });
      await tasks.resolveRun(build, 0, "worker-1", outcome("completed"));
      await tasks.resolveBreakpoint(gate, { state: "completed" });
      expect(await tasks.rerunTask(gate)).toEqual({ runId: 1 });
      expect(await stateOf(gate)).toBe("running");
      expect(dispatched(gate)).toEqual([]);
      await sleep(2100);
      await tasks.resolveDeadlines();
      const found = await view(gate);
      expect(found.task.state).toBe("exception");
      expect(found.runs.map((r) => [r.run_id, r.state, r.reason_resolved])).toEqual([
        [0, "completed", "completed"],
        [1, "exception", "deadline-exceeded"],
      ]);

      const other = await gatedChain("bp-cancel");
      await tasks.resolveRun(other.build, 0, "worker-1", outcome("completed"));
      expect(await tasks.cancelTask(other.gate)).toEqual({ state: "exception", changed: true });
      expect((await view(other.gate)).runs.at(-1)?.reason_resolved).toBe("canceled");
      expect(await stateOf(other.deploy)).toBe("exception");
    });
  });

  describe("task group resolution", () => {
    async function groupActivities(seq: number, taskGroupId: string) {
      return (await outboxAfter(seq, true)).flatMap((w) =>
        w.activity.kind === "TaskGroupResolved" &&
        w.activity.taskGroup.id === urls.taskGroup(taskGroupId)
          ? [w.activity.taskGroup]
          : [],
      );
    }

    async function groupOf(label: string, specs: Record<string, unknown>[]) {
      const taskGroupId = uid(label);
      const ids: string[] = [];
      for (const [i, spec] of specs.entries()) {
        const taskId = `${taskGroupId}-${i}`;
        ids.push(taskId);
        await tasks.createTask({ taskId, taskGroupId, payload: { command: ["true"] }, ...spec });
      }
      return { taskGroupId, ids };
    }

    it("announces a group once, when its last task resolves, with the tally", async () => {
      const { taskGroupId, ids } = await groupOf("grp", [{}, {}, {}]);
      const seq = await lastOutboxSeq();
      const [a, b, c] = ids as [string, string, string];
      for (const id of ids) await tasks.claimRun(id, 0, "w", LEASE_MS);
      await tasks.resolveRun(a, 0, "w", outcome("completed"));
      await tasks.resolveRun(b, 0, "w", outcome("failed"));
      expect(await groupActivities(seq, taskGroupId)).toEqual([]);
      expect((await tasks.getTaskGroupTally(taskGroupId))?.resolvedAt).toBeUndefined();
      await tasks.resolveRun(c, 0, "w", outcome("completed"));
      const announced = await groupActivities(seq, taskGroupId);
      expect(announced).toEqual([
        {
          id: urls.taskGroup(taskGroupId),
          attributedTo: urls.actor,
          taskCount: 3,
          completedCount: 2,
          failedCount: 1,
          exceptionCount: 0,
          resolved: expect.any(String) as string,
        },
      ]);
      const tally = await tasks.getTaskGroupTally(taskGroupId);
      expect(tally?.resolvedAt?.toISOString()).toBe(announced[0]?.resolved);
      // Something else happening later (a cancel of a resolved task) announces nothing.
      await tasks.cancelTask(a);
      expect(await groupActivities(seq, taskGroupId)).toHaveLength(1);
    });

    it("announces a group resolved by a cascade in the same transaction once", async () => {
      const root = uid("grp-cascade-root");
      const taskGroupId = uid("grp-cascade");
      await tasks.createTask({ taskId: root, taskGroupId, payload: { command: ["true"] } });
      let previous = root;
      for (let i = 0; i < 5; i++) {
        const taskId = `${taskGroupId}-${i}`;
        await tasks.createTask({
          taskId,
          taskGroupId,
          dependencies: [previous],
          payload: { command: ["true"] },
        });
        previous = taskId;
      }
      const seq = await lastOutboxSeq();
      await tasks.claimRun(root, 0, "w", LEASE_MS);
      await tasks.resolveRun(root, 0, "w", outcome("failed"));
      expect(await groupActivities(seq, taskGroupId)).toMatchObject([
        { taskCount: 6, completedCount: 0, failedCount: 1, exceptionCount: 5 },
      ]);
    });

    it("reopens a group on a rerun and announces it again when it resolves again", async () => {
      const { taskGroupId, ids } = await groupOf("grp-rerun", [{}]);
      const [only] = ids as [string];
      const seq = await lastOutboxSeq();
      await tasks.claimRun(only, 0, "w", LEASE_MS);
      await tasks.resolveRun(only, 0, "w", outcome("failed"));
      await tasks.rerunTask(only);
      expect((await tasks.getTaskGroupTally(taskGroupId))?.resolvedAt).toBeUndefined();
      await tasks.claimRun(only, 1, "w", LEASE_MS);
      await tasks.resolveRun(only, 1, "w", outcome("completed"));
      expect(await groupActivities(seq, taskGroupId)).toMatchObject([
        { completedCount: 0, failedCount: 1 },
        { completedCount: 1, failedCount: 0 },
      ]);
      const row = await db()
        .selectFrom("task_groups")
        .select("resolutions")
        .where("task_group_id", "=", taskGroupId)
        .executeTakeFirstOrThrow();
      expect(row.resolutions).toBe(2);
    });

    it("is not held open by inactive tasks, and is reopened by an activation", async () => {
      const { taskGroupId, ids } = await groupOf("grp-inactive", [{}, { inactive: true }]);
      const [active, backfill] = ids as [string, string];
      const seq = await lastOutboxSeq();
      await tasks.claimRun(active, 0, "w", LEASE_MS);
      await tasks.resolveRun(active, 0, "w", outcome("completed"));
      expect(await groupActivities(seq, taskGroupId)).toMatchObject([
        { taskCount: 2, completedCount: 1 },
      ]);
      await tasks.activateTask(backfill);
      expect((await tasks.getTaskGroupTally(taskGroupId))?.resolvedAt).toBeUndefined();
      await tasks.claimRun(backfill, 0, "w", LEASE_MS);
      await tasks.resolveRun(backfill, 0, "w", outcome("completed"));
      expect(await groupActivities(seq, taskGroupId)).toMatchObject([
        { taskCount: 2, completedCount: 1 },
        { taskCount: 2, completedCount: 2 },
      ]);
    });

    // The last active task of a group resolves while another task of it runs again (a rerun),
    // joins it (an activation) or is created in it, in two transactions that overlap: the
    // group must end open, and announce again once that task resolved. The resolving
    // transaction is held open while the other runs; on PostgreSQL the other must wait for the
    // group's row.
    for (const [rejoin, title] of [
      ["rerun", "a rerun"],
      ["activation", "an activation"],
      ["creation", "a task's creation"],
    ] as const) {
      it(`stays open when ${title} commits while the group's last task resolves`, async () => {
        const remote = remoteTaskUrl("grp-input");
        const { taskGroupId, ids } = await groupOf(`grp-${rejoin}`, [
          ...(rejoin === "rerun" ? [{}] : rejoin === "activation" ? [{ inactive: true }] : []),
          { dependencies: [remote] },
        ]);
        const rejoining = rejoin === "creation" ? `${taskGroupId}-new` : ids[0]!;
        const last = ids.at(-1)!;
        if (rejoin === "rerun") {
          await tasks.claimRun(rejoining, 0, "w", LEASE_MS);
          await tasks.resolveRun(rejoining, 0, "w", outcome("completed"));
        }
        const seq = await lastOutboxSeq();
        const failed: RemoteTaskReport = {
          taskUrl: remote,
          actorId: `${REMOTE_ORIGIN}/clusters/up`,
          state: "failed",
          resolvedAt: new Date().toISOString(),
          source: "activity",
          artifacts: [],
        };
        await overlapping<unknown>(
          // The last active task fails with its dependency, and the group resolves.
          (held) => tasks.applyRemoteTask(failed, held),
          () =>
            rejoin === "rerun"
              ? tasks.rerunTask(rejoining)
              : rejoin === "activation"
                ? tasks.activateTask(rejoining)
                : tasks.createTask({
                    taskId: rejoining,
                    taskGroupId,
                    payload: { command: ["true"] },
                  }),
        );
        expect(await stateOf(last)).toBe("exception");
        expect(await stateOf(rejoining)).toBe("pending");
        expect((await tasks.getTaskGroupTally(taskGroupId))?.resolvedAt).toBeUndefined();
        const runId = rejoin === "rerun" ? 1 : 0;
        await tasks.claimRun(rejoining, runId, "w", LEASE_MS);
        await tasks.resolveRun(rejoining, runId, "w", outcome("completed"));
        const announced = await groupActivities(seq, taskGroupId);
        expect(announced).toHaveLength(2);
        expect(announced[1]).toMatchObject({ taskCount: 2, completedCount: 1, exceptionCount: 1 });
      });
    }

    it("announces exactly once when the last two tasks resolve at the same moment", async () => {
      for (let round = 0; round < 5; round++) {
        const { taskGroupId, ids } = await groupOf(`grp-race-${round}`, [{}, {}]);
        const seq = await lastOutboxSeq();
        for (const id of ids) await tasks.claimRun(id, 0, "w", LEASE_MS);
        await Promise.all(ids.map((id) => tasks.resolveRun(id, 0, "w", outcome("completed"))));
        expect(await groupActivities(seq, taskGroupId)).toHaveLength(1);
      }
    });

    it("tells onTaskGroupResolved after commit", async () => {
      const told: string[] = [];
      const listening = createTaskService({
        db: database.db,
        jobs,
        urls,
        onTaskGroupResolved: (id) => told.push(id),
      });
      const { taskGroupId, ids } = await groupOf("grp-told", [{}]);
      await listening.claimRun(ids[0]!, 0, "w", LEASE_MS);
      expect(told).toEqual([]);
      await listening.resolveRun(ids[0]!, 0, "w", outcome("completed"));
      expect(told).toEqual([taskGroupId]);
    });
  });

  describe("recoverEffects", () => {
    it("finds pending runs, unpublished outbox rows and unresolved remote dependencies", async () => {
      const pending = uid("pending");
      await tasks.createTask({ taskId: pending, payload: { command: ["true"] } });
      const resolved = await runningTask("resolved");
      const seq = await lastOutboxSeq();
      await tasks.resolveRun(resolved, 0, "worker-1", outcome("completed"));
      const written = await outboxAfter(seq);
      expect(written).toHaveLength(1);
      const remote = remoteTaskUrl("awaited");
      await tasks.createTask({
        taskId: uid("awaiting"),
        dependencies: [remote],
        payload: { command: ["true"] },
      });

      const effects = await tasks.recoverEffects();
      expect(effects.dispatch).toContainEqual({ taskId: pending, runId: 0, priority: "lowest" });
      expect(effects.dispatch.map((d) => d.taskId)).not.toContain(resolved);
      expect(effects.publish).toContain(written[0]!.row.activity_id);
      expect(effects.dereference).toContain(remote);

      // Once handed over, an outbox row is no longer work to recover.
      await db()
        .updateTable("outbox")
        .set({ fanned_out_at: new Date() })
        .where("activity_id", "=", written[0]!.row.activity_id)
        .execute();
      expect((await tasks.recoverEffects()).publish).not.toContain(written[0]!.row.activity_id);
    });

    it("hands recovered work to the queue with the ids the service uses", async () => {
      const pending = uid("pending");
      await tasks.createTask({ taskId: pending, payload: { command: ["true"] } });
      jobs.enqueued.length = 0;
      await tasks.runEffects(await tasks.recoverEffects());
      expect(jobs.enqueued).toContainEqual({
        queue: QUEUES.tasks,
        jobId: `${pending}/0`,
        data: { taskId: pending, runId: 0 },
        options: { priority: 7 },
      });
    });
  });

  describe("outbox", () => {
    it("writes ArtifactPublished per artifact then TaskCompleted, and dispatches each to publishing", async () => {
      const taskId = await runningTask("publisher");
      const files = [artifact("public/one.txt", "one"), artifact("public/two.txt", "two!")];
      const seq = await lastOutboxSeq();
      await tasks.resolveRun(taskId, 0, "worker-1", outcome("completed", { artifacts: files }));
      const written = await outboxAfter(seq);
      expect(written.map((w) => w.activity.kind)).toEqual([
        "ArtifactPublished",
        "ArtifactPublished",
        "TaskCompleted",
      ]);
      const published = written.flatMap((w) =>
        w.activity.kind === "ArtifactPublished" ? [w.activity.artifact] : [],
      );
      expect(published.map((a) => [a.name, a.sha256, a.size, a.id, a.task]).sort()).toEqual(
        files
          .map((f) => [
            f.name,
            f.sha256,
            f.content.byteLength,
            urls.artifact(taskId, f.name),
            urls.task(taskId),
          ])
          .sort(),
      );
      const completed = written[2]!.activity;
      expect(completed.actor).toBe(urls.actor);
      expect(completed.to).toContain(urls.followers);
      expect(taskOf(completed)).toMatchObject({
        id: urls.task(taskId),
        taskState: "completed",
        runId: 0,
      });
      expect(
        taskOf(completed)
          .artifacts.map((a) => a.sha256)
          .sort(),
      ).toEqual(files.map((f) => f.sha256).sort());
      for (const w of written) {
        expect(w.activity.id).toBe(w.row.activity_id);
        expect(w.row.fanned_out_at).toBeNull();
      }
      // The task was its own group's only task: the group resolved with it, announced last.
      const all = await outboxAfter(seq, true);
      expect(all.map((w) => w.activity.kind)).toEqual([
        "ArtifactPublished",
        "ArtifactPublished",
        "TaskCompleted",
        "TaskGroupResolved",
      ]);
      expect(jobs.enqueued.filter((e) => e.queue === QUEUES.publish).map((e) => e.jobId)).toEqual(
        all.map((w) => w.row.activity_id),
      );
    });

    it.each(["failed", "exception"] as const)(
      "writes only TaskFailed with the reason when a run resolves %s",
      async (state) => {
        const taskId = await runningTask(state);
        const seq = await lastOutboxSeq();
        const reason = state === "failed" ? "failed" : "input-digest-mismatch";
        await tasks.resolveRun(taskId, 0, "worker-1", outcome(state, { reason }));
        const written = await outboxAfter(seq);
        expect(written.map((w) => w.activity.kind)).toEqual(["TaskFailed"]);
        expect(taskOf(written[0]!.activity)).toMatchObject({
          id: urls.task(taskId),
          taskState: state,
          reasonResolved: reason,
        });
      },
    );
  });

  describe("joins with since", () => {
    const DAY = 24 * 60 * 60_000;

    /**
     * Applies `publisher`'s ArtifactPublished as the inbox does; with `receivedAt`, the record
     * is then dated back to that moment, as if it had arrived then.
     */
    async function published(
      publisher: string,
      name: string,
      tags: Record<string, string> = {},
      receivedAt?: Date,
    ): Promise<string> {
      const taskUrl = `${publisher}/tasks/${uid("data")}`;
      const artifactUrl = `${taskUrl}/artifacts/${name}`;
      const effects = await db()
        .transaction()
        .execute((trx) =>
          tasks.applyPublishedArtifact(
            {
              artifactUrl,
              taskUrl,
              actorId: publisher,
              name,
              contentUrl: `${publisher}/content/${uid("c")}/${name}`,
              sha256: "0".repeat(64),
              size: 1,
              mediaType: "text/csv",
              ...(Object.keys(tags).length > 0 ? { tags } : {}),
            },
            trx,
          ),
        );
      await tasks.runEffects(effects);
      if (receivedAt != null) {
        await db()
          .updateTable("remote_artifacts")
          .set({ received_at: receivedAt, updated_at: receivedAt })
          .where("artifact_url", "=", artifactUrl)
          .execute();
      }
      return artifactUrl;
    }

    function joinTimers(taskId: string): string[] {
      return jobs.enqueued
        .filter((e) => e.queue === JOIN_QUEUE && e.jobId.startsWith(`${taskId}/`))
        .map((e) => e.jobId);
    }

    it("counts matching artifacts recorded before creation, and runs at once when every cluster delivered", async () => {
      const [eu, us] = [await followed("eu"), await followed("us")];
      const fromEu = await published(eu, "public/sales.csv", { period: "2026-11" });
      const fromUs = await published(us, "public/sales.csv", { period: "2026-11", more: "x" });
      const taskId = uid("since-all");
      const before = Date.now();
      await tasks.createTask({
        taskId,
        join: {
          clusters: [eu, us],
          artifact: "public/*.csv",
          tags: { period: "2026-11" },
          deadline: "PT1H",
          since: "P7D",
        },
        payload: { command: ["true"] },
      });
      const shown = await view(taskId);
      expect(shown.task.state).toBe("pending");
      expect(dispatched(taskId)).toEqual([`${taskId}/0`]);
      expect(joinTimers(taskId)).toEqual([]);
      expect(shown.join).toMatchObject({
        state: "complete",
        missing: [],
        clusters: [
          { cluster: eu, arrived: true, artifactUrl: fromEu, path: "join/0/public/sales.csv" },
          { cluster: us, arrived: true, artifactUrl: fromUs, path: "join/1/public/sales.csv" },
        ],
      });
      const since = Date.parse(shown.join?.since ?? "");
      expect(since).toBeGreaterThanOrEqual(before - 7 * DAY);
      expect(since).toBeLessThanOrEqual(Date.now() - 7 * DAY);
      expect(shown.inputs.map((i) => [i.path, i.artifact_url]).sort()).toEqual([
        ["join/0/public/sales.csv", fromEu],
        ["join/1/public/sales.csv", fromUs],
      ]);
    });

    it("leaves out artifacts recorded before since or not matching, and waits for the rest", async () => {
      const [eu, us] = [await followed("eu"), await followed("us")];
      const fromEu = await published(eu, "public/sales.csv", { period: "2026-11" });
      await published(
        us,
        "public/sales.csv",
        { period: "2026-11" },
        new Date(Date.now() - 8 * DAY),
      );
      await published(us, "public/sales.txt", { period: "2026-11" });
      await published(us, "public/sales.csv", { period: "2026-10" });
      await published(us, "public/sales.csv");
      const taskId = uid("since-some");
      await tasks.createTask({
        taskId,
        join: {
          clusters: [eu, us],
          artifact: "public/*.csv",
          tags: { period: "2026-11" },
          deadline: "PT1H",
          since: "P7D",
        },
        payload: { command: ["true"] },
      });
      expect(await stateOf(taskId)).toBe("unscheduled");
      expect((await view(taskId)).join).toMatchObject({
        state: "waiting",
        clusters: [
          { cluster: eu, arrived: true, artifactUrl: fromEu },
          { cluster: us, arrived: false, artifactUrl: null },
        ],
        missing: [us],
      });
      expect(joinTimers(taskId)).toHaveLength(1);
      // A later arrival counts as without since, and completes the join.
      const fromUs = await published(us, "public/sales.csv", { period: "2026-11" });
      expect(await stateOf(taskId)).toBe("pending");
      expect((await view(taskId)).join?.clusters[1]).toMatchObject({ artifactUrl: fromUs });
    });

    it("counts nothing recorded before creation without since", async () => {
      const eu = await followed("eu");
      await published(eu, "public/sales.csv", { period: "2026-11" });
      const taskId = uid("no-since");
      await tasks.createTask({
        taskId,
        join: { clusters: [eu], artifact: "public/*.csv", deadline: "PT1H" },
        payload: { command: ["true"] },
      });
      expect(await stateOf(taskId)).toBe("unscheduled");
      const join = (await view(taskId)).join;
      expect(join).toMatchObject({ state: "waiting", missing: [eu] });
      expect(join).not.toHaveProperty("since");
      expect((await view(taskId)).inputs).toEqual([]);
    });

    it("takes each cluster's earliest matching artifact, counting one recorded exactly at since", async () => {
      const eu = await followed("eu");
      const now = Date.now();
      const at = new Date(now - 3 * 60 * 60_000);
      await published(eu, "public/a.csv", {}, new Date(now - 2 * DAY));
      await published(eu, "public/c.csv", {}, new Date(now - 60 * 60_000));
      const earliest = await published(eu, "public/b.csv", {}, at);
      await published(eu, "public/d.csv", {}, new Date(now - 2 * 60 * 60_000));
      const taskId = uid("since-earliest");
      await tasks.createTask({
        taskId,
        join: { clusters: [eu], artifact: "public/*", deadline: "PT1H", since: at.toISOString() },
        payload: { command: ["true"] },
      });
      expect((await view(taskId)).join).toMatchObject({
        state: "complete",
        since: at.toISOString(),
        clusters: [{ artifactUrl: earliest, path: "join/0/public/b.csv" }],
      });
      expect(await stateOf(taskId)).toBe("pending");
    });

    it("keeps when an artifact was first recorded when it is recorded again", async () => {
      const eu = await followed("eu");
      const first = new Date(Date.now() - DAY);
      const url = await published(eu, "public/x.csv", { period: "1" }, first);
      const publisher = url.slice(0, url.indexOf("/tasks/"));
      await db()
        .transaction()
        .execute((trx) =>
          tasks.applyPublishedArtifact(
            {
              artifactUrl: url,
              taskUrl: url.slice(0, url.indexOf("/artifacts/")),
              actorId: publisher,
              name: "public/x.csv",
              contentUrl: `${publisher}/content/again/public/x.csv`,
              sha256: "1".repeat(64),
              size: 2,
              mediaType: "text/csv",
              tags: { period: "2" },
            },
            trx,
          ),
        );
      const row = await db()
        .selectFrom("remote_artifacts")
        .select(["received_at", "updated_at", "tags", "sha256"])
        .where("artifact_url", "=", url)
        .executeTakeFirstOrThrow();
      expect(new Date(row.received_at).getTime()).toBe(first.getTime());
      expect(new Date(row.updated_at).getTime()).toBeGreaterThan(first.getTime());
      expect(row).toMatchObject({ tags: { period: "2" }, sha256: "1".repeat(64) });
    });

    it("completes a join with since in a task graph at creation", async () => {
      const eu = await followed("eu");
      const fromEu = await published(eu, "public/sales.csv", { period: "2026-11" });
      const taskGroupId = uid("since-group");
      const taskId = uid("since-in-graph");
      await tasks.createTaskGroup({
        taskGroupId,
        tasks: [
          {
            taskId,
            payload: { command: ["true"] },
            join: {
              clusters: [eu],
              tags: { period: "2026-11" },
              deadline: "PT1H",
              since: "PT1H",
            },
          },
        ],
      });
      expect(await stateOf(taskId)).toBe("pending");
      expect((await view(taskId)).join?.clusters[0]?.artifactUrl).toBe(fromEu);
      expect(joinTimers(taskId)).toEqual([]);
    });

    // An artifact recorded while a join with since is being created: the creation and the
    // arrival overlap, the first held open while the second runs. Whichever commits second must
    // count the artifact; on PostgreSQL the second waits for the cluster's following row.
    for (const first of ["arrival", "creation"] as const) {
      it(`counts an artifact whose ${first} commits while the other is applied`, async () => {
        const eu = await followed("eu");
        const arrival = publishedArtifact(eu, "public/sales.csv");
        const taskId = uid("since-race");
        const graph = {
          taskGroupId: uid("since-race-group"),
          tasks: [
            {
              taskId,
              payload: { command: ["true"] },
              join: { clusters: [eu], artifact: "public/*", deadline: "PT1H", since: "P1D" },
            },
          ],
        };
        if (first === "arrival") {
          await overlapping(
            (held) => tasks.applyPublishedArtifact(arrival, held),
            () => tasks.createTaskGroup(graph),
          );
        } else {
          await overlapping(
            (held) => tasks.createTaskGroupInTransaction(held, graph),
            () =>
              db()
                .transaction()
                .execute((trx) => tasks.applyPublishedArtifact(arrival, trx)),
          );
        }
        expect((await view(taskId)).join).toMatchObject({
          state: "complete",
          clusters: [{ artifactUrl: arrival.artifactUrl }],
        });
        expect(await stateOf(taskId)).toBe("pending");
      });
    }

    it("refuses a since that does not parse or lies in the future, and creates nothing", async () => {
      const eu = await followed("eu");
      await published(eu, "public/sales.csv");
      for (const since of ["P1W", new Date(Date.now() + 60_000).toISOString()]) {
        const counts = await rowCounts();
        const taskId = uid("bad-since");
        const error = await tasks
          .createTask({
            taskId,
            join: { clusters: [eu], artifact: "public/*", deadline: "PT1H", since },
            payload: { command: ["true"] },
          })
          .then(
            () => undefined,
            (e: unknown) => e,
          );
        expect(error).toBeInstanceOf(ApiError);
        expect((error as ApiError).code).toBe("InputError");
        expect((error as ApiError).details).toMatchObject({
          problems: [{ field: "join.since" }],
        });
        expect(await rowCounts()).toEqual(counts);
        expect(await tasks.getTask(taskId)).toBeUndefined();
      }
    });
  });
});
