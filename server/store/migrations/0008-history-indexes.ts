/**
 * Indexes for queue data mining (`GET /api/v1/stats`, `taskweb stats`): task and run
 * history by time, by worker and by tag.
 * - `tasks_created_at`, `runs_scheduled_at`: a period of history is a range scan.
 * - `runs_worker`: one worker's runs over a period.
 * - `tasks_tags`: tasks whose `definition.tags` contain a given name and value (`@>`).
 * Tags live in the task's definition (see server/domain/task-definition.ts); no data changes.
 * Never edit once landed: add a new numbered migration.
 */
import { sql, type Kysely } from "kysely";

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.createIndex("tasks_created_at").on("tasks").column("created_at").execute();
  await db.schema.createIndex("runs_scheduled_at").on("runs").column("scheduled_at").execute();
  await db.schema
    .createIndex("runs_worker")
    .on("runs")
    .columns(["worker_id", "scheduled_at"])
    .where(sql.ref("worker_id"), "is not", null)
    .execute();
  await sql`create index tasks_tags on tasks using gin ((definition -> 'tags') jsonb_path_ops)`.execute(
    db,
  );
}

export async function down(): Promise<void> {
  throw new Error("taskweb migrations only go forward; restore a backup to go back.");
}
