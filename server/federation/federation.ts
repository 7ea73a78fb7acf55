/**
 * The cluster as an ActivityPub `Service` actor, built on Fedify: actor document with its
 * RSA and Ed25519 keys, WebFinger, NodeInfo, inbox and shared inbox, paged outbox,
 * followers and following, and the Follow / Accept / Reject / Undo handshake.
 * Taskweb's own activities are handled by `inbox.ts`.
 * @module
 */
import {
  createExponentialBackoffPolicy,
  createFederation,
  type Context,
  type Federation,
  type KvStore,
  type MessageQueue,
} from "@fedify/fedify";
import {
  Accept,
  Activity,
  Endpoints,
  Follow,
  isActor,
  Reject,
  Service,
  Undo,
  type Recipient,
} from "@fedify/vocab";
import { getLogger } from "@logtape/logtape";
import { sql, type Kysely } from "kysely";
import { PROTOCOL_VERSION } from "../../protocol/index.ts";
import type { DatabaseSchema } from "../store/schema.ts";
import type { ClusterUrls } from "./cluster-urls.ts";
import { loadOrCreateKeyPairs } from "./key-store.ts";
import { TaskwebActivity } from "./taskweb-activity.ts";

const logger = getLogger(["taskweb", "federation"]);

/** Items per outbox page. */
export const OUTBOX_PAGE_SIZE = 50;

/** Options for {@link createClusterFederation}. */
export interface ClusterFederationOptions {
  readonly db: Kysely<DatabaseSchema>;
  readonly kv: KvStore;
  /** Delivery queue; Fedify's outbox messages go here. */
  readonly queue: MessageQueue;
  readonly urls: ClusterUrls;
  readonly name: string;
  readonly version: string;
  readonly allowPrivateAddress: boolean;
  /** When true, this process does not consume the delivery queue (a `web` process). */
  readonly manuallyStartQueue: boolean;
  /** Handles taskweb activities that Fedify verified (see `inbox.ts`). */
  readonly onActivity: (ctx: Context<null>, activity: Activity) => Promise<void>;
  /**
   * Called for an Accept or Reject that answers no Follow of ours (an answer to an offer),
   * with the signer as `actorId`.
   */
  readonly onAnswer?: (
    kind: "accept" | "reject",
    actorId: string,
    objectId: string,
    detail: { result?: string | undefined; reason?: string | undefined },
  ) => Promise<void>;
  /** Called once a cluster this one follows accepted the follow. */
  readonly onFollowAccepted: (actorId: string) => Promise<void>;
  /**
   * Attempts and spacing of deliveries. Peers may be down for hours, so the horizon is days.
   * @defaultValue up to 16 retries, the first after 10 s, doubling to at most 12 h apart
   * (about 2.5–3 days in all)
   */
  readonly deliveryRetry?: { maxAttempts: number; initialDelayMs: number; maxDelayMs: number };
}

/** The Fedify federation of one cluster and helpers around it. */
export interface ClusterFederation {
  readonly federation: Federation<null>;
  /** A context for work outside a request (publishing, following). */
  context(): Context<null>;
  /** Sends a Follow to the cluster at `actorUrl` and records it as pending. */
  follow(actorUrl: string): Promise<{ actorId: string; state: string }>;
  /** Sends an Undo of our Follow and forgets the relation. */
  unfollow(actorUrl: string): Promise<boolean>;
  /** Hands one outbox activity to delivery for every follower. */
  publish(activityJson: Record<string, unknown>): Promise<void>;
}

