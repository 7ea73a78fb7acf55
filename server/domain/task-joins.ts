/**
 * Joins: a task that waits for one matching artifact from each of a set of followed clusters
 * ("the dataset for period P from each of N clusters") and runs once all have arrived, with a
 * deadline for stragglers. The definition's `join` block says which clusters, which artifacts
 * count (a name glob and/or tags), the deadline and what happens then.
 *
 * Matching happens where every remote artifact is recorded: the inbox's (and outbox catch-up's)
 * transaction, through `TaskService.applyRemoteArtifact`. For each waiting join listing the
 * sending cluster, the cluster's first matching artifact becomes an input of the task, saved
 * at `join/<position>/<artifact name>` and downloaded and digest-checked by the worker like any
 * remote input. The arrival is recorded once, under the join's row lock: a redelivered activity
 * stops at the inbox's dedupe record, and a later match from the same cluster changes nothing.
 * When the last cluster has arrived the join is `complete` and the task is evaluated like any
 * other (its ordinary dependencies, if it has any, still count).
 *
 * A join with `since` also counts what this cluster recorded before the task was created: in
 * the creation's transaction, each listed cluster's earliest matching artifact recorded at or
 * after that moment (`remote_artifacts.received_at`) arrives at once, and a join that has
 * everything is `complete` before its task is first evaluated. The look-up and a concurrent
 * arrival take conflicting locks on the cluster's `following` row, so an `ArtifactPublished`
 * applied while the task is being created is counted by one of the two, never by neither.
 *
 * The deadline is a delayed job on {@link JOIN_QUEUE}. The `waiting` rows are the durable
 * state: `TaskService.recoverEffects` enqueues the timers again from them after a start or a
 * lost queue (enqueueing is idempotent by job id).
 * @module
 */
import { sql, type Kysely, type Transaction } from "kysely";
import type { DatabaseSchema, TaskJoinsTable } from "../store/schema.ts";
import { globToRegExp, hasTags } from "./tag-match.ts";
import {
  joinDeadlineOf,
  joinInputPath,
  joinSinceOf,
  storedDefinition,
  type TaskDefinition,
} from "./task-definition.ts";

type Db = Kysely<DatabaseSchema>;
type Trx = Transaction<DatabaseSchema>;

/** The queue whose delayed jobs close joins at their deadline. */
export const JOIN_QUEUE = "joins";

/** A join deadline to enqueue after commit. */
export interface JoinTimer {
  readonly taskId: string;
  /** When the deadline falls. */
  readonly dueAt: Date;
  /** Set when a timer fired early and is set again: a new job id, as its own is still running. */
  readonly again?: number;
}

/** The job id of a join's deadline timer: one per task and deadline. */
export function joinTimerJobId(timer: JoinTimer): string {
  const id = `${timer.taskId}/${timer.dueAt.getTime()}`;
  return timer.again == null ? id : `${id}/again-${timer.again}`;
}

/** An artifact as a followed cluster published it, with its task's tags. */
export interface JoinCandidate {
  readonly actorId: string;
  readonly artifactUrl: string;
  readonly taskUrl: string;
  readonly name: string;
  readonly tags: Readonly<Record<string, string>>;
}

/** How far a task's join is, as the task's API document shows it. */
export interface JoinProgress {
  readonly state: TaskJoinsTable["state"];
  readonly deadline: string;
  /** The moment of the join's `since`, when it has one. */
  readonly since?: string;
  readonly atDeadline: "run" | "fail";
  readonly artifact?: string;
  readonly tags?: Readonly<Record<string, string>>;
  /** Every cluster of the join, in the definition's order. */
  readonly clusters: readonly {
    readonly cluster: string;
    readonly arrived: boolean;
    readonly artifactUrl: string | null;
    readonly path: string | null;
    readonly arrivedAt: string | null;
  }[];
  /** Clusters that have not delivered (yet, or at all once the join settled). */
  readonly missing: readonly string[];
  readonly settledAt: string | null;
}

/** Whether `artifact` is what `join` waits for (the cluster is checked by the caller). */
export function joinMatches(
  join: NonNullable<TaskDefinition["join"]>,
  artifact: Pick<JoinCandidate, "name" | "tags">,
): boolean {
  if (join.artifact != null && !globToRegExp(join.artifact).test(artifact.name)) return false;
  return hasTags(artifact.tags, join.tags);
}

/**
 * Records the join of a task being created, in its transaction. With `since`, each cluster's
 * earliest matching artifact recorded since then arrives now; the join is `complete` at once
 * when every cluster has one.
 * @returns the deadline timer to enqueue after commit, or undefined when the join is complete.
 */
