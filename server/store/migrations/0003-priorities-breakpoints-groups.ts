/**
 * Priorities, breakpoint tasks and task groups.
 * - `tasks.priority`: Taskcluster's seven levels; the queue hands out higher ones first.
 * - `tasks.breakpoint`: a task that waits for a person or an API call instead of a worker.
 * - `jobs.priority`: the embedded queue's order among due jobs (0 first, then 1, 2, …).
 * - `task_groups`: one row per group, so that its resolution is announced once each time
 *   the group resolves. Groups of existing tasks are filled in, resolved when all are.
 * Never edit once landed: add a new numbered migration.
 */
import { sql, type Kysely } from "kysely";

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .alterTable("tasks")
    .addColumn("priority", "text", (c) => c.notNull().defaultTo("lowest"))
    .execute();
  await db.schema
    .alterTable("tasks")
    .addColumn("breakpoint", "boolean", (c) => c.notNull().defaultTo(false))
    .execute();

  await db.schema
    .alterTable("jobs")
    .addColumn("priority", "integer", (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema.dropIndex("jobs_due").execute();
  await db.schema
    .createIndex("jobs_due")
    .on("jobs")
    .columns(["queue", "priority", "run_at"])
    .execute();

  await db.schema
    .createTable("task_groups")
    .addColumn("task_group_id", "text", (c) => c.primaryKey())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("resolved_at", "timestamptz")
    .addColumn("resolutions", "integer", (c) => c.notNull().defaultTo(0))
    .execute();
  await sql`
    insert into task_groups (task_group_id, created_at, resolved_at, resolutions)
    select task_group_id, min(created_at),
      case when bool_and(state in ('completed', 'failed', 'exception') or inactive)
        then max(resolved_at) end,
      case when bool_and(state in ('completed', 'failed', 'exception') or inactive)
        then 1 else 0 end
    from tasks group by task_group_id
  `.execute(db);
}

export async function down(): Promise<void> {
  throw new Error("taskweb migrations only go forward; restore a backup to go back.");
}
