/**
 * The cluster's key pairs, persisted in the database: RSA-2048 (HTTP signatures and Linked
 * Data signatures) and Ed25519 (Object Integrity Proofs). Created once, on first use, by
 * whichever process gets there first; every other process loads the same keys. A rotation
 * replaces both with new ones; the replaced keys stay published for a grace period after
 * the active ones (`retired_at` is when they were replaced). Each key has one id for life,
 * `<actor>#<fragment>` ({@link keyFragment}), so that what it signed before a rotation still
 * names it afterwards.
 * @module
 */
import { exportJwk, generateCryptoKeyPair, importJwk } from "@fedify/fedify";

/**
 * Generates a key pair. RSA keys are 2048-bit (Fedify's own default is 4096): verifiers
 * everywhere accept 2048, and signing with it is several times cheaper, which matters on
 * every delivery.
 */
async function generateKeyPair(algorithm: (typeof ALGORITHMS)[number]): Promise<CryptoKeyPair> {
  if (algorithm === "Ed25519") return await generateCryptoKeyPair("Ed25519");
  return await crypto.subtle.generateKey(
    {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: 2048,
      publicExponent: new Uint8Array([0x01, 0x00, 0x01]),
      hash: "SHA-256",
    },
    true,
    ["sign", "verify"],
  );
}
import { sql, type Kysely, type Transaction } from "kysely";
import type { DatabaseSchema } from "../store/schema.ts";

const ALGORITHMS = ["RSASSA-PKCS1-v1_5", "Ed25519"] as const;

/** A key pair of the cluster and the fragment of its id in the actor document. */
export interface ClusterKeyPair extends CryptoKeyPair {
  /** The key's id is `<actor>#<fragment>`, the same for the key's whole life. */
  readonly fragment: string;
  /** False for a replaced key still published in its grace period. */
  readonly active: boolean;
}

/**
 * The fragment of a key's id: `key-<row id>`, or the one stored with it (the keys active
 * before ids were stable keep the positional ids they were published under).
 */
export function keyFragment(row: { id: number; key_fragment: string | null }): string {
  return row.key_fragment ?? `key-${row.id}`;
}

/** Generates an active key pair of `algorithm` for `identifier` and stores it. */
async function insertNewKey(
  trx: Transaction<DatabaseSchema>,
  identifier: string,
  algorithm: (typeof ALGORITHMS)[number],
) {
  const pair = await generateKeyPair(algorithm);
  return await trx
    .insertInto("cluster_keys")
    .values({
      identifier,
      algorithm,
      private_jwk: JSON.stringify(await exportJwk(pair.privateKey)),
      public_jwk: JSON.stringify(await exportJwk(pair.publicKey)),
      retired_at: null,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

/**
 * Loads the key pairs of `identifier`, creating them if there are none: the active RSA and
 * Ed25519 pairs first (they sign), then the pairs replaced less than `graceMs` ago, newest
 * first (published so that what they signed can still be checked against them).
 */
export async function loadOrCreateKeyPairs(
  db: Kysely<DatabaseSchema>,
  identifier: string,
  graceMs = 0,
): Promise<ClusterKeyPair[]> {
  await db.transaction().execute(async (trx) => {
    // Serialises first-start key creation across processes sharing one database.
    await sql`select pg_advisory_xact_lock(hashtext(${`taskweb-keys:${identifier}`}))`.execute(trx);
    const existing = await trx
      .selectFrom("cluster_keys")
      .select("algorithm")
      .where("identifier", "=", identifier)
      .where("retired_at", "is", null)
      .execute();
    const missing = ALGORITHMS.filter((a) => !existing.some((row) => row.algorithm === a));
    for (const algorithm of missing) await insertNewKey(trx, identifier, algorithm);
  });
  return await readKeyPairs(db, identifier, graceMs);
}

/**
 * The key pairs of `identifier` as {@link loadOrCreateKeyPairs} orders them, read through
 * `db` (a transaction sees the keys it rotated before they are committed).
 * @throws when an active key is missing
 */
export async function readKeyPairs(
  db: Kysely<DatabaseSchema>,
  identifier: string,
  graceMs = 0,
): Promise<ClusterKeyPair[]> {
  const rows = await db
    .selectFrom("cluster_keys")
    .selectAll()
    .where("identifier", "=", identifier)
    .where("retired_at", "is", null)
    .orderBy("id")
    .execute();
  const pairs: ClusterKeyPair[] = [];
  for (const algorithm of ALGORITHMS) {
    const row = rows.find((r) => r.algorithm === algorithm);
    if (row == null) throw new Error(`No ${algorithm} key for ${identifier}`);
    pairs.push({
      privateKey: await importJwk(row.private_jwk, "private"),
      publicKey: await importJwk(row.public_jwk, "public"),
      fragment: keyFragment(row),
      active: true,
    });
  }
  if (graceMs > 0) {
    const replaced = await db
      .selectFrom("cluster_keys")
      .selectAll()
      .where("identifier", "=", identifier)
      .where("retired_at", ">", new Date(Date.now() - graceMs))
      .orderBy("retired_at", "desc")
      .orderBy("id")
      .execute();
    for (const row of replaced) {
      pairs.push({
        privateKey: await importJwk(row.private_jwk, "private"),
        publicKey: await importJwk(row.public_jwk, "public"),
        fragment: keyFragment(row),
        active: false,
      });
    }
  }
  return pairs;
}

/** What {@link rotateKeyPairs} did. */
export interface KeyRotationResult {
  /** Database ids of the new active keys. */
  readonly activated: number[];
  /** Database ids of the keys they replaced. */
  readonly replaced: number[];
  readonly rotatedAt: Date;
}

/**
 * Replaces the active key pairs of `identifier` with new ones, in one transaction; `within`
 * runs in it after the new keys are written (the actor's Update is written there).
 */
export async function rotateKeyPairs(
  db: Kysely<DatabaseSchema>,
  identifier: string,
  within?: (trx: Transaction<DatabaseSchema>) => Promise<void>,
): Promise<KeyRotationResult> {
  return await db.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(hashtext(${`taskweb-keys:${identifier}`}))`.execute(trx);
    const rotatedAt = new Date();
    const replaced = await trx
      .updateTable("cluster_keys")
      .set({ retired_at: rotatedAt })
      .where("identifier", "=", identifier)
      .where("retired_at", "is", null)
      .returning("id")
      .execute();
    const activated: number[] = [];
    for (const algorithm of ALGORITHMS) {
      activated.push((await insertNewKey(trx, identifier, algorithm)).id);
    }
    await within?.(trx);
    return { activated, replaced: replaced.map((r) => r.id), rotatedAt };
  });
}
