/**
 * The first schema: keys, Fedify's key-value store, the embedded job table, federation
 * relations, tasks with their runs and artifacts, the outbox, inbox dedupe, and what this
 * cluster knows of remote tasks. Never edit once landed: add a new numbered migration.
 */
import { type Kysely, sql } from "kysely";

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable("cluster_keys")
    .addColumn("id", "serial", (c) => c.primaryKey())
    .addColumn("identifier", "text", (c) => c.notNull())
    .addColumn("algorithm", "text", (c) => c.notNull())
    .addColumn("private_jwk", "jsonb", (c) => c.notNull())
    .addColumn("public_jwk", "jsonb", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("retired_at", "timestamptz")
    .execute();

  await db.schema
    .createTable("kv")
    .addColumn("key", "text", (c) => c.primaryKey())
    .addColumn("value", "jsonb", (c) => c.notNull())
    .addColumn("expires_at", "timestamptz")
    .execute();

  await db.schema
    .createTable("jobs")
    .addColumn("queue", "text", (c) => c.notNull())
    .addColumn("job_id", "text", (c) => c.notNull())
    .addColumn("data", "jsonb", (c) => c.notNull())
    .addColumn("run_at", "timestamptz", (c) => c.notNull())
    .addColumn("attempts", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("locked_until", "timestamptz")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("jobs_pk", ["queue", "job_id"])
    .execute();
  await db.schema.createIndex("jobs_due").on("jobs").columns(["queue", "run_at"]).execute();

  for (const table of ["followers", "following"] as const) {
    await db.schema
      .createTable(table)
      .addColumn("actor_id", "text", (c) => c.primaryKey())
      .addColumn("inbox", "text", (c) => c.notNull())
      .addColumn("shared_inbox", "text")
      .addColumn("follow_id", "text", (c) => c.notNull())
      .addColumn("state", "text", (c) => c.notNull())
      .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .execute();
  }

  await db.schema
    .createTable("tasks")
    .addColumn("task_id", "text", (c) => c.primaryKey())
    .addColumn("task_group_id", "text", (c) => c.notNull())
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("requires", "text", (c) => c.notNull())
    .addColumn("definition", "jsonb", (c) => c.notNull())
    .addColumn("retries", "integer", (c) => c.notNull())
    .addColumn("retries_left", "integer", (c) => c.notNull())
    .addColumn("deadline", "timestamptz", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("resolved_at", "timestamptz")
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex("tasks_group").on("tasks").column("task_group_id").execute();
  await db.schema.createIndex("tasks_state").on("tasks").column("state").execute();

  await db.schema
    .createTable("task_dependencies")
    .addColumn("task_id", "text", (c) => c.notNull().references("tasks.task_id"))
    .addColumn("dependency", "text", (c) => c.notNull())
    .addColumn("remote", "boolean", (c) => c.notNull())
    .addColumn("resolution", "text")
    .addPrimaryKeyConstraint("task_dependencies_pk", ["task_id", "dependency"])
    .execute();
  await db.schema
    .createIndex("task_dependencies_dependency")
    .on("task_dependencies")
    .column("dependency")
    .execute();

  await db.schema
    .createTable("task_inputs")
    .addColumn("task_id", "text", (c) => c.notNull().references("tasks.task_id"))
    .addColumn("path", "text", (c) => c.notNull())
    .addColumn("artifact_url", "text", (c) => c.notNull())
    .addColumn("task_url", "text", (c) => c.notNull())
    .addPrimaryKeyConstraint("task_inputs_pk", ["task_id", "path"])
    .execute();

  await db.schema
    .createTable("runs")
    .addColumn("task_id", "text", (c) => c.notNull().references("tasks.task_id"))
    .addColumn("run_id", "integer", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("reason_created", "text", (c) => c.notNull())
    .addColumn("reason_resolved", "text")
    .addColumn("worker_id", "text")
    .addColumn("taken_until", "timestamptz")
    .addColumn("scheduled_at", "timestamptz", (c) => c.notNull())
    .addColumn("started_at", "timestamptz")
    .addColumn("resolved_at", "timestamptz")
    .addColumn("exit_code", "integer")
    .addColumn("log", "text")
    .addPrimaryKeyConstraint("runs_pk", ["task_id", "run_id"])
    .execute();
  await db.schema.createIndex("runs_state").on("runs").column("state").execute();

  await db.schema
    .createTable("artifacts")
    .addColumn("task_id", "text", (c) => c.notNull().references("tasks.task_id"))
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("run_id", "integer", (c) => c.notNull())
    .addColumn("media_type", "text", (c) => c.notNull())
    .addColumn("size", "bigint", (c) => c.notNull())
    .addColumn("sha256", "text", (c) => c.notNull())
    .addColumn("content", "bytea", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("expires_at", "timestamptz", (c) => c.notNull())
    .addPrimaryKeyConstraint("artifacts_pk", ["task_id", "name"])
    .execute();

  await db.schema
    .createTable("outbox")
    .addColumn("seq", "bigserial", (c) => c.primaryKey())
    .addColumn("activity_id", "text", (c) => c.notNull().unique())
    .addColumn("types", "jsonb", (c) => c.notNull())
    .addColumn("activity", "jsonb", (c) => c.notNull())
    .addColumn("published_at", "timestamptz", (c) => c.notNull())
    .addColumn("fanned_out_at", "timestamptz")
    .execute();

  await db.schema
    .createTable("inbox_processed")
    .addColumn("activity_id", "text", (c) => c.primaryKey())
    .addColumn("actor_id", "text", (c) => c.notNull())
    .addColumn("types", "jsonb", (c) => c.notNull())
    .addColumn("received_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable("remote_tasks")
    .addColumn("task_url", "text", (c) => c.primaryKey())
    .addColumn("actor_id", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("resolved_at", "timestamptz")
    .addColumn("source", "text", (c) => c.notNull())
    .addColumn("updated_at", "timestamptz", (c) => c.notNull())
    .execute();

  await db.schema
    .createTable("remote_artifacts")
    .addColumn("artifact_url", "text", (c) => c.primaryKey())
    .addColumn("task_url", "text", (c) => c.notNull())
    .addColumn("actor_id", "text", (c) => c.notNull())
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("content_url", "text", (c) => c.notNull())
    .addColumn("sha256", "text", (c) => c.notNull())
    .addColumn("size", "bigint", (c) => c.notNull())
    .addColumn("media_type", "text", (c) => c.notNull())
    .addColumn("updated_at", "timestamptz", (c) => c.notNull())
    .execute();
}

export async function down(): Promise<void> {
  throw new Error("taskweb migrations only go forward; restore a backup to go back.");
}
