/**
 * The digest each input was consumed with: `task_inputs.sha256` is set by the worker once it
 * has verified the bytes it gives the task's run, so that the task's published `inputs`
 * (protocol v1.4, spec/v1/provenance.md) name what the run consumed even if the publisher
 * later publishes other bytes under the same artifact. Null until a run fetched the input.
 * Never edit once landed: add a new numbered migration.
 */
import type { Kysely } from "kysely";

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable("task_inputs").addColumn("sha256", "text").execute();
}

export async function down(): Promise<void> {
  throw new Error("taskweb migrations only go forward; restore a backup to go back.");
}