/** Builds the cluster's Fedify federation. */
export function createClusterFederation(options: ClusterFederationOptions): ClusterFederation {
  const { db, urls, name } = options;
  const retry = options.deliveryRetry ?? {
    maxAttempts: 16,
    initialDelayMs: 10_000,
    maxDelayMs: 12 * 3600_000,
  };
  const federation = createFederation<null>({
    kv: options.kv,
    // No fanout queue: Fedify's fanout re-parses activities and drops taskweb's properties.
    // No inbox queue: an activity is applied inside the request, so a failure answers 5xx
    // and the sender retries.
    queue: { outbox: options.queue },
    manuallyStartQueue: options.manuallyStartQueue,
    origin: urls.origin,
    allowPrivateAddress: options.allowPrivateAddress,
    outboxRetryPolicy: createExponentialBackoffPolicy({
      maxAttempts: retry.maxAttempts,
      initialDelay: { milliseconds: retry.initialDelayMs },
      maxDelay: { milliseconds: retry.maxDelayMs },
    }),
    onOutboxError: (error, activity) => {
      logger.warn("Delivery of {activityId} failed: {error}", {
        activityId: activity?.id?.href,
        error: String(error),
      });
    },
  });

  let keyPairs: Promise<CryptoKeyPair[]> | undefined;
  const getKeyPairs = () => (keyPairs ??= loadOrCreateKeyPairs(db, name));

  federation
    .setActorDispatcher("/clusters/{identifier}", async (ctx, identifier) => {
      if (identifier !== name) return null;
      const keys = await ctx.getActorKeyPairs(identifier);
      return new Service({
        id: ctx.getActorUri(identifier),
        preferredUsername: identifier,
        name: `taskweb cluster ${identifier}`,
        summary: `A taskweb automation cluster (protocol v${PROTOCOL_VERSION}).`,
        inbox: ctx.getInboxUri(identifier),
        outbox: ctx.getOutboxUri(identifier),
        followers: ctx.getFollowersUri(identifier),
        following: ctx.getFollowingUri(identifier),
        endpoints: new Endpoints({ sharedInbox: ctx.getInboxUri() }),
        publicKey: keys[0]?.cryptographicKey ?? null,
        assertionMethods: keys.map((k) => k.multikey),
        manuallyApprovesFollowers: false,
      });
    })
    .setKeyPairsDispatcher(async (_ctx, identifier) =>
      identifier === name ? await getKeyPairs() : [],
    )
    .mapHandle((_ctx, username) => (username === name ? name : null));

  federation
    .setFollowersDispatcher(
      "/clusters/{identifier}/followers",
      async (_ctx, identifier, cursor) => {
        if (identifier !== name) return null;
        const offset = cursor == null ? 0 : Number(cursor);
        const rows = await db
          .selectFrom("followers")
          .selectAll()
          .where("state", "=", "accepted")
          .orderBy("actor_id")
          .offset(Number.isInteger(offset) && offset >= 0 ? offset : 0)
          .limit(cursor == null ? 1_000_000 : 100)
          .execute();
        const items: Recipient[] = rows.map((r) => ({
          id: new URL(r.actor_id),
          inboxId: new URL(r.inbox),
          endpoints: r.shared_inbox == null ? null : { sharedInbox: new URL(r.shared_inbox) },
        }));
        return {
          items,
          nextCursor: cursor != null && rows.length === 100 ? String(offset + 100) : null,
        };
      },
    )
    .setCounter(async () => {
      const row = await db
        .selectFrom("followers")
        .select((eb) => eb.fn.countAll<string | number>().as("n"))
        .where("state", "=", "accepted")
        .executeTakeFirstOrThrow();
      return Number(row.n);
    });

  federation
    .setFollowingDispatcher("/clusters/{identifier}/following", async (_ctx, identifier) => {
      if (identifier !== name) return null;
      const rows = await db
        .selectFrom("following")
        .select("actor_id")
        .where("state", "=", "accepted")
        .orderBy("actor_id")
        .execute();
      return { items: rows.map((r) => new URL(r.actor_id)) };
    })
    .setCounter(async () => {
      const row = await db
        .selectFrom("following")
        .select((eb) => eb.fn.countAll<string | number>().as("n"))
        .where("state", "=", "accepted")
        .executeTakeFirstOrThrow();
      return Number(row.n);
    });

  // The outbox is paged newest first; a cursor is the `seq` of the first item of the page.
  federation
    .setOutboxDispatcher("/clusters/{identifier}/outbox", async (_ctx, identifier, cursor) => {
      if (identifier !== name || cursor == null) return null;
      const before = cursor === "" ? null : Number(cursor);
      let query = db
        .selectFrom("outbox")
        .select(["seq", "activity"])
        .orderBy("seq", "desc")
        .limit(OUTBOX_PAGE_SIZE + 1);
      if (before != null && Number.isSafeInteger(before))
        query = query.where(sql<boolean>`seq < ${before}`);
      const rows = await query.execute();
      const page = rows.slice(0, OUTBOX_PAGE_SIZE);
      const last = page.at(-1);
      return {
        items: page.map((r) => TaskwebActivity.fromJson(r.activity)),
        nextCursor: rows.length > OUTBOX_PAGE_SIZE && last != null ? String(last.seq) : null,
      };
    })
    .setFirstCursor(() => "")
    .setCounter(async () => {
      const row = await db
        .selectFrom("outbox")
        .select((eb) => eb.fn.countAll<string | number>().as("n"))
        .executeTakeFirstOrThrow();
      return Number(row.n);
    });

  federation.setNodeInfoDispatcher("/nodeinfo/2.1", async () => {
    const row = await db
      .selectFrom("tasks")
      .select((eb) => eb.fn.countAll<string | number>().as("n"))
      .executeTakeFirstOrThrow();
    return {
      software: {
        name: "taskweb",
        version: options.version,
        homepage: new URL(urls.origin),
      },
      protocols: ["activitypub"],
      usage: { users: { total: 1 }, localPosts: Number(row.n), localComments: 0 },
      metadata: { taskwebProtocolVersion: PROTOCOL_VERSION },
    };
  });

  federation
    .setInboxListeners("/clusters/{identifier}/inbox", "/inbox")
    .on(Follow, async (ctx, follow) => {
      if (follow.id == null || follow.actorId == null || follow.objectId == null) return;
      if (follow.objectId.href !== urls.actor) return;
      const follower = await follow.getActor(ctx);
      if (!isActor(follower) || follower.id == null || follower.inboxId == null) return;
      if (follower.id.href !== follow.actorId.href) return;
      const followerInbox = follower.inboxId.href;
      const followId = follow.id.href;
      const now = new Date();
      await db
        .insertInto("followers")
        .values({
          actor_id: follower.id.href,
          inbox: followerInbox,
          shared_inbox: follower.endpoints?.sharedInbox?.href ?? null,
          follow_id: followId,
          state: "accepted",
          updated_at: now,
        })
        .onConflict((oc) =>
          oc.column("actor_id").doUpdateSet({
            inbox: followerInbox,
            shared_inbox: follower.endpoints?.sharedInbox?.href ?? null,
            follow_id: followId,
            state: "accepted",
            updated_at: now,
          }),
        )
        .execute();
      logger.info("{follower} now follows this cluster.", { follower: follower.id.href });
      await ctx.sendActivity(
        { identifier: name },
        follower,
        new Accept({
          id: new URL(`${urls.actor}#accepts/${crypto.randomUUID()}`),
          actor: ctx.getActorUri(name),
          object: follow,
        }),
      );
    })
    .on(Accept, async (_ctx, accept) => {
      // Match by id: Fedify refetches a cross-origin embedded Follow and gets the wrong object.
      const followId = accept.objectId?.href;
      const actorId = accept.actorId?.href;
      if (followId == null || actorId == null) return;
      const updated = await db
        .updateTable("following")
        .set({ state: "accepted", updated_at: new Date() })
        .where("follow_id", "=", followId)
        .where("actor_id", "=", actorId)
        .returning("actor_id")
        .executeTakeFirst();
      if (updated == null) {
        await options.onAnswer?.("accept", actorId, followId, { result: accept.resultId?.href });
        return;
      }
      logger.info("{actor} accepted our follow.", { actor: actorId });
      await options.onFollowAccepted(actorId);
    })
    .on(Reject, async (_ctx, reject) => {
      const followId = reject.objectId?.href;
      const actorId = reject.actorId?.href;
      if (followId == null || actorId == null) return;
      const updated = await db
        .updateTable("following")
        .set({ state: "rejected", updated_at: new Date() })
        .where("follow_id", "=", followId)
        .where("actor_id", "=", actorId)
        .returning("actor_id")
        .executeTakeFirst();
      if (updated == null) {
        const summary = reject.summary;
        await options.onAnswer?.("reject", actorId, followId, {
          reason: summary == null ? undefined : String(summary),
        });
      }
    })
    .on(Undo, async (_ctx, undo) => {
      const actorId = undo.actorId?.href;
      const objectId = undo.objectId?.href;
      if (actorId == null || objectId == null) return;
      // Only the follower itself can undo its follow (the signer is the activity's actor).
      await db
        .deleteFrom("followers")
        .where("actor_id", "=", actorId)
        .where("follow_id", "=", objectId)
        .execute();
    })
    .on(Activity, options.onActivity)
    .onError((_ctx, error) => {
      logger.error("Inbox listener failed: {error}", { error: String(error) });
    });

  const context = () => federation.createContext(new URL(urls.origin), null);

  return {
    federation,
    context,
    async follow(actorUrl) {
      const ctx = context();
      const actor = await ctx.lookupObject(actorUrl);
      if (!isActor(actor) || actor.id == null || actor.inboxId == null) {
        throw new Error(`${actorUrl} is not an ActivityPub actor.`);
      }
      if (actor.id.href === urls.actor) throw new Error("A cluster cannot follow itself.");
      const followId = `${urls.actor}#follows/${crypto.randomUUID()}`;
      const now = new Date();
      await db
        .insertInto("following")
        .values({
          actor_id: actor.id.href,
          inbox: actor.inboxId.href,
          shared_inbox: actor.endpoints?.sharedInbox?.href ?? null,
          follow_id: followId,
          state: "pending",
          updated_at: now,
        })
        .onConflict((oc) =>
          oc
            .column("actor_id")
            .doUpdateSet({ follow_id: followId, state: "pending", updated_at: now }),
        )
        .execute();
      await ctx.sendActivity(
        { identifier: name },
        actor,
        new Follow({ id: new URL(followId), actor: ctx.getActorUri(name), object: actor.id }),
      );
      return { actorId: actor.id.href, state: "pending" };
    },
    async unfollow(actorUrl) {
      const row = await db
        .selectFrom("following")
        .selectAll()
        .where("actor_id", "=", actorUrl)
        .executeTakeFirst();
      if (row == null) return false;
      const ctx = context();
      const recipient: Recipient = {
        id: new URL(row.actor_id),
        inboxId: new URL(row.inbox),
        endpoints: row.shared_inbox == null ? null : { sharedInbox: new URL(row.shared_inbox) },
      };
      await ctx.sendActivity(
        { identifier: name },
        recipient,
        new Undo({
          id: new URL(`${urls.actor}#undo/${crypto.randomUUID()}`),
          actor: ctx.getActorUri(name),
          object: new URL(row.follow_id),
        }),
      );
      await db.deleteFrom("following").where("actor_id", "=", actorUrl).execute();
      return true;
    },
    async publish(activityJson) {
      await context().sendActivity(
        { identifier: name },
        "followers",
        TaskwebActivity.fromJson(activityJson),
        { fanout: "skip", preferSharedInbox: true },
      );
    },
  };
}
