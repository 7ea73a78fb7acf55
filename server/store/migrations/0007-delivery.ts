/**
 * Delivery kept in the database: one row per (activity, inbox) until it is delivered or
 * given up, the health of every peer inbox (failures, circuit breaker, gone), followers a
 * peer said are gone (404/410), and how far this cluster has read each followee's outbox.
 * The queue only dispatches these rows, so a lost Redis loses no delivery.
 * Never edit once landed: add a new numbered migration.
 */
import { type Kysely, sql } from "kysely";

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable("deliveries")
    .addColumn("activity_id", "text", (c) => c.notNull())
    .addColumn("inbox", "text", (c) => c.notNull())
    .addColumn("attempts", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("failures", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("next_attempt_at", "timestamptz", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("delivered_at", "timestamptz")
    .addColumn("abandoned_at", "timestamptz")
    .addColumn("last_status", "integer")
    .addColumn("last_error", "text")
    .addPrimaryKeyConstraint("deliveries_pk", ["activity_id", "inbox"])
    .execute();
  await db.schema
    .createIndex("deliveries_open")
    .on("deliveries")
    .columns(["next_attempt_at"])
    .where(sql.ref("delivered_at"), "is", null)
    .where(sql.ref("abandoned_at"), "is", null)
    .execute();
  await db.schema
    .createTable("delivery_peers")
    .addColumn("inbox", "text", (c) => c.primaryKey())
    .addColumn("last_success_at", "timestamptz")
    .addColumn("last_failure_at", "timestamptz")
    .addColumn("consecutive_failures", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("circuit", "text", (c) => c.notNull().defaultTo("closed"))
    .addColumn("opened_at", "timestamptz")
    .addColumn("probe_until", "timestamptz")
    .addColumn("gone_at", "timestamptz")
    .execute();
  await db.schema.alterTable("followers").addColumn("gone_at", "timestamptz").execute();
  await db.schema.alterTable("following").addColumn("outbox_seen", "text").execute();
}

export async function down(): Promise<void> {
  throw new Error("taskweb migrations only go forward; restore a backup to go back.");
}
