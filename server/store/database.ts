/**
 * Opens the cluster's database: PostgreSQL through `pg` when a URL is given, otherwise
 * PGlite (PostgreSQL compiled to WebAssembly) in a data directory. Both speak the same SQL,
 * so every store above this file is written once.
 * @module
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { Kysely, PGliteDialect, PostgresDialect, sql } from "kysely";
import pg from "pg";
import type { DatabaseSchema } from "./schema.ts";

/** Which engine a {@link Database} runs on. */
export type DatabaseKind = "postgres" | "pglite";

/** Options for {@link openDatabase}. */
export interface DatabaseOptions {
  /** A `postgres://` URL. When absent the embedded engine is used. */
  readonly url?: string | undefined;
  /**
   * Directory for the embedded engine's files. `undefined` keeps the database in memory
   * (tests and benchmarks only: nothing survives the process).
   */
  readonly dataDir?: string | undefined;
  /**
   * PostgreSQL schema to use instead of `public`; created when missing. Lets several
   * clusters (or test runs) share one PostgreSQL database without seeing each other's rows.
   * @defaultValue `"public"`
   */
  readonly schema?: string | undefined;
  /** Size of the connection pool on PostgreSQL. @defaultValue 10 */
  readonly poolSize?: number | undefined;
}

/** An open database with the engine it runs on. */
export interface Database {
  readonly db: Kysely<DatabaseSchema>;
  readonly kind: DatabaseKind;
  /** Closes every connection (or the embedded engine). Safe to call twice. */
  close(): Promise<void>;
}

/**
 * The embedded engine's settings. Its shared buffers live in the process's own memory, so they
 * are kept small (PostgreSQL's default is 128 MB): an embedded cluster serves one machine's
 * work, and the operating system's page cache holds the data files anyway.
 */
const PGLITE_OPTIONS = { postgresqlconf: ["shared_buffers = 16MB"] };

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** Opens (and for PGlite, creates) the database described by `options`. */
export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  const schema = options.schema ?? "public";
  if (!SCHEMA_NAME.test(schema)) {
    throw new TypeError(
      `Invalid schema name ${JSON.stringify(schema)}: use [a-z0-9_], 63 at most.`,
    );
  }
  let closed = false;
  if (options.url != null) {
    if (schema !== "public") {
      // Create the schema before the pool pins search_path to it.
      const admin = new pg.Client({ connectionString: options.url });
      await admin.connect();
      try {
        await admin.query(`create schema if not exists "${schema}"`);
      } finally {
        await admin.end();
      }
    }
    const pool = new pg.Pool({
      connectionString: options.url,
      max: options.poolSize ?? 10,
      options: `-c search_path="${schema}"`,
    });
    // An idle client that loses its connection emits 'error'; without a listener it kills
    // the process. The next query gets a fresh connection.
    pool.on("error", () => {});
    // A client checked out between two queries (a transaction) that loses its connection
    // emits 'error' too; its next query fails, and the process must not die of it.
    pool.on("connect", (client) => {
      client.on("error", () => {});
    });
    const db = new Kysely<DatabaseSchema>({ dialect: new PostgresDialect({ pool }) });
    return {
      db,
      kind: "postgres",
      async close() {
        if (closed) return;
        closed = true;
        await db.destroy();
      },
    };
  }
  const { PGlite } = await import("@electric-sql/pglite");
  const dataDir = options.dataDir ?? "memory://";
  if (options.dataDir != null && !existsSync(join(options.dataDir, "PG_VERSION"))) {
    // Creating a database grows the engine's memory to about twice what serving one needs,
    // and WebAssembly memory never shrinks: create it with one instance, serve with another.
    await (await PGlite.create(dataDir, PGLITE_OPTIONS)).close();
  }
  const pglite = await PGlite.create(dataDir, PGLITE_OPTIONS);
  if (schema !== "public") {
    await pglite.exec(`create schema if not exists "${schema}"; set search_path to "${schema}"`);
  }
  const db = new Kysely<DatabaseSchema>({ dialect: new PGliteDialect({ pglite }) });
  return {
    db,
    kind: "pglite",
    async close() {
      if (closed) return;
      closed = true;
      await db.destroy();
      if (!pglite.closed) await pglite.close();
    },
  };
}

/** Reads `count(*)` the same on both engines (a string on pg, a number on PGlite). */
export function toCount(value: string | number | bigint | null | undefined): number {
  return value == null ? 0 : Number(value);
}

export { sql };
