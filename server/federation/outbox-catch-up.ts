/**
 * Catch-up by paging a followee's outbox: a cluster that was down longer than its followee
 * retried, or whose queue lost jobs, reads the followee's outbox (newest first) back to the
 * newest item it saw last time, and a little beyond it (an item that committed late appears
 * behind it), and applies what it missed, oldest first, through the same idempotent path as
 * the inbox.
 *
 * Trust: nothing here is signed per activity. The actor document, the outbox and its pages
 * are fetched over the cluster's checked fetch path from the followee's own origin (a page
 * served from, or redirected to, another origin is refused), so the items are what the
 * followee itself publishes; each must still name the followee as its actor and pass the
 * protocol's origin rules, as in the inbox.
 * @module
 */
import type { DocumentLoader } from "@fedify/fedify";
import { getLogger } from "@logtape/logtape";
import type { Kysely } from "kysely";
import type { DatabaseSchema } from "../store/schema.ts";
import { compactWithTaskwebContext, type ActivityApplier } from "./inbox.ts";

const logger = getLogger(["taskweb", "catch-up"]);

/** The queue of catch-up jobs (one per followee; its id is the followee's actor URL). */
export const CATCH_UP_QUEUE = "outbox-catch-up";

/** Pages read at most in one catch-up (at 50 items a page, 10,000 activities). */
export const MAX_CATCH_UP_PAGES = 200;

/**
 * How far behind the last item seen a catch-up reads again. A followee numbers its outbox
 * items when they are written and they become visible when their transactions commit, so an
 * item may appear behind one that was already read; such an item was published shortly
 * before it. Items published up to this long before the last one seen (and at most
 * {@link CATCH_UP_OVERLAP_ITEMS} of them) are read again, and those never processed applied.
 */
export const CATCH_UP_OVERLAP_MS = 10 * 60_000;

/** At most this many items behind the last one seen are read again. */
export const CATCH_UP_OVERLAP_ITEMS = 50;

/** What one catch-up did. */
export interface CatchUpResult {
  /** Items read from the outbox that were newer than the last one seen. */
  readonly read: number;
  /** Items applied now (not applied before through the inbox or an earlier catch-up). */
  readonly applied: number;
  /** Items refused: another actor, another origin, or invalid. */
  readonly refused: number;
}

/** Why a catch-up could not run. */
export class CatchUpError extends Error {
  override readonly name = "CatchUpError";
}

/** Options for {@link catchUpOutbox}. */
export interface CatchUpOptions {
  readonly db: Kysely<DatabaseSchema>;
  readonly loaders: { documentLoader: DocumentLoader; contextLoader: DocumentLoader };
  readonly apply: ActivityApplier;
}

function idOf(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (typeof value === "object" && value !== null) {
    const id =
      (value as { id?: unknown; "@id"?: unknown }).id ?? (value as { "@id"?: unknown })["@id"];
    return typeof id === "string" ? id : undefined;
  }
  return undefined;
}

function publishedOf(item: unknown): number | undefined {
  if (typeof item !== "object" || item === null) return undefined;
  const published = (item as { published?: unknown }).published;
  const time = typeof published === "string" ? Date.parse(published) : NaN;
  return Number.isNaN(time) ? undefined : time;
}

/** The items of `items` whose ids were never processed (applied or refused as duplicates). */
async function notProcessed(db: Kysely<DatabaseSchema>, items: unknown[]): Promise<unknown[]> {
  const ids = items.map(idOf).filter((id): id is string => id != null);
  if (ids.length === 0) return [];
  const known = new Set(
    (
      await db
        .selectFrom("inbox_processed")
        .select("activity_id")
        .where("activity_id", "in", ids)
        .execute()
    ).map((r) => r.activity_id),
  );
  return items.filter((item) => {
    const id = idOf(item);
    return id != null && !known.has(id);
  });
}

function itemsOf(page: Record<string, unknown>): unknown[] {
  const items = page.orderedItems ?? page.items ?? [];
  return Array.isArray(items) ? items : [items];
}

/** Pages `actorId`'s outbox since the last item seen and applies what is new. */
export async function catchUpOutbox(
  actorId: string,
  options: CatchUpOptions,
): Promise<CatchUpResult> {
  const { db, loaders } = options;
  const following = await db
    .selectFrom("following")
    .select(["state", "outbox_seen"])
    .where("actor_id", "=", actorId)
    .executeTakeFirst();
  if (following?.state !== "accepted") return { read: 0, applied: 0, refused: 0 };
  const origin = new URL(actorId).origin;
  const load = async (url: string): Promise<Record<string, unknown>> => {
    if (new URL(url).origin !== origin) {
      throw new CatchUpError(`${url} is not on ${actorId}'s origin; not read.`);
    }
    const { document, documentUrl } = await loaders.documentLoader(url);
    if (new URL(documentUrl).origin !== origin) {
      throw new CatchUpError(`${url} was served from ${documentUrl}; not read.`);
    }
    if (typeof document !== "object" || document === null || Array.isArray(document)) {
      throw new CatchUpError(`${url} is not a JSON object.`);
    }
    return document as Record<string, unknown>;
  };

  const actor = await load(actorId);
  const outboxUrl = idOf(actor.outbox);
  if (outboxUrl == null) throw new CatchUpError(`${actorId} has no outbox.`);
  const collection = await load(outboxUrl);
  let pageUrl = idOf(collection.first);
  const unseen: unknown[] = [];
  let newest: string | undefined;
  // Items behind the last one seen that may have been published after it was read (see
  // CATCH_UP_OVERLAP_MS), and the time the last one seen was published.
  const behind: unknown[] = [];
  let seenPublished: number | undefined;
  let reachedSeen = false;
  let done = false;
  for (let n = 0; pageUrl != null && n < MAX_CATCH_UP_PAGES && !done; n++) {
    const page = await load(pageUrl);
    for (const item of itemsOf(page)) {
      const id = idOf(item);
      newest ??= id;
      if (!reachedSeen) {
        if (id != null && id === following.outbox_seen) {
          reachedSeen = true;
          seenPublished = publishedOf(item);
          if (seenPublished == null) done = true;
        } else {
          unseen.push(item);
        }
      } else {
        const published = publishedOf(item);
        if (
          published == null ||
          published < seenPublished! - CATCH_UP_OVERLAP_MS ||
          behind.length >= CATCH_UP_OVERLAP_ITEMS
        ) {
          done = true;
        } else {
          behind.push(item);
        }
      }
      if (done) break;
    }
    pageUrl = idOf(page.next);
  }
  const missed = await notProcessed(db, behind);

  let applied = 0;
  let refused = 0;
  // Oldest first, as they were published.
  for (const item of [...unseen, ...missed].reverse()) {
    if (typeof item !== "object" || item === null) {
      refused++;
      continue;
    }
    let compacted: Record<string, unknown>;
    try {
      compacted = await compactWithTaskwebContext(item, loaders.contextLoader);
    } catch {
      refused++;
      continue;
    }
    const outcome = await options.apply(compacted, actorId);
    if (outcome.outcome === "applied") applied++;
    else if (outcome.reason !== "duplicate") refused++;
  }
  if (newest != null && newest !== following.outbox_seen) {
    await db
      .updateTable("following")
      .set({ outbox_seen: newest })
      .where("actor_id", "=", actorId)
      .execute();
  }
  if (applied > 0 || refused > 0) {
    logger.info("Caught up on {actor}'s outbox: {applied} applied, {refused} refused.", {
      actor: actorId,
      applied,
      refused,
    });
  }
  return { read: unseen.length + missed.length, applied, refused };
}
