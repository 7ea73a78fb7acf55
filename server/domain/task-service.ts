/**
 * Tasks, their runs and dependencies: the state machine of one cluster.
 *
 * Every state change happens in one database transaction together with what it causes:
 * dependents scheduled or resolved, activities written to the outbox. Work for queues
 * (dispatch a run, publish an activity, dereference a remote task) is returned as
 * {@link Effects} and handed to the queue after commit; if the process dies in between, the
 * reconciler finds the same work again in the database (pending runs, unpublished outbox
 * rows, unresolved remote dependencies), so nothing is lost.
 * @module
 */
import { randomUUID } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import { sql, type Kysely, type Transaction, type Updateable } from "kysely";
import { newSlugId } from "../../protocol/index.ts";
import type { ClusterUrls } from "../federation/cluster-urls.ts";
import type { JobQueue } from "../queue/job-queue.ts";
import {
  TASK_PRIORITIES,
  type DatabaseSchema,
  type RunsTable,
  type TaskPriority,
  type TasksTable,
} from "../store/schema.ts";
import { ApiError } from "./errors.ts";
import {
  insertJoin,
  JOIN_QUEUE,
  joinProgress,
  joinTimerJobId,
  recordJoinArrival,
  unfollowedClusters,
  unfollowedMessage,
  waitingJoinTimers,
  type JoinTimer,
} from "./task-joins.ts";
import {
  newTaskRow,
  storedDefinition,
  validateTaskDefinition,
  type TaskDefinition,
} from "./task-definition.ts";
import {
  buildTaskActivities,
  buildTaskGroupActivity,
  type OutboxActivity,
  type TaskGroupTally,
} from "./task-documents.ts";
import { consumedInputs } from "./task-provenance.ts";
import {
  checkTaskGraph,
  openTaskGroup,
  TaskGroupRaceError,
  writeTaskGroup,
  type CreateTaskGroupResult,
} from "./task-graph.ts";

type Db = Kysely<DatabaseSchema>;
type Trx = Transaction<DatabaseSchema>;

/** A task's state (Taskcluster's states). */
export type TaskState = TasksTable["state"];
/** A resolved state. */
export type ResolvedState = "completed" | "failed" | "exception";

/** Queue work caused by a committed change. */
export interface Effects {
  readonly dispatch: { taskId: string; runId: number; priority: TaskPriority }[];
  readonly publish: string[];
  readonly dereference: string[];
  /** Task groups whose resolution was announced (for the `task-group-resolved` event). */
  readonly groupsResolved: string[];
  /** Tasks resolved in the transaction; their groups are checked just before it commits. */
  readonly resolved: string[];
  /**
   * Groups a task rejoined in the transaction (a rerun, an activation): reopened just before
   * it commits, if they had resolved.
   */
  readonly rejoined: string[];
  /** Join deadlines to set (`server/domain/task-joins.ts`). */
  readonly joinTimers: JoinTimer[];
}

/** Effects of a transaction that caused no queue work. */
export function emptyEffects(): Effects {
  return {
    dispatch: [],
    publish: [],
    dereference: [],
    groupsResolved: [],
    resolved: [],
    rejoined: [],
    joinTimers: [],
  };
}

/** Adds the queue work of `from` to `into` (both caused by one transaction). */
export function mergeEffects(into: Effects, from: Effects): Effects {
  into.dispatch.push(...from.dispatch);
  into.publish.push(...from.publish);
  into.dereference.push(...from.dereference);
  into.groupsResolved.push(...from.groupsResolved);
  into.resolved.push(...from.resolved);
  into.rejoined.push(...from.rejoined);
  into.joinTimers.push(...from.joinTimers);
  return into;
}

/** The queue priority of a task priority: `highest` is handed out first. */
export function jobPriority(priority: TaskPriority): number {
  return TASK_PRIORITIES.indexOf(priority) + 1;
}

/** Queue names used by the cluster. */
export const QUEUES = {
  tasks: "tasks",
  publish: "publish",
  dereference: "dereference",
} as const;

/** What a remote cluster says (signed activity) or serves (dereference) about one of its tasks. */
export interface RemoteTaskReport {
  readonly taskUrl: string;
  readonly actorId: string;
  readonly state: TaskState;
  readonly resolvedAt: string | undefined;
  readonly artifacts: readonly RemoteArtifactReport[];
  readonly source: "activity" | "dereference";
}

/** A remote artifact's metadata as its cluster published it. */
export interface RemoteArtifactReport {
  readonly artifactUrl: string;
  readonly taskUrl: string;
  readonly actorId: string;
  readonly name: string;
  readonly contentUrl: string;
  readonly sha256: string;
  readonly size: number;
  readonly mediaType: string;
  /** Its task's tags, as an `ArtifactPublished` carries them (since v1.3). */
  readonly tags?: Readonly<Record<string, string>>;
}

/** A file a run produced. */
export interface NewArtifact {
  readonly name: string;
  readonly mediaType: string;
  readonly content: Uint8Array;
  readonly sha256: string;
}

/** How a run ended. */
export interface RunOutcome {
  readonly state: ResolvedState;
  readonly reason: string;
  readonly exitCode: number | null;
  readonly log: string;
  readonly artifacts: readonly NewArtifact[];
}

/** A run claimed by a worker, with what it needs to run. */
export interface ClaimedRun {
  readonly taskId: string;
  readonly runId: number;
  readonly definition: TaskDefinition;
  readonly takenUntil: Date;
}

/** Result of {@link TaskService.createTask}. */
export interface CreateTaskResult {
  readonly taskId: string;
  /** False when the same definition already existed (an idempotent repeat). */
  readonly created: boolean;
}

/** Options for {@link createTaskService}. */
export interface TaskServiceOptions {
  readonly db: Db;
  readonly jobs: JobQueue;
  readonly urls: ClusterUrls;
  /** Artifacts are kept this long after their task's creation. @defaultValue 1 year */
  readonly artifactTtlMs?: number;
  /** Told after commit that a task group resolved (every active task of it has). */
  readonly onTaskGroupResolved?: (taskGroupId: string) => void;
}

/** The task state machine of one cluster. */
export type TaskService = ReturnType<typeof createTaskService>;

const RESOLVED: readonly string[] = ["completed", "failed", "exception"];

