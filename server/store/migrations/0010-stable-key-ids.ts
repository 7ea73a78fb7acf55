/**
 * Stable key ids: each key row keeps one id for life, `<actor>#<key_fragment>`. A null
 * fragment means `key-<id>` (every key created from now on). The keys active at this
 * migration keep the ids they were published under until now, `main-key` (RSA) and
 * `multikey-2` (Ed25519), so that peers holding them see no change.
 * Never edit once landed: add a new numbered migration.
 */
import { type Kysely, sql } from "kysely";

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable("cluster_keys").addColumn("key_fragment", "text").execute();
  await sql`update cluster_keys set key_fragment = case algorithm
      when 'RSASSA-PKCS1-v1_5' then 'main-key' else 'multikey-2' end
    where retired_at is null`.execute(db);
  await db.schema
    .createIndex("cluster_keys_fragment")
    .on("cluster_keys")
    .columns(["identifier", "key_fragment"])
    .unique()
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropIndex("cluster_keys_fragment").execute();
  await db.schema.alterTable("cluster_keys").dropColumn("key_fragment").execute();
}
