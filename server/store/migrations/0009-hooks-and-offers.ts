/**
 * Hooks: "whenever a followed cluster publishes a matching activity, submit this graph
 * template". A hook keeps every version of its template (`hook_templates`); a fire records
 * one matching activity, made in the transaction that records the activity as processed,
 * so a redelivered activity finds its fire and fires nothing more. A coalesced fire waits
 * (`pending`, until `due_at`) and is fired or superseded by a newer one.
 *
 * Offers of task graphs: `offers_sent` on the offering cluster (its answer, and the task
 * group's URL on the other cluster once accepted), `offers_received` on the cluster that
 * accepted one (which group it created, and the last `TaskGroupResolved` sent back).
 *
 * Relays: `relay_sources` lists the followed clusters whose activities this cluster
 * re-publishes (`Announce`, embedding the signed original); `relayed_activities` keeps, on
 * a follower, each original it accepted through a relay, with its proof (the provenance).
 * Never edit once landed: add a new numbered migration.
 */
import { type Kysely, sql } from "kysely";

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable("hooks")
    .addColumn("hook_id", "text", (c) => c.primaryKey())
    .addColumn("description", "text", (c) => c.notNull())
    .addColumn("filter", "jsonb", (c) => c.notNull())
    .addColumn("coalesce", "jsonb")
    .addColumn("parameters", "jsonb", (c) => c.notNull())
    .addColumn("template_version", "integer", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema
    .createTable("hook_templates")
    .addColumn("hook_id", "text", (c) =>
      c.notNull().references("hooks.hook_id").onDelete("cascade"),
    )
    .addColumn("version", "integer", (c) => c.notNull())
    .addColumn("template", "jsonb", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("hook_templates_pk", ["hook_id", "version"])
    .execute();
  await db.schema
    .createTable("hook_fires")
    .addColumn("fire_id", "text", (c) => c.primaryKey())
    .addColumn("hook_id", "text", (c) =>
      c.notNull().references("hooks.hook_id").onDelete("cascade"),
    )
    .addColumn("activity_id", "text", (c) => c.notNull())
    .addColumn("actor_id", "text", (c) => c.notNull())
    .addColumn("template_version", "integer", (c) => c.notNull())
    .addColumn("coalesce_key", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("event", "jsonb", (c) => c.notNull())
    .addColumn("task_group_id", "text")
    .addColumn("superseded_by", "text")
    .addColumn("error", "text")
    .addColumn("received_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("seq", "bigserial", (c) => c.notNull())
    .addColumn("due_at", "timestamptz")
    .addColumn("fired_at", "timestamptz")
    .addUniqueConstraint("hook_fires_activity", ["hook_id", "activity_id"])
    .execute();
  await db.schema
    .createIndex("hook_fires_pending")
    .on("hook_fires")
    .columns(["hook_id", "coalesce_key", "state"])
    .execute();
  await db.schema
    .createTable("offers_sent")
    .addColumn("offer_id", "text", (c) => c.primaryKey())
    .addColumn("target_actor", "text", (c) => c.notNull())
    .addColumn("task_group_id", "text", (c) => c.notNull())
    .addColumn("graph", "jsonb", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("task_group_url", "text")
    .addColumn("reason", "text")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema
    .createIndex("offers_sent_group")
    .on("offers_sent")
    .columns(["target_actor", "task_group_url"])
    .execute();
  await db.schema
    .createTable("offers_received")
    .addColumn("offer_id", "text", (c) => c.primaryKey())
    .addColumn("actor_id", "text", (c) => c.notNull())
    .addColumn("task_group_id", "text", (c) => c.notNull().unique())
    .addColumn("callback_activity_id", "text")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema
    .createTable("relay_sources")
    .addColumn("actor_id", "text", (c) => c.primaryKey())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema
    .createTable("relayed_activities")
    .addColumn("activity_id", "text", (c) => c.primaryKey())
    .addColumn("announce_id", "text", (c) => c.notNull())
    .addColumn("relayed_by", "text", (c) => c.notNull())
    .addColumn("original_actor", "text", (c) => c.notNull())
    .addColumn("activity", "jsonb", (c) => c.notNull())
    .addColumn("received_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

export async function down(): Promise<void> {
  throw new Error("taskweb migrations only go forward; restore a backup to go back.");
}
