/**
 * Joins that count artifacts recorded before the joining task was created (`join.since`).
 *
 * `remote_artifacts` gains the tags its task carried (`tags`, `{}` when none) and the moment
 * this cluster first recorded it (`received_at`, never changed by a later upsert, unlike
 * `updated_at`). Rows recorded before this migration take their `updated_at`, the newest
 * moment known for them. The index serves the look-up of a cluster's artifacts recorded since
 * a moment, oldest first.
 *
 * `task_joins.since` is the moment a join's `since` stands for (null without `since`), stored
 * like its deadline.
 * Never edit once landed: add a new numbered migration.
 */
import { sql, type Kysely } from "kysely";

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .alterTable("remote_artifacts")
    .addColumn("tags", "jsonb", (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .execute();
  await db.schema.alterTable("remote_artifacts").addColumn("received_at", "timestamptz").execute();
  await sql`update remote_artifacts set received_at = updated_at`.execute(db);
  await db.schema
    .alterTable("remote_artifacts")
    .alterColumn("received_at", (c) => c.setNotNull())
    .execute();
  await db.schema
    .createIndex("remote_artifacts_actor_received")
    .on("remote_artifacts")
    .columns(["actor_id", "received_at"])
    .execute();
  await db.schema.alterTable("task_joins").addColumn("since", "timestamptz").execute();
}

export async function down(): Promise<void> {
  throw new Error("taskweb migrations only go forward; restore a backup to go back.");
}
