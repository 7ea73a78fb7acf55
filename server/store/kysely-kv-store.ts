/**
 * Fedify's `KvStore` on the database's `kv` table, on PGlite and PostgreSQL alike. Fedify
 * keeps its caches, idempotency keys and circuit-breaker state here.
 *
 * Keys are arrays of strings. Each part is stored as its JSON string literal followed by a
 * comma (`["a","b/c"]` → `"a","b/c",`). JSON literals end at their closing quote, so the
 * stored key of a prefix is a text prefix of the stored keys it covers, and `["a"]` never
 * covers `["ab"]`: `list(prefix)` is one `like 'prefix%'` query on the primary key. JSON
 * also escapes NUL, which PostgreSQL text cannot hold. (PostgreSQL uses the primary key's
 * index for such a `like` only under the C collation, which PGlite and the test databases
 * have; a database created with another collation needs a `text_pattern_ops` index.)
 *
 * Times come from the database's clock (`now()`), so processes with skewed clocks agree on
 * what has expired. Expired rows read as absent and are deleted when a read meets them.
 * @module
 */
import type { KvKey, KvStore, KvStoreListEntry, KvStoreSetOptions } from "@fedify/fedify";
import { sql, type Kysely } from "kysely";
import type { DatabaseSchema } from "./schema.ts";

/** Rows fetched per round trip by `list()`. */
const LIST_BATCH = 500;

/** The text stored in `kv.key` for `key`. */
export function encodeKvKey(key: readonly string[]): string {
  return key.map((part) => `${JSON.stringify(part)},`).join("");
}

/** The inverse of {@link encodeKvKey}. */
export function decodeKvKey(encoded: string): KvKey {
  return JSON.parse(`[${encoded.slice(0, -1)}]`) as unknown as KvKey;
}

function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}

function expiresAt(options: KvStoreSetOptions | undefined) {
  const ttl = options?.ttl;
  if (ttl == null) return null;
  const ms = ttl.total("milliseconds");
  return sql<Date>`now() + (${ms}::float8 * interval '1 millisecond')`;
}

const live = sql<boolean>`(expires_at is null or expires_at > now())`;

/**
 * Creates a Fedify `KvStore` over the `kv` table of `db`. A value of `undefined` is not
 * stored: setting it deletes the key, as reading an absent key gives `undefined`.
 */
export function createKyselyKvStore(
  db: Kysely<DatabaseSchema>,
): KvStore & Required<Pick<KvStore, "cas">> {
  async function deleteIfExpired(encoded: string): Promise<void> {
    await db
      .deleteFrom("kv")
      .where("key", "=", encoded)
      .where("expires_at", "<=", sql<Date>`now()`)
      .execute();
  }

  async function get<T = unknown>(key: KvKey): Promise<T | undefined> {
    const encoded = encodeKvKey(key);
    const row = await db
      .selectFrom("kv")
      .select(["value", live.as("live")])
      .where("key", "=", encoded)
      .executeTakeFirst();
    if (row == null) return undefined;
    if (!row.live) {
      await deleteIfExpired(encoded);
      return undefined;
    }
    return row.value as T;
  }

  return {
    get,

    async set(key, value, options) {
      const encoded = encodeKvKey(key);
      if (value === undefined) {
        await db.deleteFrom("kv").where("key", "=", encoded).execute();
        return;
      }
      const expires = expiresAt(options);
      await db
        .insertInto("kv")
        .values({ key: encoded, value: JSON.stringify(value), expires_at: expires })
        .onConflict((oc) =>
          oc.column("key").doUpdateSet((eb) => ({
            value: eb.ref("excluded.value"),
            expires_at: eb.ref("excluded.expires_at"),
          })),
        )
        .execute();
    },

    async delete(key) {
      await db.deleteFrom("kv").where("key", "=", encodeKvKey(key)).execute();
    },

    async cas(key, expectedValue, newValue, options) {
      const encoded = encodeKvKey(key);
      const expires = expiresAt(options);
      if (expectedValue === undefined) {
        if (newValue === undefined) return (await get(key)) === undefined;
        // Absent or expired: the insert wins; a live row blocks it.
        const result = await db
          .insertInto("kv")
          .values({ key: encoded, value: JSON.stringify(newValue), expires_at: expires })
          .onConflict((oc) =>
            oc
              .column("key")
              .doUpdateSet((eb) => ({
                value: eb.ref("excluded.value"),
                expires_at: eb.ref("excluded.expires_at"),
              }))
              .where(sql<boolean>`kv.expires_at is not null and kv.expires_at <= now()`),
          )
          .executeTakeFirst();
        return Number(result.numInsertedOrUpdatedRows ?? 0n) > 0;
      }
      // jsonb equality is deep equality that ignores object key order.
      const matches = sql<boolean>`value = ${JSON.stringify(expectedValue)}::jsonb and ${live}`;
      if (newValue === undefined) {
        const result = await db
          .deleteFrom("kv")
          .where("key", "=", encoded)
          .where(matches)
          .executeTakeFirst();
        return result.numDeletedRows > 0n;
      }
      const result = await db
        .updateTable("kv")
        .set({ value: JSON.stringify(newValue), expires_at: expires })
        .where("key", "=", encoded)
        .where(matches)
        .executeTakeFirst();
      return result.numUpdatedRows > 0n;
    },

    async *list(prefix?: KvKey): AsyncIterable<KvStoreListEntry> {
      const pattern = prefix == null ? undefined : `${escapeLike(encodeKvKey(prefix))}%`;
      let sweep = db.deleteFrom("kv").where("expires_at", "<=", sql<Date>`now()`);
      if (pattern != null) sweep = sweep.where(sql<boolean>`key like ${pattern} escape '\\'`);
      await sweep.execute();
      // Keyset pages: bounded memory, and rows set during the walk do not shift pages.
      let after: string | undefined;
      for (;;) {
        let query = db
          .selectFrom("kv")
          .select(["key", "value"])
          .where(live)
          .orderBy("key")
          .limit(LIST_BATCH);
        if (pattern != null) query = query.where(sql<boolean>`key like ${pattern} escape '\\'`);
        if (after != null) query = query.where("key", ">", after);
        const rows = await query.execute();
        for (const row of rows) yield { key: decodeKvKey(row.key), value: row.value };
        const last = rows.at(-1);
        if (last == null || rows.length < LIST_BATCH) return;
        after = last.key;
      }
    },
  };
}
