/**
 * Activities addressed to particular actors rather than published in the outbox: a Follow,
 * its Accept or Reject, the Undo of a Follow, the Update of the actor after a key rotation.
 * Each is written with its `deliveries` rows in the transaction of the change that causes
 * it, so that it is delivered like an outbox activity: at least once, whatever the queue
 * lost.
 * Never edit once landed: add a new numbered migration.
 */
import { type Kysely, sql } from "kysely";

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable("addressed_activities")
    .addColumn("activity_id", "text", (c) => c.primaryKey())
    .addColumn("activity", "jsonb", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

export async function down(): Promise<void> {
  throw new Error("taskweb migrations only go forward; restore a backup to go back.");
}
