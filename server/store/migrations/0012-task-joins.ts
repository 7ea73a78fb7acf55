/**
 * Joins: a task that waits for one matching artifact from each of a set of followed clusters,
 * with a deadline for stragglers (the task definition's `join`).
 *
 * `task_joins` holds one row per joining task: its deadline, what happens then (`run` with what
 * arrived, or `fail`), and its state: `waiting` until every cluster delivered or the deadline
 * passed, then `complete`, `closed` (ran without the stragglers) or `failed`. The deadline
 * timer on the queue is derived from the `waiting` rows, so a restart or a lost queue
 * enqueues it again.
 *
 * `task_join_clusters` holds one row per cluster of a join, in the order the definition lists
 * them (`position`); the artifact columns stay null until that cluster's first matching
 * artifact arrives. Only the first counts: a duplicate or a later match changes nothing.
 * Never edit once landed: add a new numbered migration.
 */
import { sql, type Kysely } from "kysely";

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable("task_joins")
    .addColumn("task_id", "text", (c) =>
      c.primaryKey().references("tasks.task_id").onDelete("cascade"),
    )
    .addColumn("deadline", "timestamptz", (c) => c.notNull())
    .addColumn("at_deadline", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("settled_at", "timestamptz")
    .execute();
  await db.schema
    .createIndex("task_joins_waiting")
    .on("task_joins")
    .column("deadline")
    .where(sql.ref("state"), "=", "waiting")
    .execute();
  await db.schema
    .createTable("task_join_clusters")
    .addColumn("task_id", "text", (c) =>
      c.notNull().references("task_joins.task_id").onDelete("cascade"),
    )
    .addColumn("actor_id", "text", (c) => c.notNull())
    .addColumn("position", "integer", (c) => c.notNull())
    .addColumn("artifact_url", "text")
    .addColumn("task_url", "text")
    .addColumn("name", "text")
    .addColumn("path", "text")
    .addColumn("arrived_at", "timestamptz")
    .addPrimaryKeyConstraint("task_join_clusters_pk", ["task_id", "actor_id"])
    .execute();
  await db.schema
    .createIndex("task_join_clusters_waiting")
    .on("task_join_clusters")
    .column("actor_id")
    .where(sql.ref("arrived_at"), "is", null)
    .execute();
}

export async function down(): Promise<void> {
  throw new Error("taskweb migrations only go forward; restore a backup to go back.");
}