export async function insertJoin(
  trx: Trx,
  def: TaskDefinition & { join: NonNullable<TaskDefinition["join"]> },
  createdAt: Date,
): Promise<JoinTimer | undefined> {
  const dueAt = joinDeadlineOf(def.join.deadline, createdAt);
  // The definition was validated with the same clock moments later.
  if (dueAt == null) throw new Error(`Join deadline ${def.join.deadline} did not parse.`);
  const since = def.join.since == null ? null : joinSinceOf(def.join.since, createdAt);
  if (since === undefined) throw new Error(`Join since ${def.join.since} did not parse.`);
  await trx
    .insertInto("task_joins")
    .values({
      task_id: def.taskId,
      deadline: dueAt,
      at_deadline: def.join.atDeadline,
      state: "waiting",
      settled_at: null,
      since,
    })
    .execute();
  await trx
    .insertInto("task_join_clusters")
    .values(
      def.join.clusters.map((actorId, position) => ({
        task_id: def.taskId,
        actor_id: actorId,
        position,
        artifact_url: null,
        task_url: null,
        name: null,
        path: null,
        arrived_at: null,
      })),
    )
    .execute();
  if (since == null) return { taskId: def.taskId, dueAt };
  // Waits for arrivals from these clusters being applied now (see the module's note).
  await trx
    .selectFrom("following")
    .select("actor_id")
    .where("actor_id", "in", [...def.join.clusters].sort())
    .orderBy("actor_id")
    .forNoKeyUpdate()
    .execute();
  for (const [position, actorId] of def.join.clusters.entries()) {
    const found = await earliestMatch(trx, def.join, actorId, since);
    if (found != null) await deliver(trx, def.taskId, position, found);
  }
  return (await completeIfAllArrived(trx, def.taskId)) ? undefined : { taskId: def.taskId, dueAt };
}

/**
 * Marks the join of `taskId` complete when every cluster has delivered.
 * @returns whether it did.
 */
async function completeIfAllArrived(trx: Trx, taskId: string): Promise<boolean> {
  const waiting = await trx
    .selectFrom("task_join_clusters")
    .select("actor_id")
    .where("task_id", "=", taskId)
    .where("arrived_at", "is", null)
    .limit(1)
    .executeTakeFirst();
  if (waiting != null) return false;
  await trx
    .updateTable("task_joins")
    .set({ state: "complete", settled_at: new Date() })
    .where("task_id", "=", taskId)
    .execute();
  return true;
}

/** `glob` as a LIKE pattern that keeps at least what {@link globToRegExp} matches. */
function globToLike(glob: string): string {
  return glob.replace(/[\\%_*?]/g, (ch) => (ch === "*" ? "%" : ch === "?" ? "_" : `\\${ch}`));
}

/** The earliest artifact of `actorId` recorded at or after `since` that `join` counts. */
async function earliestMatch(
  trx: Trx,
  join: NonNullable<TaskDefinition["join"]>,
  actorId: string,
  since: Date,
): Promise<JoinCandidate | undefined> {
  const page = 100;
  for (let offset = 0; ; offset += page) {
    let query = trx
      .selectFrom("remote_artifacts")
      .select(["artifact_url", "task_url", "name", "tags"])
      .where("actor_id", "=", actorId)
      .where("received_at", ">=", since);
    if (join.artifact != null) query = query.where("name", "like", globToLike(join.artifact));
    if (join.tags != null) {
      query = query.where(sql<boolean>`tags @> ${JSON.stringify(join.tags)}::jsonb`);
    }
    const rows = await query
      .orderBy("received_at")
      .orderBy("artifact_url")
      .limit(page)
      .offset(offset)
      .execute();
    for (const r of rows) {
      const candidate = {
        actorId,
        artifactUrl: r.artifact_url,
        taskUrl: r.task_url,
        name: r.name,
        tags: r.tags,
      };
      // The SQL narrows; the glob and the tags decide, as for an arrival.
      if (joinMatches(join, candidate)) return candidate;
    }
    if (rows.length < page) return undefined;
  }
}

/**
 * Makes `artifact` the input of cluster number `position` of the join of `taskId`, unless that
 * cluster delivered already.
 * @returns whether it did.
 */
async function deliver(
  trx: Trx,
  taskId: string,
  position: number,
  artifact: JoinCandidate,
): Promise<boolean> {
  const path = joinInputPath(position, artifact.name);
  const arrived = await trx
    .updateTable("task_join_clusters")
    .set({
      artifact_url: artifact.artifactUrl,
      task_url: artifact.taskUrl,
      name: artifact.name,
      path,
      arrived_at: new Date(),
    })
    .where("task_id", "=", taskId)
    .where("actor_id", "=", artifact.actorId)
    .where("arrived_at", "is", null)
    .returning("task_id")
    .executeTakeFirst();
  if (arrived == null) return false;
  await trx
    .insertInto("task_inputs")
    .values({
      task_id: taskId,
      path,
      artifact_url: artifact.artifactUrl,
      task_url: artifact.taskUrl,
    })
    .execute();
  return true;
}

