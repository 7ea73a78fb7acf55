/**
 * Relays: `relay_announces` records, per original activity, the `Announce` that re-published
 * it. An activity first applied through catch-up paging (which reads no proofs) is relayed
 * when its signed delivery arrives later, and only once however often it is delivered.
 * Never edit once landed: add a new numbered migration.
 */
import { type Kysely, sql } from "kysely";

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable("relay_announces")
    .addColumn("activity_id", "text", (c) => c.primaryKey())
    .addColumn("announce_id", "text", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

export async function down(): Promise<void> {
  throw new Error("taskweb migrations only go forward; restore a backup to go back.");
}
