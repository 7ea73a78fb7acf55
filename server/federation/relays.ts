/**
 * Relaying with provenance (spec/v1/offers-and-relays.md).
 *
 * An aggregating cluster re-publishes what it received from its relay sources as an
 * `Announce` whose `object` is the original activity exactly as its cluster signed it,
 * Object Integrity Proof included. A follower of the aggregator acts on the original only
 * when (1) the proof verifies with a key of the original actor, fetched from that actor
 * (Fedify's `verifyObject`: every proof valid and the actor authenticated by one), and
 * (2) dereferencing the original activity's id on its own cluster returns the same
 * activity: the original cluster did publish it. Anything else changes nothing.
 * @module
 */
import type { DocumentLoader } from "@fedify/vocab-runtime";
import type { KeyObject } from "node:crypto";
import type { Kysely, Transaction } from "kysely";
import {
  CONTEXT,
  assertionMethodKey,
  newSlugId,
  sameOrigin,
  TASKWEB_NAMESPACE,
  verifyProof,
} from "../../protocol/index.ts";
import type { DatabaseSchema } from "../store/schema.ts";
import type { ClusterUrls } from "./cluster-urls.ts";

/** Why a relayed activity was refused. */
export type RelayRefusal =
  "malformed" | "proof-invalid" | "cross-origin" | "not-published" | "unreachable";

/** Result of {@link verifyRelayedActivity}. */
export type RelayVerification =
  | { readonly ok: true; readonly original: Record<string, unknown> }
  | { readonly ok: false; readonly reason: RelayRefusal; readonly detail: string };

/** Loaders for fetching the original actor's keys and the original activity. */
export interface RelayLoaders {
  readonly documentLoader: DocumentLoader;
  readonly contextLoader: DocumentLoader;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function idOf(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (isRecord(value) && typeof value.id === "string") return value.id;
  return undefined;
}

/**
 * A JSON-LD document with taskweb's full IRIs written as its short terms, and `{"id": x}`
 * references as `x`, for comparing two spellings of one activity. `@context` is dropped.
 */
function shortTerms(value: unknown): unknown {
  const short = (s: string) =>
    s.startsWith(TASKWEB_NAMESPACE) ? s.slice(TASKWEB_NAMESPACE.length) : s;
  if (typeof value === "string") return short(value);
  if (Array.isArray(value)) return value.map(shortTerms);
  if (!isRecord(value)) return value;
  const keys = Object.keys(value).filter((k) => k !== "@context");
  if (keys.length === 1 && keys[0] === "id") return value.id;
  return Object.fromEntries(keys.map((k) => [short(k), shortTerms(value[k])]));
}

/** The artifacts of a task as `id sha256` lines, in order, to compare two spellings. */
function digests(artifacts: unknown): string {
  return [artifacts ?? []]
    .flat()
    .map((x) => (isRecord(x) ? `${String(x.id)} ${String(x.sha256)}` : String(x)))
    .sort()
    .join("\n");
}

/** Terms whose values are sets: one element may have been written without its array. */
const SET_TERMS = new Set(["artifacts", "dependencies", "type"]);

function withSets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withSets);
  if (!isRecord(value)) return value;
  return Object.fromEntries(
    Object.entries(value).map(([k, v]) => [
      k,
      SET_TERMS.has(k) && !Array.isArray(v) && !(k === "type" && typeof v === "string")
        ? [withSets(v)]
        : withSets(v),
    ]),
  );
}

/**
 * An activity as taskweb's parser reads it: short terms, sets as arrays, taskweb's context.
 * The original's own spelling is what its proof covers; this form is for reading it.
 */
export function taskwebForm(value: unknown): Record<string, unknown> {
  return { "@context": CONTEXT, ...(withSets(shortTerms(value)) as Record<string, unknown>) };
}

/**
 * Verifies the original activity embedded in a relayed `Announce`: its proof, made by a
 * key of its own actor, and its publication on its own cluster. Never throws.
 */
