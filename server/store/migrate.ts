/**
 * Numbered, append-only migrations. They are imported statically (not read from the
 * folder at run time) so that they work from any install location.
 * @module
 */
import { sql, type Kysely } from "kysely";
import type { DatabaseSchema } from "./schema.ts";
import { Migrator, type Migration, type MigrationResultSet } from "kysely/migration";
import * as m0001 from "./migrations/0001-initial.ts";
import * as m0002 from "./migrations/0002-inactive-tasks.ts";
import * as m0003 from "./migrations/0003-priorities-breakpoints-groups.ts";
import * as m0004 from "./migrations/0004-secrets.ts";
import * as m0005 from "./migrations/0005-auth.ts";
import * as m0006 from "./migrations/0006-dedupe-retention.ts";
import * as m0007 from "./migrations/0007-delivery.ts";
import * as m0008 from "./migrations/0008-history-indexes.ts";
import * as m0009 from "./migrations/0009-hooks-and-offers.ts";
import * as m0010 from "./migrations/0010-stable-key-ids.ts";
import * as m0011 from "./migrations/0011-addressed-activities.ts";
import * as m0012 from "./migrations/0012-task-joins.ts";
import * as m0013 from "./migrations/0013-relay-announces.ts";
import * as m0014 from "./migrations/0014-received-activity-objects.ts";
import * as m0015 from "./migrations/0015-consumed-input-digests.ts";
import * as m0016 from "./migrations/0016-join-since.ts";

/** Every migration by name, in order; exported for the tests of a migration's data changes. */
export const MIGRATIONS: Readonly<Record<string, Migration>> = {
  "0001-initial": m0001,
  "0002-inactive-tasks": m0002,
  "0003-priorities-breakpoints-groups": m0003,
  "0004-secrets": m0004,
  "0005-auth": m0005,
  "0006-dedupe-retention": m0006,
  "0007-delivery": m0007,
  "0008-history-indexes": m0008,
  "0009-hooks-and-offers": m0009,
  "0010-stable-key-ids": m0010,
  "0011-addressed-activities": m0011,
  "0012-task-joins": m0012,
  "0013-relay-announces": m0013,
  "0014-received-activity-objects": m0014,
  "0015-consumed-input-digests": m0015,
  "0016-join-since": m0016,
};

/** Thrown when a migration fails; the database is left at the last migration that passed. */
export class MigrationError extends Error {
  override readonly name = "MigrationError";
  constructor(
    readonly migration: string | undefined,
    options: { cause: unknown },
  ) {
    super(`Migration ${migration ?? "(unknown)"} failed: ${String(options.cause)}`, options);
  }
}

/**
 * Brings the database to the newest schema, in the connection's current PostgreSQL schema. Concurrent callers are safe: Kysely takes an
 * advisory lock on PostgreSQL, so several processes starting at once migrate once.
 * @returns the names of the migrations that ran now.
 */
export async function migrateToLatest(database: Kysely<DatabaseSchema>): Promise<string[]> {
  // Migrations see no table types: they create them.
  const db = database as unknown as Kysely<unknown>;
  const { rows } = await sql<{ schema: string }>`select current_schema() as schema`.execute(db);
  const migrator = new Migrator({
    db,
    // Named explicitly: Kysely looks for its tables in every schema otherwise, and would see
    // another cluster's tables in a shared database.
    migrationTableSchema: rows[0]?.schema ?? "public",
    provider: { getMigrations: () => Promise.resolve(MIGRATIONS) },
    migrationTableName: "taskweb_migrations",
    migrationLockTableName: "taskweb_migrations_lock",
  });
  const result: MigrationResultSet = await migrator.migrateToLatest();
  if (result.error != null) {
    const failed = result.results?.find((r) => r.status === "Error");
    throw new MigrationError(failed?.migrationName, { cause: result.error });
  }
  return (result.results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName);
}
