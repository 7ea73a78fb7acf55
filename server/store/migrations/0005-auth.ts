/**
 * Access control: API clients (hashed tokens, scopes, expiry), roles, grants to remote
 * clusters (`actor:<url>` principals), deny rules, and the federation policy (how follow
 * requests are accepted, allowlist and blocklist). Artifacts may be private.
 * Never edit once landed: add a new numbered migration.
 */
import { type Kysely, sql } from "kysely";

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable("auth_clients")
    .addColumn("client_id", "text", (c) => c.primaryKey())
    .addColumn("description", "text", (c) => c.notNull().defaultTo(""))
    /** Hex SHA-256 of the token; the token itself is shown once and never stored. */
    .addColumn("token_hash", "text", (c) => c.notNull().unique())
    .addColumn("scopes", "jsonb", (c) => c.notNull())
    .addColumn("expires_at", "timestamptz")
    .addColumn("disabled", "boolean", (c) => c.notNull().defaultTo(false))
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("rotated_at", "timestamptz")
    .addColumn("last_used_at", "timestamptz")
    .execute();
  await db.schema
    .createTable("auth_roles")
    .addColumn("role_id", "text", (c) => c.primaryKey())
    .addColumn("description", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("scopes", "jsonb", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema
    .createTable("auth_grants")
    .addColumn("principal", "text", (c) => c.notNull())
    .addColumn("scope", "text", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("auth_grants_pkey", ["principal", "scope"])
    .execute();
  await db.schema
    .createTable("auth_deny_rules")
    .addColumn("principal", "text", (c) => c.notNull())
    .addColumn("scope", "text", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("auth_deny_rules_pkey", ["principal", "scope"])
    .execute();
  await db.schema
    .createTable("federation_actor_rules")
    /** `allow` or `block`. */
    .addColumn("list", "text", (c) => c.notNull())
    /** An actor URL, or an origin (`https://ci.example`) covering every actor on it. */
    .addColumn("pattern", "text", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("federation_actor_rules_pkey", ["list", "pattern"])
    .execute();
  await db.schema
    .createTable("federation_settings")
    .addColumn("key", "text", (c) => c.primaryKey())
    .addColumn("value", "text", (c) => c.notNull())
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema
    .alterTable("artifacts")
    .addColumn("private", "boolean", (c) => c.notNull().defaultTo(false))
    .execute();
}

export async function down(): Promise<void> {
  throw new Error("taskweb migrations only go forward; restore a backup to go back.");
}