export async function verifyRelayedActivity(
  announce: Record<string, unknown>,
  loaders: RelayLoaders,
): Promise<RelayVerification> {
  const original = announce.object;
  if (!isRecord(original) || typeof original.id !== "string" || typeof original.actor !== "string")
    return {
      ok: false,
      reason: "malformed",
      detail: "The Announce must embed the whole original activity.",
    };
  if (original.proof == null)
    return { ok: false, reason: "proof-invalid", detail: "The original carries no proof." };
  if (!sameOrigin(original.id, original.actor))
    return {
      ok: false,
      reason: "cross-origin",
      detail: "The original's id is not on its actor's origin.",
    };
  const proofs = [original.proof].flat();
  for (const proof of proofs) {
    const method = isRecord(proof) ? proof.verificationMethod : undefined;
    if (typeof method !== "string" || !sameOrigin(method, original.actor)) {
      return {
        ok: false,
        reason: "cross-origin",
        detail: "The proof's key is not on the original actor's origin.",
      };
    }
  }
  // The key: one of the original actor's assertion methods, fetched from the actor itself.
  const method = (proofs[0] as Record<string, unknown>).verificationMethod as string;
  let key: KeyObject | undefined;
  try {
    key = assertionMethodKey(
      (await loaders.documentLoader(original.actor)).document,
      original.actor,
      method,
    );
  } catch (error) {
    return { ok: false, reason: "unreachable", detail: `${original.actor}: ${String(error)}` };
  }
  if (key == null)
    return {
      ok: false,
      reason: "proof-invalid",
      detail: `${method} is not an Ed25519 assertion method of ${original.actor}.`,
    };
  if (proofs.length !== 1 || !verifyProof(original, key))
    return { ok: false, reason: "proof-invalid", detail: "The original's proof does not verify." };

  // Was it published? Its cluster serves every activity it published at its id.
  let served: unknown;
  try {
    served = (await loaders.documentLoader(original.id)).document;
  } catch (error) {
    return { ok: false, reason: "not-published", detail: `${original.id}: ${String(error)}` };
  }
  if (!isRecord(served))
    return { ok: false, reason: "not-published", detail: `${original.id} is not an activity.` };
  // Both are compared in taskweb's terms: a sender's JSON-LD library may have written the
  // delivered form with full IRIs (the proof covers that form, not this comparison).
  const a = taskwebForm(served);
  const b = taskwebForm(original);
  const ao = isRecord(a.object) ? a.object : {};
  const bo = isRecord(b.object) ? b.object : {};
  const same =
    a.id === b.id &&
    a.actor === b.actor &&
    JSON.stringify(a.type) === JSON.stringify(b.type) &&
    idOf(a.object) === idOf(b.object) &&
    ao.sha256 === bo.sha256 &&
    ao.taskState === bo.taskState &&
    digests(ao.artifacts) === digests(bo.artifacts);
  if (!same)
    return {
      ok: false,
      reason: "not-published",
      detail: `${original.id} as its cluster serves it differs from the relayed one.`,
    };
  return { ok: true, original };
}

/** Options for {@link createRelayService}. */
export interface RelayServiceOptions {
  readonly db: Kysely<DatabaseSchema>;
  readonly urls: ClusterUrls;
}

/** Relays of one cluster. */
export type RelayService = ReturnType<typeof createRelayService>;

/** Creates the relay service. */
export function createRelayService(options: RelayServiceOptions) {
  const { db, urls } = options;
  return {
    /** Relays the activities of the followed cluster `actorId` from now on. */
    async addSource(actorId: string): Promise<void> {
      await db
        .insertInto("relay_sources")
        .values({ actor_id: actorId })
        .onConflict((oc) => oc.column("actor_id").doNothing())
        .execute();
    },
    /** Stops relaying `actorId`; false when it was not relayed. */
    async removeSource(actorId: string): Promise<boolean> {
      const r = await db
        .deleteFrom("relay_sources")
        .where("actor_id", "=", actorId)
        .executeTakeFirst();
      return Number(r.numDeletedRows) > 0;
    },
    /** The relayed clusters. */
    async sources(): Promise<string[]> {
      const rows = await db
        .selectFrom("relay_sources")
        .select("actor_id")
        .orderBy("actor_id")
        .execute();
      return rows.map((r) => r.actor_id);
    },
    /**
     * In the inbox's transaction: when `actorId` is a relay source, writes an `Announce` of
     * `original` (as received, proof included) to the outbox, once per original activity.
     * A copy without a proof (read by catch-up paging) is not relayed; its signed delivery,
     * arriving later as a duplicate, is.
     * @returns the Announce's id, to hand to delivery after commit.
     */
    async announceInTransaction(
      trx: Transaction<DatabaseSchema>,
      actorId: string,
      original: Record<string, unknown>,
    ): Promise<string | undefined> {
      const source = await trx
        .selectFrom("relay_sources")
        .select("actor_id")
        .where("actor_id", "=", actorId)
        .executeTakeFirst();
      if (source == null || original.proof == null || typeof original.id !== "string")
        return undefined;
      const id = urls.activity(newSlugId());
      const first = await trx
        .insertInto("relay_announces")
        .values({ activity_id: original.id, announce_id: id })
        .onConflict((oc) => oc.column("activity_id").doNothing())
        .returning("announce_id")
        .executeTakeFirst();
      if (first == null) return undefined;
      const now = new Date();
      const announce = {
        "@context": "https://www.w3.org/ns/activitystreams",
        id,
        type: "Announce",
        actor: urls.actor,
        published: now.toISOString(),
        to: [urls.followers],
        object: original,
      };
      await trx
        .insertInto("outbox")
        .values({
          activity_id: id,
          types: JSON.stringify(["Announce"]),
          activity: JSON.stringify(announce),
          published_at: now,
          fanned_out_at: null,
        })
        .execute();
      return id;
    },
  };
}

/**
 * The bodies of the last requests the inbox guard admitted, by activity id, so that the inbox
 * listener sees what the sender sent rather than a re-serialisation (which a JCS proof would
 * not cover). Bounded: the listener takes a body within the same request.
 */
export function createAdmittedBodies(capacity = 1000) {
  const bodies = new Map<string, Record<string, unknown>>();
  return {
    remember(json: Record<string, unknown>): void {
      if (typeof json.id !== "string") return;
      bodies.delete(json.id);
      bodies.set(json.id, json);
      while (bodies.size > capacity) {
        const oldest = bodies.keys().next().value;
        if (oldest === undefined) break;
        bodies.delete(oldest);
      }
    },
    take(id: string): Record<string, unknown> | undefined {
      const json = bodies.get(id);
      bodies.delete(id);
      return json;
    },
  };
}
