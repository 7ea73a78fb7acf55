/**
 * Dedupe retention: the maintenance job deletes processed-activity ids older than the
 * configured retention (at least 30 days), by `received_at`, which this index serves.
 * Never edit once landed: add a new numbered migration.
 */
import type { Kysely } from "kysely";

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createIndex("inbox_processed_received_at")
    .on("inbox_processed")
    .column("received_at")
    .execute();
}

export async function down(): Promise<void> {
  throw new Error("taskweb migrations only go forward; restore a backup to go back.");
}