/**
 * Counts `artifact` in every waiting join that lists its cluster and has nothing from it yet,
 * making it an input of the joining task.
 * @returns the tasks whose join became complete (every cluster arrived).
 */
export async function recordJoinArrival(trx: Trx, artifact: JoinCandidate): Promise<string[]> {
  // Taken before the joins are read: a join with `since` being created for this cluster
  // meanwhile is then either seen here, or sees this artifact (see the module's note).
  await trx
    .selectFrom("following")
    .select("actor_id")
    .where("actor_id", "=", artifact.actorId)
    .forShare()
    .execute();
  const candidates = await trx
    .selectFrom("task_join_clusters as c")
    .innerJoin("task_joins as j", "j.task_id", "c.task_id")
    .innerJoin("tasks as t", "t.task_id", "c.task_id")
    .select(["c.task_id", "c.position", "t.definition"])
    .where("c.actor_id", "=", artifact.actorId)
    .where("c.arrived_at", "is", null)
    .where("j.state", "=", "waiting")
    // A task cancelled (or resolved otherwise) while it waited takes no more inputs.
    .where("t.state", "=", "unscheduled")
    .orderBy("c.task_id")
    .execute();
  const complete: string[] = [];
  for (const c of candidates) {
    const join = storedDefinition(c.definition).join;
    if (join == null || !joinMatches(join, artifact)) continue;
    // The join's row lock orders concurrent arrivals for one task: the last one sees the others.
    const locked = await trx
      .selectFrom("task_joins")
      .select("state")
      .where("task_id", "=", c.task_id)
      .forUpdate()
      .executeTakeFirst();
    if (locked?.state !== "waiting") continue;
    if (!(await deliver(trx, c.task_id, c.position, artifact))) continue;
    if (await completeIfAllArrived(trx, c.task_id)) complete.push(c.task_id);
  }
  return complete;
}

/**
 * The clusters of `clusters` this one neither follows nor asked to follow: their activities
 * would never be acted on, so a join on them is refused.
 */
export async function unfollowedClusters(trx: Trx, clusters: readonly string[]): Promise<string[]> {
  if (clusters.length === 0) return [];
  const followed = await trx
    .selectFrom("following")
    .select("actor_id")
    .where("actor_id", "in", [...new Set(clusters)])
    .where("state", "in", ["accepted", "pending"])
    .execute();
  const known = new Set(followed.map((f) => f.actor_id));
  return clusters.filter((c) => !known.has(c));
}

/** What a join on a cluster this one does not follow is told. */
export function unfollowedMessage(cluster: string): string {
  return `This cluster does not follow ${cluster}; follow it first (taskweb follow ${cluster}).`;
}

/** Timers of every join still waiting, to enqueue again after a start or a lost queue. */
export async function waitingJoinTimers(db: Db): Promise<JoinTimer[]> {
  const rows = await db
    .selectFrom("task_joins")
    .select(["task_id", "deadline"])
    .where("state", "=", "waiting")
    .execute();
  return rows.map((r) => ({ taskId: r.task_id, dueAt: new Date(r.deadline) }));
}

/** A task's join progress, or undefined when it has no join. */
export async function joinProgress(db: Db, taskId: string): Promise<JoinProgress | undefined> {
  const join = await db
    .selectFrom("task_joins")
    .innerJoin("tasks", "tasks.task_id", "task_joins.task_id")
    .select([
      "task_joins.state",
      "task_joins.deadline",
      "task_joins.at_deadline",
      "task_joins.settled_at",
      "task_joins.since",
      "tasks.definition",
    ])
    .where("task_joins.task_id", "=", taskId)
    .executeTakeFirst();
  if (join == null) return undefined;
  const clusters = await db
    .selectFrom("task_join_clusters")
    .selectAll()
    .where("task_id", "=", taskId)
    .orderBy("position")
    .execute();
  const def = storedDefinition(join.definition).join;
  const iso = (t: Date | string | null) => (t == null ? null : new Date(t).toISOString());
  return {
    state: join.state,
    deadline: new Date(join.deadline).toISOString(),
    ...(join.since != null ? { since: new Date(join.since).toISOString() } : {}),
    atDeadline: join.at_deadline,
    ...(def?.artifact != null ? { artifact: def.artifact } : {}),
    ...(def?.tags != null ? { tags: def.tags } : {}),
    clusters: clusters.map((c) => ({
      cluster: c.actor_id,
      arrived: c.arrived_at != null,
      artifactUrl: c.artifact_url,
      path: c.path,
      arrivedAt: iso(c.arrived_at),
    })),
    missing: clusters.filter((c) => c.arrived_at == null).map((c) => c.actor_id),
    settledAt: iso(join.settled_at),
  };
}
