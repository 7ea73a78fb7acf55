/**
 * Which task each received activity was about: `inbox_processed.object_id` is the URL of the
 * task, or task group, that the applied activity reported on (an `ArtifactPublished`'s
 * artifact's task), written in the transaction that records the activity as processed.
 * A task's page lists the received activities whose object is one of its remote dependencies
 * or inputs; the index serves that lookup. Null for what does not report on a task (an
 * `Offer`) and for activities processed before this migration.
 * Never edit once landed: add a new numbered migration.
 */
import type { Kysely } from "kysely";

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable("inbox_processed").addColumn("object_id", "text").execute();
  await db.schema
    .createIndex("inbox_processed_object_id")
    .on("inbox_processed")
    .column("object_id")
    .execute();
}

export async function down(): Promise<void> {
  throw new Error("taskweb migrations only go forward; restore a backup to go back.");
}
