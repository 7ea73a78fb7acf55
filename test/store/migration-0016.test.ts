/**
 * Migration 0016 on a database that already holds remote artifacts: each keeps its metadata,
 * has no tags, and counts as first recorded when it was last updated (the newest moment known).
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { Migrator } from "kysely/migration";
import { openDatabase, sql, type Database } from "../../server/store/database.ts";
import { MIGRATIONS, migrateToLatest } from "../../server/store/migrate.ts";
import { describeEachBackend } from "../support/backends.ts";

describeEachBackend("migration 0016 (join since)", (backend) => {
  let database: Database;

  beforeAll(async () => {
    database = await openDatabase(backend.database());
  });
  afterAll(async () => {
    await database?.close();
  });

  it("dates existing remote artifacts by their updated_at and gives them no tags", async () => {
    const db = database.db;
    const { rows } = await sql<{ schema: string }>`select current_schema() as schema`.execute(db);
    const before = new Migrator({
      db: db as never,
      migrationTableSchema: rows[0]?.schema ?? "public",
      provider: {
        getMigrations: () =>
          Promise.resolve(
            Object.fromEntries(Object.entries(MIGRATIONS).filter(([n]) => n < "0016")),
          ),
      },
      migrationTableName: "taskweb_migrations",
      migrationLockTableName: "taskweb_migrations_lock",
    });
    const done = await before.migrateToLatest();
    expect(done.error).toBeUndefined();
    const updatedAt = new Date("2026-11-01T10:00:00.000Z");
    await sql`insert into remote_artifacts
        (artifact_url, task_url, actor_id, name, content_url, sha256, size, media_type, updated_at)
      values ('http://127.0.0.1:2/clusters/p/tasks/t/artifacts/a.csv', 'http://127.0.0.1:2/clusters/p/tasks/t',
        'http://127.0.0.1:2/clusters/p', 'a.csv', 'http://127.0.0.1:2/content/a.csv', ${"0".repeat(64)}, 1,
        'text/csv', ${updatedAt})`.execute(db);

    expect(await migrateToLatest(db)).toEqual(["0016-join-since"]);
    const row = await db
      .selectFrom("remote_artifacts")
      .select(["received_at", "updated_at", "tags", "name", "size"])
      .executeTakeFirstOrThrow();
    expect(new Date(row.received_at).toISOString()).toBe(updatedAt.toISOString());
    expect(new Date(row.updated_at).toISOString()).toBe(updatedAt.toISOString());
    expect(row.tags).toEqual({});
    expect(row).toMatchObject({ name: "a.csv" });
  });
});