/** Creates the task service. */
export function createTaskService(options: TaskServiceOptions) {
  const { db, jobs, urls } = options;
  const artifactTtlMs = options.artifactTtlMs ?? 365 * 24 * 3600_000;

  async function runEffects(effects: Effects): Promise<void> {
    for (const { taskId, runId, priority } of effects.dispatch) {
      await jobs.enqueue(
        QUEUES.tasks,
        `${taskId}/${runId}`,
        { taskId, runId },
        { priority: jobPriority(priority) },
      );
    }
    for (const activityId of effects.publish) {
      await jobs.enqueue(QUEUES.publish, activityId, { activityId });
    }
    for (const url of effects.dereference) {
      await jobs.enqueue(QUEUES.dereference, url, { url });
    }
    for (const timer of effects.joinTimers) {
      await jobs.enqueue(
        JOIN_QUEUE,
        joinTimerJobId(timer),
        { taskId: timer.taskId },
        { delayMs: Math.max(0, timer.dueAt.getTime() - Date.now()), attempts: 10 },
      );
    }
    for (const taskGroupId of effects.groupsResolved) options.onTaskGroupResolved?.(taskGroupId);
  }

  async function inTransaction<T>(fn: (trx: Trx, effects: Effects) => Promise<T>): Promise<T> {
    const effects = emptyEffects();
    const result = await db.transaction().execute(async (trx) => {
      const value = await fn(trx, effects);
      await settleGroups(trx, effects);
      return value;
    });
    await runEffects(effects);
    return result;
  }

  /** Writes activities to the outbox, to be handed to delivery after commit. */
  async function writeOutbox(
    trx: Trx,
    effects: Effects,
    activities: readonly OutboxActivity[],
    published: Date,
  ): Promise<void> {
    for (const chunk of chunks(activities)) {
      await trx
        .insertInto("outbox")
        .values(
          chunk.map((activity) => ({
            activity_id: activity.id,
            types: JSON.stringify(activity.type),
            activity: JSON.stringify(activity),
            published_at: published,
            fanned_out_at: null,
          })),
        )
        .execute();
      effects.publish.push(...chunk.map((a) => a.id));
    }
  }

  /** Counts the tasks of each group by state. */
  async function tallyGroups(
    q: Db | Trx,
    taskGroupIds: readonly string[],
  ): Promise<Map<string, Omit<TaskGroupTally, "resolvedAt">>> {
    const tallies = new Map<string, Omit<TaskGroupTally, "resolvedAt">>();
    for (const ids of chunks(taskGroupIds)) {
      const rows = await q
        .selectFrom("tasks")
        .select(["task_group_id", "state", sql<number>`count(*)::int`.as("n")])
        .where("task_group_id", "in", ids)
        .groupBy(["task_group_id", "state"])
        .execute();
      for (const id of ids) {
        const of = (state: TaskState) =>
          Number(rows.find((r) => r.task_group_id === id && r.state === state)?.n ?? 0);
        const taskCount = rows
          .filter((r) => r.task_group_id === id)
          .reduce((sum, r) => sum + Number(r.n), 0);
        if (taskCount === 0) continue;
        tallies.set(id, {
          taskGroupId: id,
          taskCount,
          completedCount: of("completed"),
          failedCount: of("failed"),
          exceptionCount: of("exception"),
        });
      }
    }
    return tallies;
  }

  /**
   * Just before a transaction commits: reopens the resolved groups a task rejoined (rerun,
   * activation), and announces the groups of the tasks resolved in it that now have no
   * active task left unresolved.
   *
   * Every such group's row is locked first, whatever its state, and what its tasks are doing
   * is read after that, in a later statement. Any two transactions that change whether a
   * group is done (resolving its last tasks, a rerun or an activation in it, a task created
   * in it: see `openTaskGroup`) thereby take turns on that row, and the second sees the
   * first's commit: two that resolve its last two tasks announce it once, and a rerun or an
   * activation that overlaps the resolution of the last other task either waits and reopens
   * the announced group, or makes the resolution wait and see a task still busy. Were the
   * reopening done only when the group had resolved on the rejoining transaction's snapshot,
   * it would not wait for the resolution, and the group would stay resolved with a task
   * running again, whose next resolution no one announces.
   *
   * Lock order: a transaction locks task rows (and join rows) while it works, and group
   * rows only here, at its end, in task-group-id order; so no group row is held while a task
   * row is waited for. (A task being created locks its group before its own row, which no
   * one else can see yet.) A task's row comes before its runs' rows, on every path: a cancel
   * or a deadline locks the task and then closes its run, and a worker's claim, resolution
   * or hand-back and the reaper of expired claims lock the task ({@link lockTaskOfRun})
   * before they touch the run.
   */
  async function settleGroups(trx: Trx, effects: Effects): Promise<void> {
    const taskIds = [...new Set(effects.resolved.splice(0))];
    const rejoined = new Set(effects.rejoined.splice(0));
    if (taskIds.length === 0 && rejoined.size === 0) return;
    const ofResolved = new Set<string>();
    for (const ids of chunks(taskIds)) {
      const rows = await trx
        .selectFrom("tasks")
        .select("task_group_id")
        .distinct()
        .where("task_id", "in", ids)
        .execute();
      for (const row of rows) ofResolved.add(row.task_group_id);
    }
    for (const ids of chunks([...new Set([...rejoined, ...ofResolved])].sort())) {
      const locked = await trx
        .selectFrom("task_groups")
        .select(["task_group_id", "resolved_at"])
        .where("task_group_id", "in", ids)
        .orderBy("task_group_id")
        .forUpdate()
        .execute();
      const reopen = new Set(
        locked
          .filter((g) => g.resolved_at != null && rejoined.has(g.task_group_id))
          .map((g) => g.task_group_id),
      );
      if (reopen.size > 0) {
        await trx
          .updateTable("task_groups")
          .set({ resolved_at: null })
          .where("task_group_id", "in", [...reopen])
          .execute();
      }
      const openIds = locked
        .filter((g) => g.resolved_at == null || reopen.has(g.task_group_id))
        .map((g) => g.task_group_id)
        .filter((id) => ofResolved.has(id));
      if (openIds.length === 0) continue;
      const busy = await trx
        .selectFrom("tasks")
        .select("task_group_id")
        .distinct()
        .where("task_group_id", "in", openIds)
        .where((eb) =>
          eb.or([
            eb("state", "in", ["pending", "running"]),
            eb.and([eb("state", "=", "unscheduled"), eb("inactive", "=", false)]),
          ]),
        )
        .execute();
      const busyIds = new Set(busy.map((b) => b.task_group_id));
      const done = openIds.filter((id) => !busyIds.has(id));
      if (done.length === 0) continue;
      const now = new Date();
      await trx
        .updateTable("task_groups")
        .set((eb) => ({ resolved_at: now, resolutions: eb("resolutions", "+", 1) }))
        .where("task_group_id", "in", done)
        .execute();
      const tallies = await tallyGroups(trx, done);
      const activities = [...tallies.values()].map((tally) =>
        buildTaskGroupActivity(urls, { ...tally, resolvedAt: now }, randomUUID()),
      );
      await writeOutbox(trx, effects, activities, now);
      effects.groupsResolved.push(...done);
    }
  }

  // The cascade below is set-based: a resolution that unblocks (or dooms) thousands of
  // dependents costs a few queries per level of the graph, not a dozen per task.

  /** Rows per multi-row statement. */
  const CHUNK = 500;

  function chunks<T>(items: readonly T[]): T[][] {
    const out: T[][] = [];
    for (let i = 0; i < items.length; i += CHUNK) out.push(items.slice(i, i + CHUNK));
    return out;
  }

  /**
   * Makes a new run for each task: a pending run, dispatched to workers by the task's
   * priority, or for a breakpoint task a running run that waits for a person.
   */
  async function scheduleRuns(
    trx: Trx,
    effects: Effects,
    runs: readonly { taskId: string; runId: number }[],
    reason: string,
  ): Promise<void> {
    const now = new Date();
    for (const chunk of chunks(runs)) {
      const kinds = await trx
        .selectFrom("tasks")
        .select(["task_id", "priority", "breakpoint"])
        .where(
          "task_id",
          "in",
          chunk.map((r) => r.taskId),
        )
        .execute();
      const kind = new Map(kinds.map((k) => [k.task_id, k]));
      const waiting = (taskId: string) => kind.get(taskId)?.breakpoint === true;
      await trx
        .insertInto("runs")
        .values(
          chunk.map(({ taskId, runId }) => ({
            task_id: taskId,
            run_id: runId,
            state: waiting(taskId) ? ("running" as const) : ("pending" as const),
            reason_created: reason,
            reason_resolved: null,
            worker_id: null,
            taken_until: null,
            scheduled_at: now,
            started_at: waiting(taskId) ? now : null,
            resolved_at: null,
            exit_code: null,
            log: null,
          })),
        )
        .execute();
      for (const state of ["pending", "running"] as const) {
        const ids = chunk
          .map((r) => r.taskId)
          .filter((id) => waiting(id) === (state === "running"));
        if (ids.length === 0) continue;
        await trx
          .updateTable("tasks")
          .set({ state, updated_at: now })
          .where("task_id", "in", ids)
          .execute();
      }
      for (const run of chunk) {
        if (!waiting(run.taskId)) {
          effects.dispatch.push({ ...run, priority: kind.get(run.taskId)?.priority ?? "lowest" });
        }
      }
    }
  }

  async function scheduleRun(
    trx: Trx,
    effects: Effects,
    taskId: string,
    runId: number,
    reason: string,
  ): Promise<void> {
    await scheduleRuns(trx, effects, [{ taskId, runId }], reason);
  }

  /** Writes the activities announcing each resolved task to the outbox. */
  async function publishResolutions(
    trx: Trx,
    effects: Effects,
    taskIds: readonly string[],
  ): Promise<void> {
    const published = new Date();
    for (const ids of chunks(taskIds)) {
      const [tasks, runs, deps, artifacts] = await Promise.all([
        trx.selectFrom("tasks").selectAll().where("task_id", "in", ids).execute(),
        trx
          .selectFrom("runs")
          .selectAll()
          .where("task_id", "in", ids)
          .orderBy("task_id")
          .orderBy("run_id")
          .execute(),
        trx
          .selectFrom("task_dependencies")
          .select(["task_id", "dependency"])
          .where("task_id", "in", ids)
          .execute(),
        trx
          .selectFrom("artifacts")
          .select(["task_id", "name", "media_type", "size", "sha256", "expires_at", "run_id"])
          .where("task_id", "in", ids)
          .execute(),
      ]);
      const inputs = await consumedInputs(trx, urls, ids);
      const lastRun = new Map(runs.map((r) => [r.task_id, r])); // ordered: the last wins
      const rows = tasks.flatMap((task) =>
        buildTaskActivities(urls, {
          task,
          run: lastRun.get(task.task_id),
          dependencies: deps.filter((d) => d.task_id === task.task_id).map((d) => d.dependency),
          artifacts: artifacts.filter((a) => a.task_id === task.task_id),
          inputs: inputs.get(task.task_id) ?? [],
          newActivityId: () => randomUUID(),
        }),
      );
      await writeOutbox(trx, effects, rows, published);
    }
  }

  /**
   * Resolves as `exception` tasks that have not run to completion (deadline, failed
   * dependency, cancel), then everything that follows from it.
   */
  async function resolveWithoutRuns(
    trx: Trx,
    effects: Effects,
    taskIds: readonly string[],
    reason: string,
  ): Promise<void> {
    const now = new Date();
    const resolved: string[] = [];
    for (const ids of chunks(taskIds)) {
      const updated = await trx
        .updateTable("tasks")
        .set({ state: "exception", resolved_at: now, updated_at: now })
        .where("task_id", "in", ids)
        .where("state", "in", ["unscheduled", "pending"])
        .returning("task_id")
        .execute();
      const done = updated.map((u) => u.task_id);
      if (done.length === 0) continue;
      resolved.push(...done);
      // A pending run becomes the resolved one; otherwise a run records the resolution, as
      // Taskcluster does, so a task's state is always its last run's.
      const closed = await trx
        .updateTable("runs")
        .set({ state: "exception", reason_resolved: reason, resolved_at: now })
        .where("task_id", "in", done)
        .where("state", "=", "pending")
        .returning("task_id")
        .execute();
      const withRun = new Set(closed.map((c) => c.task_id));
      const rest = done.filter((id) => !withRun.has(id));
      if (rest.length === 0) continue;
      const last = await trx
        .selectFrom("runs")
        .select(["task_id", (eb) => eb.fn.max("run_id").as("run_id")])
        .where("task_id", "in", rest)
        .groupBy("task_id")
        .execute();
      const lastRunId = new Map(last.map((l) => [l.task_id, Number(l.run_id)]));
      await trx
        .insertInto("runs")
        .values(
          rest.map((taskId) => ({
            task_id: taskId,
            run_id: (lastRunId.get(taskId) ?? -1) + 1,
            state: "exception" as const,
            reason_created: "exception",
            reason_resolved: reason,
            worker_id: null,
            taken_until: null,
            scheduled_at: now,
            started_at: null,
            resolved_at: now,
            exit_code: null,
            log: null,
          })),
        )
        .execute();
    }
    if (resolved.length > 0) await afterResolutions(trx, effects, resolved, "exception");
  }

  async function resolveWithoutRun(
    trx: Trx,
    effects: Effects,
    taskId: string,
    reason: string,
  ): Promise<void> {
    await resolveWithoutRuns(trx, effects, [taskId], reason);
  }

  /** Marks each dependency resolved for every local task that waits on it, and re-evaluates them. */
  async function resolveDependencies(
    trx: Trx,
    effects: Effects,
    dependencies: readonly string[],
    resolution: ResolvedState,
  ): Promise<void> {
    const waiting: string[] = [];
    for (const ids of chunks(dependencies)) {
      const rows = await trx
        .updateTable("task_dependencies")
        .set({ resolution })
        .where("dependency", "in", ids)
        .where("resolution", "is", null)
        .returning("task_id")
        .execute();
      waiting.push(...rows.map((r) => r.task_id));
    }
    if (waiting.length > 0) await evaluateMany(trx, effects, waiting);
  }

  async function resolveDependency(
    trx: Trx,
    effects: Effects,
    dependency: string,
    resolution: ResolvedState,
  ): Promise<void> {
    await resolveDependencies(trx, effects, [dependency], resolution);
  }

  async function afterResolutions(
    trx: Trx,
    effects: Effects,
    taskIds: readonly string[],
    state: ResolvedState,
  ): Promise<void> {
    effects.resolved.push(...taskIds);
    await publishResolutions(trx, effects, taskIds);
    await resolveDependencies(trx, effects, taskIds, state);
  }

  async function afterResolution(
    trx: Trx,
    effects: Effects,
    taskId: string,
    state: ResolvedState,
  ): Promise<void> {
    await afterResolutions(trx, effects, [taskId], state);
  }

  /**
   * Schedules the unscheduled tasks whose dependencies allow it, and resolves those whose
   * dependencies never will. Rows are locked in task-id order, so concurrent evaluations
   * of overlapping sets wait for each other instead of deadlocking.
   *
   * The lock is taken on the task row alone, and what the task waits for (its join, its
   * dependencies, its activation) is read after it, in later statements. Two transactions
   * that each settle one of a task's conditions (the last join arrival and the last remote
   * dependency, say) thereby take turns on the same row, and the second sees the first's
   * commit. Were a condition part of the locking query, the second would skip the row on its
   * snapshot instead of waiting, and neither would schedule the task.
   */
  async function evaluateMany(
    trx: Trx,
    effects: Effects,
    taskIds: readonly string[],
  ): Promise<void> {
    const ready: { taskId: string; runId: number }[] = [];
    const doomed: string[] = [];
    for (const ids of chunks([...new Set(taskIds)].sort())) {
      const locked = await trx
        .selectFrom("tasks")
        .select(["task_id", "requires", "inactive"])
        .where("task_id", "in", ids)
        .where("state", "=", "unscheduled")
        .orderBy("task_id")
        .forUpdate()
        .execute();
      // An inactive task waits for activation, whatever its dependencies say; the locked
      // row is the newest version, so an activation that committed meanwhile counts.
      const active = locked.filter((t) => !t.inactive);
      if (active.length === 0) continue;
      // A task joining artifacts waits until they arrived or the join's deadline passed.
      const joining = new Set(
        (
          await trx
            .selectFrom("task_joins")
            .select("task_id")
            .where(
              "task_id",
              "in",
              active.map((t) => t.task_id),
            )
            .where("state", "=", "waiting")
            .execute()
        ).map((j) => j.task_id),
      );
      const tasks = active.filter((t) => !joining.has(t.task_id));
      if (tasks.length === 0) continue;
      const deps = await trx
        .selectFrom("task_dependencies")
        .select(["task_id", "resolution"])
        .where(
          "task_id",
          "in",
          tasks.map((t) => t.task_id),
        )
        .execute();
      const byTask = new Map<string, (ResolvedState | null)[]>();
      for (const d of deps) byTask.set(d.task_id, [...(byTask.get(d.task_id) ?? []), d.resolution]);
      for (const task of tasks) {
        const resolutions = byTask.get(task.task_id) ?? [];
        if (
          task.requires === "all-completed" &&
          resolutions.some((r) => r != null && r !== "completed")
        ) {
          doomed.push(task.task_id);
        } else if (resolutions.every((r) => r != null)) {
          ready.push({ taskId: task.task_id, runId: 0 });
        }
      }
    }
    if (ready.length > 0) await scheduleRuns(trx, effects, ready, "scheduled");
    if (doomed.length > 0) await resolveWithoutRuns(trx, effects, doomed, "dependency-failed");
  }

  async function evaluate(trx: Trx, effects: Effects, taskId: string): Promise<void> {
    await evaluateMany(trx, effects, [taskId]);
  }

  /**
   * After an infrastructure failure of run `runId` (claim expired, worker shut down): a new
   * pending run while the task has retries left, otherwise the task resolves `exception`.
   */
  async function retryOrResolve(
    trx: Trx,
    effects: Effects,
    taskId: string,
    runId: number,
  ): Promise<void> {
    const now = new Date();
    const retried = await trx
      .updateTable("tasks")
      .set((eb) => ({ retries_left: eb("retries_left", "-", 1), updated_at: now }))
      .where("task_id", "=", taskId)
      .where("retries_left", ">", 0)
      .returning("task_id")
      .executeTakeFirst();
    if (retried != null) {
      await scheduleRun(trx, effects, taskId, runId + 1, "retry");
      return;
    }
    await resolveTask(trx, effects, taskId, "exception", now);
  }

  /** Moves a task whose last run resolved to that run's state, and follows it through. */
  async function resolveTask(
    trx: Trx,
    effects: Effects,
    taskId: string,
    state: ResolvedState,
    now: Date,
  ): Promise<void> {
    await trx
      .updateTable("tasks")
      .set({ state, resolved_at: now, updated_at: now })
      .where("task_id", "=", taskId)
      .execute();
    await afterResolution(trx, effects, taskId, state);
  }

  /**
   * Locks the row of a task whose run the transaction is about to change, before the run's
   * row: the lock order every path follows (see {@link settleGroups}), so that a worker's
   * transaction and a cancel or a deadline that overlap it wait for each other instead of
   * deadlocking. The run's own state is checked afterwards, in the statement that changes
   * it, so a transaction that waited here sees what the other committed. `for no key
   * update` is the lock the task's update takes anyway, taken earlier.
   */
  async function lockTaskOfRun(
    trx: Trx,
    taskId: string,
  ): Promise<{ created_at: Date } | undefined> {
    return await trx
      .selectFrom("tasks")
      .select("created_at")
      .where("task_id", "=", taskId)
      .forNoKeyUpdate()
      .executeTakeFirst();
  }

  /**
   * Resolves a running run that `workerId` still holds, with the given fields, and drops its
   * lease; the task's row is locked first. Undefined when the worker no longer holds it (the
   * claim expired, or it was cancelled), otherwise the task's creation time.
   */
  async function resolveHeldRun(
    trx: Trx,
    taskId: string,
    runId: number,
    workerId: string,
    resolution: Pick<
      Updateable<RunsTable>,
      "state" | "reason_resolved" | "resolved_at" | "exit_code" | "log"
    >,
  ): Promise<{ created_at: Date } | undefined> {
    const task = await lockTaskOfRun(trx, taskId);
    if (task == null) return undefined;
    const run = await trx
      .updateTable("runs")
      .set({ ...resolution, taken_until: null })
      .where("task_id", "=", taskId)
      .where("run_id", "=", runId)
      .where("worker_id", "=", workerId)
      .where("state", "=", "running")
      .returning("run_id")
      .executeTakeFirst();
    return run == null ? undefined : task;
  }

  /**
   * Resolves a running task as `exception` whoever holds it (a worker, or a person for a
   * breakpoint task). A worker notices at its next claim renewal and stops the process.
   */
  async function resolveRunningTask(
    trx: Trx,
    effects: Effects,
    taskId: string,
    reason: string,
  ): Promise<void> {
    const now = new Date();
    await trx
      .updateTable("runs")
      .set({ state: "exception", reason_resolved: reason, resolved_at: now, taken_until: null })
      .where("task_id", "=", taskId)
      .where("state", "=", "running")
      .execute();
    await resolveTask(trx, effects, taskId, "exception", now);
  }

  /** Locks a task's row for the transaction; throws `ResourceNotFound` when there is none. */
  async function lockTaskOrThrow(
    trx: Trx,
    taskId: string,
  ): Promise<{ state: TaskState; breakpoint: boolean; task_group_id: string }> {
    const task = await trx
      .selectFrom("tasks")
      .select(["state", "breakpoint", "task_group_id"])
      .where("task_id", "=", taskId)
      .forUpdate()
      .executeTakeFirst();
    if (task == null) throw new ApiError("ResourceNotFound", `No task ${taskId} on this cluster.`);
    return task;
  }

  function normaliseRef(ref: string): { dependency: string; remote: boolean } {
    const local = urls.localTaskId(ref);
    if (local != null) return { dependency: local, remote: false };
    try {
      new URL(ref);
      return { dependency: ref, remote: true };
    } catch {
      return { dependency: ref, remote: false };
    }
  }

  /** Remote task URLs that some unscheduled local task still waits on (optionally on one origin). */
  async function unresolvedRemoteDependencies(origin?: string): Promise<string[]> {
    let query = db
      .selectFrom("task_dependencies")
      .select("dependency")
      .distinct()
      .where("remote", "=", true)
      .where("resolution", "is", null);
    if (origin != null)
      query = query.where("dependency", "like", `${origin.replace(/[\\%_]/g, "\\$&")}/%`);
    return (await query.execute()).map((r) => r.dependency);
  }

  return {
    runEffects,

    /**
     * Creates a task from a submitted definition. Repeating the same definition with the same
     * `taskId` succeeds without change; a different definition under that id is a conflict.
     * @throws {ApiError} `InputError` with `details` listing every problem; `RequestConflict`.
     */
    async createTask(input: unknown): Promise<CreateTaskResult> {
      const result = validateTaskDefinition(input, newSlugId);
      if (!result.ok) {
        throw new ApiError("InputError", "The task definition is invalid; see details.", {
          problems: result.problems,
        });
      }
      const def = result.value;
      // A local task may be named both by id and by URL (inputs add their task as given).
      const refs = [
        ...new Map(def.dependencies.map(normaliseRef).map((r) => [r.dependency, r])).values(),
      ];
      return await inTransaction(async (trx, effects) => {
        /** The result of a repeat when the task exists; throws when it exists differently. */
        const repeat = async (): Promise<CreateTaskResult | undefined> => {
          const existing = await trx
            .selectFrom("tasks")
            .select(["definition", "created_at"])
            .where("task_id", "=", def.taskId)
            .executeTakeFirst();
          if (existing == null) return undefined;
          const { deadline: _a, ...oldRest } = storedDefinition(existing.definition);
          const { deadline: _b, ...newRest } = def;
          // jsonb does not keep key order: compare values, as the database stores them.
          if (isDeepStrictEqual(oldRest, JSON.parse(JSON.stringify(newRest)))) {
            return { taskId: def.taskId, created: false };
          }
          throw new ApiError(
            "RequestConflict",
            `Task ${def.taskId} already exists with a different definition; choose another taskId.`,
          );
        };
        const repeated = await repeat();
        if (repeated != null) return repeated;
        const localDeps = refs.filter((r) => !r.remote).map((r) => r.dependency);
        /** States of the local dependencies, read under the lock below. */
        const localStates = new Map<string, TaskState>();
        if (localDeps.length > 0) {
          // Locked until commit: a dependency resolving meanwhile either commits first (we
          // read its resolution) or waits for us (and then sees our dependency rows).
          const found = await trx
            .selectFrom("tasks")
            .select(["task_id", "state"])
            .where("task_id", "in", localDeps)
            .orderBy("task_id")
            .forShare()
            .execute();
          for (const f of found) localStates.set(f.task_id, f.state);
          const missing = localDeps.filter((d) => !localStates.has(d));
          if (missing.length > 0) {
            throw new ApiError(
              "InputError",
              "Some local dependencies do not exist; create them first.",
              {
                problems: missing.map((m) => ({
                  field: "dependencies",
                  message: `No task ${m} on this cluster.`,
                })),
              },
            );
          }
        }
        if (def.join != null) {
          // Only a followed cluster's activities are acted on: a join on any other would wait
          // for nothing until its deadline.
          const unfollowed = new Set(await unfollowedClusters(trx, def.join.clusters));
          if (unfollowed.size > 0) {
            throw new ApiError("InputError", "The join names clusters this one does not follow.", {
              problems: def.join.clusters.flatMap((cluster, i) =>
                unfollowed.has(cluster)
                  ? [{ field: `join.clusters[${i}]`, message: unfollowedMessage(cluster) }]
                  : [],
              ),
            });
          }
        }
        await openTaskGroup(trx, def.taskGroupId);
        const now = new Date();
        const inserted = await trx
          .insertInto("tasks")
          .values(newTaskRow(def, now))
          .onConflict((oc) => oc.column("task_id").doNothing())
          .returning("task_id")
          .executeTakeFirst();
        if (inserted == null) {
          // A concurrent request created it since we looked; the insert waited for its commit.
          const raced = await repeat();
          if (raced != null) return raced;
        }
        for (const ref of refs) {
          let resolution: ResolvedState | null = null;
          if (ref.remote) {
            const known = await trx
              .selectFrom("remote_tasks")
              .select("state")
              .where("task_url", "=", ref.dependency)
              .executeTakeFirst();
            if (known != null && RESOLVED.includes(known.state)) {
              resolution = known.state as ResolvedState;
            } else {
              // It may have resolved before we knew we cared: ask its cluster.
              effects.dereference.push(ref.dependency);
            }
          } else {
            const state = localStates.get(ref.dependency);
            if (state != null && RESOLVED.includes(state)) resolution = state as ResolvedState;
          }
          await trx
            .insertInto("task_dependencies")
            .values({
              task_id: def.taskId,
              dependency: ref.dependency,
              remote: ref.remote,
              resolution,
            })
            .execute();
        }
        for (const input of def.inputs) {
          const ref = normaliseRef(input.task);
          const taskUrl = ref.remote ? ref.dependency : urls.task(ref.dependency);
          const artifactUrl = ref.remote
            ? `${taskUrl}/artifacts/${input.artifact.split("/").map(encodeURIComponent).join("/")}`
            : urls.artifact(ref.dependency, input.artifact);
          await trx
            .insertInto("task_inputs")
            .values({
              task_id: def.taskId,
              path: input.path,
              artifact_url: artifactUrl,
              task_url: taskUrl,
            })
            .execute();
        }
        if (def.join != null) {
          const timer = await insertJoin(trx, { ...def, join: def.join }, now);
          if (timer != null) effects.joinTimers.push(timer);
        }
        await evaluate(trx, effects, def.taskId);
        return { taskId: def.taskId, created: true };
      });
    },

    /**
     * Creates a whole task graph (`protocol/schemas/v1/task-graph.json`) in one transaction,
     * after checking all of it; a refused graph creates nothing. Submitting the same graph
     * again succeeds without change.
     * @throws {ApiError} `InputError` with `details.problems` listing every problem;
     *   `RequestConflict` when the group or one of its task ids exists with other content.
     */
    async createTaskGroup(input: unknown): Promise<CreateTaskGroupResult> {
      const check = checkTaskGraph(input, { localTaskId: (url) => urls.localTaskId(url) });
      const attempt = () =>
        inTransaction((trx, effects) =>
          writeTaskGroup(trx, check, {
            urls,
            evaluate: (taskIds) => evaluateMany(trx, effects, taskIds),
            dereference: (url) => effects.dereference.push(url),
            joinTimer: (timer) => effects.joinTimers.push(timer),
          }),
        );
      try {
        return await attempt();
      } catch (error) {
        // A concurrent request committed some of these tasks first: now they are visible,
        // and the same graph is a repeat, a different one a conflict.
        if (error instanceof TaskGroupRaceError) return await attempt();
        throw error;
      }
    },

    /**
     * Creates a whole task graph inside the caller's transaction (a hook firing in the same
     * transaction as the inbox's dedupe record). The returned effects are the caller's to
     * run after commit, with {@link runEffects}.
     * @throws {ApiError} as {@link createTaskGroup}; the caller rolls back (or to a savepoint).
     */
    async createTaskGroupInTransaction(
      trx: Trx,
      input: unknown,
    ): Promise<{ result: CreateTaskGroupResult; effects: Effects }> {
      const check = checkTaskGraph(input, { localTaskId: (url) => urls.localTaskId(url) });
      const effects = emptyEffects();
      const result = await writeTaskGroup(trx, check, {
        urls,
        evaluate: (taskIds) => evaluateMany(trx, effects, taskIds),
        dereference: (url) => effects.dereference.push(url),
        joinTimer: (timer) => effects.joinTimers.push(timer),
      });
      await settleGroups(trx, effects);
      return { result, effects };
    },

    /** Claims a pending run for `workerId`; undefined when another worker has it or it is gone. */
    async claimRun(
      taskId: string,
      runId: number,
      workerId: string,
      leaseMs: number,
    ): Promise<ClaimedRun | undefined> {
      const now = new Date();
      const takenUntil = new Date(now.getTime() + leaseMs);
      return await db.transaction().execute(async (trx) => {
        if ((await lockTaskOfRun(trx, taskId)) == null) return undefined;
        const claimed = await trx
          .updateTable("runs")
          .set({ state: "running", worker_id: workerId, taken_until: takenUntil, started_at: now })
          .where("task_id", "=", taskId)
          .where("run_id", "=", runId)
          .where("state", "=", "pending")
          .returning("run_id")
          .executeTakeFirst();
        if (claimed == null) return undefined;
        const task = await trx
          .updateTable("tasks")
          .set({ state: "running", updated_at: now })
          .where("task_id", "=", taskId)
          .returning("definition")
          .executeTakeFirstOrThrow();
        return { taskId, runId, definition: storedDefinition(task.definition), takenUntil };
      });
    },

    /** Extends a running claim; false when the claim was lost (expired and taken over). */
    async renewClaim(
      taskId: string,
      runId: number,
      workerId: string,
      leaseMs: number,
    ): Promise<boolean> {
      const result = await db
        .updateTable("runs")
        .set({ taken_until: new Date(Date.now() + leaseMs) })
        .where("task_id", "=", taskId)
        .where("run_id", "=", runId)
        .where("worker_id", "=", workerId)
        .where("state", "=", "running")
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },

    /**
     * Cancels a task: an unscheduled, pending or running task resolves `exception`
     * (`canceled`) and its dependents follow as the `requires` rules say. A running task's
     * worker notices at its next claim renewal and stops the process. Cancelling a resolved
     * task changes nothing.
     * @throws {ApiError} `ResourceNotFound`.
     */
    async cancelTask(taskId: string): Promise<{ state: TaskState; changed: boolean }> {
      return await inTransaction(async (trx, effects) => {
        const task = await lockTaskOrThrow(trx, taskId);
        if (RESOLVED.includes(task.state)) return { state: task.state, changed: false };
        if (task.state === "running") {
          await resolveRunningTask(trx, effects, taskId, "canceled");
        } else {
          await resolveWithoutRun(trx, effects, taskId, "canceled");
        }
        return { state: "exception", changed: true };
      });
    },

    /**
     * Activates an inactive task (backfill): from now on it is scheduled as soon as its
     * dependencies allow, which may be at once. Activating an active task changes nothing.
     * @throws {ApiError} `ResourceNotFound`; `RequestConflict` when the task has resolved.
     */
    async activateTask(taskId: string): Promise<{ state: TaskState; changed: boolean }> {
      return await inTransaction(async (trx, effects) => {
        const task = await lockTaskOrThrow(trx, taskId);
        const updated = await trx
          .updateTable("tasks")
          .set({ inactive: false, updated_at: new Date() })
          .where("task_id", "=", taskId)
          .where("inactive", "=", true)
          .where("state", "=", "unscheduled")
          .returning(["task_id", "task_group_id"])
          .executeTakeFirst();
        if (updated == null) {
          if (RESOLVED.includes(task.state)) {
            throw new ApiError(
              "RequestConflict",
              `Task ${taskId} has already resolved ${task.state}.`,
            );
          }
          return { state: task.state, changed: false };
        }
        // The group waits for this task now, even if it resolves at once.
        effects.rejoined.push(updated.task_group_id);
        await evaluate(trx, effects, taskId);
        const after = await lockTaskOrThrow(trx, taskId);
        return { state: after.state, changed: true };
      });
    },

    /**
     * Resolves a breakpoint task that is waiting (state `running`) as `completed` or
     * `failed`, on behalf of a person or a program; its dependents follow as for any task.
     * @throws {ApiError} `ResourceNotFound`; `RequestConflict` when the task is not a
     *   breakpoint task or is not waiting (not yet scheduled, or already resolved).
     */
    async resolveBreakpoint(
      taskId: string,
      resolution: { state: "completed" | "failed"; note?: string | undefined },
    ): Promise<{ state: TaskState; runId: number }> {
      return await inTransaction(async (trx, effects) => {
        const task = await lockTaskOrThrow(trx, taskId);
        if (!task.breakpoint) {
          throw new ApiError(
            "RequestConflict",
            `Task ${taskId} is not a breakpoint task; a worker resolves it (cancel it to stop it).`,
          );
        }
        if (task.state !== "running") {
          throw new ApiError(
            "RequestConflict",
            RESOLVED.includes(task.state)
              ? `Breakpoint task ${taskId} has already resolved ${task.state}; rerun it to wait again.`
              : `Breakpoint task ${taskId} is ${task.state}: it waits for its dependencies and cannot be resolved yet.`,
          );
        }
        const now = new Date();
        const run = await trx
          .updateTable("runs")
          .set({
            state: resolution.state,
            reason_resolved: resolution.state,
            resolved_at: now,
            log: resolution.note == null ? null : `${resolution.note}\n`,
          })
          .where("task_id", "=", taskId)
          .where("state", "=", "running")
          .returning("run_id")
          .executeTakeFirstOrThrow();
        await resolveTask(trx, effects, taskId, resolution.state, now);
        return { state: resolution.state, runId: run.run_id };
      });
    },

    /** A task group's tally and resolution; undefined when no such group exists. */
    async getTaskGroupTally(taskGroupId: string): Promise<TaskGroupTally | undefined> {
      // One snapshot: the resolution and the counts must describe the same moment.
      return await db
        .transaction()
        .setIsolationLevel("repeatable read")
        .execute(async (trx) => {
          const group = await trx
            .selectFrom("task_groups")
            .select(["resolved_at"])
            .where("task_group_id", "=", taskGroupId)
            .executeTakeFirst();
          if (group == null) return undefined;
          const tally = (await tallyGroups(trx, [taskGroupId])).get(taskGroupId);
          if (tally == null) return undefined;
          return {
            ...tally,
            resolvedAt: group.resolved_at == null ? undefined : new Date(group.resolved_at),
          };
        });
    },

    /**
     * Runs a resolved task again as a new run (`rerun`). Dependents that already resolved
     * are not affected; the new resolution is published like the first.
     * @throws {ApiError} `ResourceNotFound`; `RequestConflict` when the task has not resolved.
     */
    async rerunTask(taskId: string): Promise<{ runId: number }> {
      return await inTransaction(async (trx, effects) => {
        const task = await lockTaskOrThrow(trx, taskId);
        if (!RESOLVED.includes(task.state)) {
          throw new ApiError(
            "RequestConflict",
            `Task ${taskId} is ${task.state}; only a resolved task can be rerun (cancel it first).`,
          );
        }
        const last = await trx
          .selectFrom("runs")
          .select((eb) => eb.fn.max("run_id").as("run_id"))
          .where("task_id", "=", taskId)
          .executeTakeFirst();
        const runId = Number(last?.run_id ?? -1) + 1;
        await trx
          .updateTable("tasks")
          .set({ resolved_at: null, updated_at: new Date() })
          .where("task_id", "=", taskId)
          .execute();
        await scheduleRun(trx, effects, taskId, runId, "rerun");
        // The group waits for this task again.
        effects.rejoined.push(task.task_group_id);
        return { runId };
      });
    },

    /**
     * Hands a running run back because its worker is shutting down: the run resolves
     * `exception` (`worker-shutdown`) and, while retries are left, a new run is pending for
     * another worker. Does nothing when the worker no longer holds the claim.
     * @returns false when the claim was no longer this worker's.
     */
    async handBackRun(taskId: string, runId: number, workerId: string): Promise<boolean> {
      return await inTransaction(async (trx, effects) => {
        const held = await resolveHeldRun(trx, taskId, runId, workerId, {
          state: "exception",
          reason_resolved: "worker-shutdown",
          resolved_at: new Date(),
        });
        if (held == null) return false;
        await retryOrResolve(trx, effects, taskId, runId);
        return true;
      });
    },

    /**
     * Records how a run ended, stores its artifacts, resolves the task and everything that
     * follows from it, all in one transaction. Does nothing when the worker lost its claim.
     * @returns false when the claim was no longer this worker's.
     */
    async resolveRun(
      taskId: string,
      runId: number,
      workerId: string,
      outcome: RunOutcome,
    ): Promise<boolean> {
      return await inTransaction(async (trx, effects) => {
        const now = new Date();
        const task = await resolveHeldRun(trx, taskId, runId, workerId, {
          state: outcome.state,
          reason_resolved: outcome.reason,
          resolved_at: now,
          exit_code: outcome.exitCode,
          log: outcome.log,
        });
        if (task == null) return false;
        for (const a of outcome.artifacts) {
          await trx
            .insertInto("artifacts")
            .values({
              task_id: taskId,
              name: a.name,
              run_id: runId,
              media_type: a.mediaType,
              size: a.content.byteLength,
              sha256: a.sha256,
              content: a.content,
              expires_at: new Date(new Date(task.created_at).getTime() + artifactTtlMs),
              // Served only by authorized fetch from the start (see http/authorized-fetch.ts).
              private: a.name.startsWith("private/"),
            })
            .onConflict((oc) =>
              oc.columns(["task_id", "name"]).doUpdateSet((eb) => ({
                run_id: eb.ref("excluded.run_id"),
                media_type: eb.ref("excluded.media_type"),
                size: eb.ref("excluded.size"),
                sha256: eb.ref("excluded.sha256"),
                content: eb.ref("excluded.content"),
              })),
            )
            .execute();
        }
        await resolveTask(trx, effects, taskId, outcome.state, now);
        return true;
      });
    },

    /**
     * Applies what a remote cluster reported about one of its tasks: remembers it, and
     * resolves the local dependencies on it. Idempotent.
     */
    async applyRemoteTask(report: RemoteTaskReport, trx?: Trx): Promise<Effects> {
      const apply = async (t: Trx, effects: Effects) => {
        const now = new Date();
        await t
          .insertInto("remote_tasks")
          .values({
            task_url: report.taskUrl,
            actor_id: report.actorId,
            state: report.state,
            resolved_at: report.resolvedAt ?? null,
            source: report.source,
            updated_at: now,
          })
          .onConflict((oc) =>
            oc.column("task_url").doUpdateSet({
              state: report.state,
              resolved_at: report.resolvedAt ?? null,
              source: report.source,
              updated_at: now,
            }),
          )
          .execute();
        for (const a of report.artifacts) await upsertRemoteArtifact(t, a);
        if (RESOLVED.includes(report.state)) {
          await resolveDependency(t, effects, report.taskUrl, report.state as ResolvedState);
        }
      };
      if (trx != null) {
        const effects = emptyEffects();
        await apply(trx, effects);
        await settleGroups(trx, effects);
        return effects;
      }
      const effects = emptyEffects();
      await db.transaction().execute(async (t) => {
        await apply(t, effects);
        await settleGroups(t, effects);
      });
      await runEffects(effects);
      return emptyEffects();
    },

    /** Remembers a remote artifact's published metadata (its digest is what inputs are checked against). */
    async applyRemoteArtifact(artifact: RemoteArtifactReport, trx: Trx): Promise<void> {
      await upsertRemoteArtifact(trx, artifact);
    },

    /**
     * Applies an `ArtifactPublished` of a followed cluster, in the inbox's transaction:
     * remembers the artifact, and counts it in the joins waiting for it, scheduling the
     * joining tasks that now have everything.
     * @returns the queue work to do after commit.
     */
    async applyPublishedArtifact(artifact: RemoteArtifactReport, trx: Trx): Promise<Effects> {
      const effects = emptyEffects();
      await upsertRemoteArtifact(trx, artifact);
      const complete = await recordJoinArrival(trx, {
        actorId: artifact.actorId,
        artifactUrl: artifact.artifactUrl,
        taskUrl: artifact.taskUrl,
        name: artifact.name,
        tags: artifact.tags ?? {},
      });
      if (complete.length > 0) await evaluateMany(trx, effects, complete);
      await settleGroups(trx, effects);
      return effects;
    },

    /**
     * Settles a join whose deadline passed while some clusters had not delivered: the task
     * runs with what arrived (`run`) or resolves `exception` with reason
     * `join-deadline-exceeded` (`fail`). Does nothing when the join already settled.
     */
    async closeJoin(taskId: string): Promise<"settled" | "not-due" | "nothing-to-do"> {
      return await inTransaction(async (trx, effects) => {
        const join = await trx
          .selectFrom("task_joins")
          .select(["state", "deadline", "at_deadline"])
          .where("task_id", "=", taskId)
          .forUpdate()
          .executeTakeFirst();
        if (join == null || join.state !== "waiting") return "nothing-to-do";
        const now = new Date();
        const dueAt = new Date(join.deadline);
        if (dueAt.getTime() > now.getTime()) {
          // Fired early (clocks of two processes differ): wait again, under another job id.
          effects.joinTimers.push({ taskId, dueAt, again: now.getTime() });
          return "not-due";
        }
        const run = join.at_deadline === "run";
        await trx
          .updateTable("task_joins")
          .set({ state: run ? "closed" : "failed", settled_at: now })
          .where("task_id", "=", taskId)
          .execute();
        if (run) await evaluate(trx, effects, taskId);
        else await resolveWithoutRun(trx, effects, taskId, "join-deadline-exceeded");
        return "settled";
      });
    },

    /** Resolves runs whose claim expired (their worker died) and retries them if retries are left. */
    async reapExpiredClaims(): Promise<number> {
      const expired = await db
        .selectFrom("runs")
        .select(["task_id", "run_id"])
        .where("state", "=", "running")
        .where("taken_until", "<", new Date())
        .limit(100)
        .execute();
      for (const run of expired) {
        await inTransaction(async (trx, effects) => {
          // One run and its task per transaction, the task's row first.
          if ((await lockTaskOfRun(trx, run.task_id)) == null) return;
          const now = new Date();
          const done = await trx
            .updateTable("runs")
            .set({ state: "exception", reason_resolved: "claim-expired", resolved_at: now })
            .where("task_id", "=", run.task_id)
            .where("run_id", "=", run.run_id)
            .where("state", "=", "running")
            .where("taken_until", "<", now)
            .executeTakeFirst();
          if (Number(done.numUpdatedRows) === 0) return;
          await retryOrResolve(trx, effects, run.task_id, run.run_id);
        });
      }
      return expired.length;
    },

    /**
     * Resolves as `exception` (`deadline-exceeded`) every unresolved task whose deadline has
     * passed, as Taskcluster does: waiting, pending, running on a worker (which stops it at
     * its next claim renewal) or waiting at a breakpoint.
     */
    async resolveDeadlines(): Promise<number> {
      const due = await db
        .selectFrom("tasks")
        .select("task_id")
        .where("state", "in", ["unscheduled", "pending", "running"])
        .where("deadline", "<", new Date())
        .limit(100)
        .execute();
      for (const t of due) {
        await inTransaction(async (trx, effects) => {
          const task = await lockTaskOrThrow(trx, t.task_id);
          if (task.state === "running") {
            await resolveRunningTask(trx, effects, t.task_id, "deadline-exceeded");
          } else if (!RESOLVED.includes(task.state)) {
            await resolveWithoutRun(trx, effects, t.task_id, "deadline-exceeded");
          }
        });
      }
      return due.length;
    },

    /**
     * Finds the work that should be in the queue according to the database: pending runs,
     * outbox rows not yet handed to delivery, remote dependencies still unresolved. Used at
     * start and after the queue lost its data; enqueueing is idempotent.
     */
    async recoverEffects(): Promise<Effects> {
      const effects = emptyEffects();
      const runs = await db
        .selectFrom("runs")
        .innerJoin("tasks", "tasks.task_id", "runs.task_id")
        .select(["runs.task_id", "runs.run_id", "tasks.priority"])
        .where("runs.state", "=", "pending")
        .execute();
      for (const r of runs) {
        effects.dispatch.push({ taskId: r.task_id, runId: r.run_id, priority: r.priority });
      }
      const outbox = await db
        .selectFrom("outbox")
        .select("activity_id")
        .where("fanned_out_at", "is", null)
        .orderBy("seq")
        .execute();
      for (const o of outbox) effects.publish.push(o.activity_id);
      effects.dereference.push(...(await unresolvedRemoteDependencies()));
      effects.joinTimers.push(...(await waitingJoinTimers(db)));
      return effects;
    },

    /** Remote task URLs that some unscheduled local task still waits on. */
    unresolvedRemoteDependencies,

    /** One task with its runs, dependencies, inputs and artifacts (no artifact bytes). */
    async getTask(taskId: string) {
      const task = await db
        .selectFrom("tasks")
        .selectAll()
        .where("task_id", "=", taskId)
        .executeTakeFirst();
      if (task == null) return undefined;
      const [runs, dependencies, inputs, artifacts, join] = await Promise.all([
        db.selectFrom("runs").selectAll().where("task_id", "=", taskId).orderBy("run_id").execute(),
        db.selectFrom("task_dependencies").selectAll().where("task_id", "=", taskId).execute(),
        db.selectFrom("task_inputs").selectAll().where("task_id", "=", taskId).execute(),
        db
          .selectFrom("artifacts")
          .select([
            "name",
            "run_id",
            "media_type",
            "size",
            "sha256",
            "created_at",
            "expires_at",
            "private",
          ])
          .where("task_id", "=", taskId)
          .execute(),
        joinProgress(db, taskId),
      ]);
      return { task, runs, dependencies, inputs, artifacts, join };
    },

    /** Tasks, newest first. */
    async listTasks(options: { limit?: number; state?: TaskState } = {}) {
      let query = db
        .selectFrom("tasks")
        .select([
          "task_id",
          "task_group_id",
          "name",
          "state",
          "created_at",
          "resolved_at",
          "updated_at",
        ])
        .orderBy("created_at", "desc")
        .limit(Math.min(options.limit ?? 100, 1000));
      if (options.state != null) query = query.where("state", "=", options.state);
      return await query.execute();
    },

    /** Pending runs of this cluster (for the dispatcher after a queue loss). */
    async pendingRuns(): Promise<Pick<RunsTable, "task_id" | "run_id">[]> {
      return await db
        .selectFrom("runs")
        .select(["task_id", "run_id"])
        .where("state", "=", "pending")
        .execute();
    },

    /** Counts tasks by state. */
    async countByState(): Promise<Record<string, number>> {
      const rows = await db
        .selectFrom("tasks")
        .select(["state", sql<number>`count(*)::int`.as("n")])
        .groupBy("state")
        .execute();
      return Object.fromEntries(rows.map((r) => [r.state, Number(r.n)]));
    },
  };
}

/**
 * Records a remote artifact, or its newest metadata and tags. `received_at` stays the moment
 * it was first recorded: what a join's `since` compares.
 */
async function upsertRemoteArtifact(trx: Trx, a: RemoteArtifactReport): Promise<void> {
  const now = new Date();
  const tags = JSON.stringify(a.tags ?? {});
  await trx
    .insertInto("remote_artifacts")
    .values({
      artifact_url: a.artifactUrl,
      task_url: a.taskUrl,
      actor_id: a.actorId,
      name: a.name,
      content_url: a.contentUrl,
      sha256: a.sha256,
      size: a.size,
      media_type: a.mediaType,
      updated_at: now,
      tags,
      received_at: now,
    })
    .onConflict((oc) =>
      oc.column("artifact_url").doUpdateSet({
        content_url: a.contentUrl,
        sha256: a.sha256,
        size: a.size,
        media_type: a.mediaType,
        updated_at: now,
        tags,
      }),
    )
    .execute();
}
