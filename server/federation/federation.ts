/**
 * The cluster as an ActivityPub `Service` actor, built on Fedify: actor document with its
 * RSA and Ed25519 keys, WebFinger, NodeInfo, inbox and shared inbox, paged outbox,
 * followers and following, and the Follow / Accept / Reject / Undo handshake.
 * Taskweb's own activities are handled by `inbox.ts`.
 *
 * The handshake's activities and the actor's Update after a key rotation do not go through
 * the library's message queue: each is written with its deliveries in the transaction of the
 * change it announces (the follow, the approval, the rotation) and delivered by
 * `delivery.ts`, like the outbox, so that a queue that loses its data loses none of them.
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";
import {
  createExponentialBackoffPolicy,
  createFederation,
  exportJwk,
  SendActivityError,
  type Context,
  type DocumentLoader,
  type RequestContext,
  type Federation,
  type KvKey,
  type KvStore,
  type KvStoreSetOptions,
  type MessageQueue,
  signJsonLd,
  signObject,
  signRequest,
} from "@fedify/fedify";
import {
  Accept,
  Activity,
  CryptographicKey,
  Endpoints,
  Follow,
  isActor,
  Multikey,
  Reject,
  Service,
  Undo,
  Update,
  type Recipient,
} from "@fedify/vocab";
import { Temporal } from "@js-temporal/polyfill";
import { getLogger } from "@logtape/logtape";
import { SpanKind, SpanStatusCode, trace, type TracerProvider } from "@opentelemetry/api";
import { sql, type Kysely, type Transaction } from "kysely";
import { PROTOCOL_VERSION } from "../../protocol/index.ts";
import { OutboundFetchError, readLimited, type OutboundFetch } from "../outbound/checked-fetch.ts";
import type { DatabaseSchema } from "../store/schema.ts";
import type { ClusterUrls } from "./cluster-urls.ts";
import {
  followerInboxes,
  type ActivitySource,
  type Delivery,
  type DeliveryJob,
  type SendOutcome,
} from "./delivery.ts";
import type { FollowDecision } from "./follow-policy.ts";
import {
  loadOrCreateKeyPairs,
  readKeyPairs,
  rotateKeyPairs,
  type ClusterKeyPair,
  type KeyRotationResult,
} from "./key-store.ts";
import { TaskwebActivity } from "./taskweb-activity.ts";

const logger = getLogger(["taskweb", "federation"]);

/** Items per outbox page. */
export const OUTBOX_PAGE_SIZE = 50;

/**
 * How one delivery attempt to a peer's inbox ended:
 * - `delivered`: the inbox answered 2xx;
 * - `gone`: 404 or 410, never retried;
 * - `http-error`: another status (a retry follows while the policy allows);
 * - `unreachable`: no HTTP answer (connection refused, timeout, DNS); retried likewise.
 */
export type DeliveryOutcome = "delivered" | "gone" | "http-error" | "unreachable";

/** One delivery attempt, as {@link ClusterFederationOptions.onDelivery} hears of it. */
export interface DeliveryAttempt {
  /** The inbox's host (`host:port`): the peer, with bounded cardinality. */
  readonly peer: string;
  readonly outcome: DeliveryOutcome;
  /** The HTTP status, when the inbox answered. */
  readonly status?: number;
  /** 1 for the first attempt. */
  readonly attempt: number;
}

/** Options for {@link createClusterFederation}. */
export interface ClusterFederationOptions {
  readonly db: Kysely<DatabaseSchema>;
  readonly kv: KvStore;
  /**
   * Fedify's outbox queue. Nothing is sent through it any more (see `delivery.ts`); it drains
   * messages an earlier version queued.
   */
  readonly queue: MessageQueue;
  readonly urls: ClusterUrls;
  readonly name: string;
  readonly version: string;
  /**
   * The loaders every document, context and key fetch goes through (the checked fetch, see
   * server/outbound/); Fedify's own loaders are never used.
   */
  readonly loaders: {
    readonly documentLoader: DocumentLoader;
    readonly contextLoader: DocumentLoader;
    readonly authenticated: (identity: { keyId: URL; privateKey: CryptoKey }) => DocumentLoader;
  };
  /** True when deliveries to `url` would reach a permitted address (checked on Follow). */
  readonly isDeliverable: (url: string) => Promise<boolean>;
  /**
   * Writes the deliveries of an addressed activity inside a transaction and enqueues them
   * after it (see `delivery.ts`): Follow, Accept, Reject, Undo and Update go this way.
   */
  readonly deliveries: Pick<Delivery, "address" | "dispatch">;
  /**
   * The checked fetch deliveries are POSTed through: the address actually connected to is
   * checked against the cluster's policy and allowlist, and redirects are not followed.
   */
  readonly deliveryFetch: OutboundFetch;
  /** When true, this process does not consume the delivery queue (a `web` process). */
  readonly manuallyStartQueue: boolean;
  /** After a rotation, how long the replaced keys stay published. @defaultValue 7 days */
  readonly keyGraceMs?: number;
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
  /** Called when a cluster (re)follows this one, with its delivery inbox. */
  readonly onFollowed?: (inbox: string) => Promise<void>;
  /**
   * Attempts and spacing of deliveries. Peers may be down for hours, so the horizon is days.
   * @defaultValue up to 16 retries, the first after 10 s, doubling to at most 12 h apart
   * (about 2.5–3 days in all)
   */
  readonly deliveryRetry?: { maxAttempts: number; initialDelayMs: number; maxDelayMs: number };
  /**
   * Decides each Follow (see `follow-policy.ts`): accepted at once, kept pending for an
   * administrator, or rejected. @defaultValue every Follow is accepted
   */
  readonly followPolicy?: {
    decide(actorId: string): Promise<FollowDecision>;
    acceptance(): Promise<string>;
    isBlocked(actorId: string): Promise<boolean>;
  };
  /** Told of every delivery attempt this process makes (metrics, logs). */
  readonly onDelivery?: (attempt: DeliveryAttempt) => void;
  /**
   * Where Fedify's OpenTelemetry spans go (`activitypub.inbox`, signatures, fetches, …), and
   * the `activitypub.send_activity` span of each delivery.
   * @defaultValue the globally registered provider (`trace.getTracerProvider()`), a no-op
   * unless the process registered an OpenTelemetry SDK
   */
  readonly tracerProvider?: TracerProvider;
}

/** What the outbox listener learnt about the message it is delivering. */
interface DeliveryState {
  error?: unknown;
}

/**
 * Wraps the delivery queue so that each outbox message's fate is known: Fedify reports a
 * failed attempt through `onOutboxError`, inside the handler's asynchronous context, and
 * re-enqueues the message itself; an attempt that reported nothing was delivered.
 */
function observedQueue(
  queue: MessageQueue,
  delivering: AsyncLocalStorage<DeliveryState>,
  onDelivery: ((attempt: DeliveryAttempt) => void) | undefined,
): MessageQueue {
  if (onDelivery == null) return queue;
  const observed: MessageQueue = {
    ...(queue.nativeRetrial != null ? { nativeRetrial: queue.nativeRetrial } : {}),
    enqueue: (message, options) => queue.enqueue(message, options),
    listen: (handler, options) =>
      queue.listen(async (message: unknown) => {
        const m = message as { type?: unknown; inbox?: unknown; attempt?: unknown };
        if (m.type !== "outbox" || typeof m.inbox !== "string") {
          await handler(message);
          return;
        }
        const state: DeliveryState = {};
        await delivering.run(state, () => handler(message));
        let peer: string;
        try {
          peer = new URL(m.inbox).host;
        } catch {
          peer = "invalid";
        }
        const attempt = (typeof m.attempt === "number" ? m.attempt : 0) + 1;
        const error = state.error;
        if (error == null) {
          onDelivery({ peer, outcome: "delivered", attempt });
        } else if (error instanceof SendActivityError) {
          const gone = error.statusCode === 404 || error.statusCode === 410;
          onDelivery({
            peer,
            outcome: gone ? "gone" : "http-error",
            status: error.statusCode,
            attempt,
          });
        } else {
          onDelivery({ peer, outcome: "unreachable", attempt });
        }
      }, options),
  };
  if (queue.enqueueMany != null) {
    const many = queue.enqueueMany.bind(queue);
    observed.enqueueMany = (messages, options) => many(messages, options);
  }
  if (queue.getDepth != null) {
    const depth = queue.getDepth.bind(queue);
    observed.getDepth = () => depth();
  }
  return observed;
}

/**
 * Writes an addressed activity (an `Activity`, or a taskweb activity's JSON) and its
 * deliveries to `inboxes` within the transaction given with it.
 */
export type Address = (
  activity: Activity | Record<string, unknown>,
  inboxes: readonly string[],
) => Promise<void>;

/** The Fedify federation of one cluster and helpers around it. */
export interface ClusterFederation {
  readonly federation: Federation<null>;
  /** A context for work outside a request (publishing, following). */
  context(): Context<null>;
  /** Sends a Follow to the cluster at `actorUrl` and records it as pending. */
  follow(actorUrl: string): Promise<{ actorId: string; state: string }>;
  /**
   * Runs `change` in one transaction with the deliveries of the activities it addresses (an
   * `Activity`, or a taskweb activity's JSON as `protocol/` built it, sent with every term it
   * has), then enqueues those deliveries.
   */
  commit<T>(change: (trx: Transaction<DatabaseSchema>, address: Address) => Promise<T>): Promise<T>;
  /** Sends an Undo of our Follow and forgets the relation. */
  unfollow(actorUrl: string): Promise<boolean>;
  /**
   * Replaces the cluster's key pairs with new ones and sends an `Update` of the actor to
   * every follower; the replaced keys stay published for the grace period.
   */
  rotateKeys(): Promise<
    KeyRotationResult & { readonly keyIds: string[]; readonly graceUntil: Date }
  >;
  /**
   * The active keys (`keyId`, private JWK), RSA first: a delivery queued before a rotation
   * is signed with these when it is sent.
   */
  signingKeys(): Promise<{ keyId: string; privateKey: JsonWebKey }[]>;
  /**
   * Signs one activity (from the outbox, or addressed) and POSTs it to one inbox now;
   * reports how that went.
   */
  deliver(
    activityJson: Record<string, unknown>,
    inbox: string,
    source?: ActivitySource,
  ): Promise<SendOutcome>;
  /**
   * Accepts a pending Follow from `actorId` (sends the Accept).
   * @returns false when no Follow from that actor is pending
   */
  approveFollower(actorId: string): Promise<boolean>;
  /**
   * Rejects the Follow from `actorId`, pending or accepted: sends a Reject and forgets the
   * follower, so nothing is delivered to it any more.
   * @returns false when the actor is not a follower, pending or accepted
   */
  rejectFollower(actorId: string): Promise<boolean>;
}

/** Signed activity bodies kept for deliveries still to come (the newest ones). */
const SIGNED_BODIES_KEPT = 64;

/** How long one delivery POST may take, in ms (also its idle limit: an inbox answers once it
 * has handled the activity). */
const DELIVERY_TIMEOUT_MS = 30_000;

/** The most of an inbox's answer that is read (for the delivery's error), in bytes. */
const DELIVERY_ANSWER_BYTES = 64 * 1024;

type HttpSignatureSpec = "rfc9421" | "draft-cavage-http-signatures-12";

/** How long a process signs with the keys it loaded before it reads them again, in ms. */
export const KEY_RELOAD_MS = 5000;

/** True when `json`'s context defines taskweb's terms (`protocol/` built it). */
function hasTaskwebContext(json: Record<string, unknown>): boolean {
  return [json["@context"]]
    .flat()
    .some((c) => typeof c === "object" && c !== null && !Array.isArray(c) && "tw" in c);
}

/**
 * Where an `Undo` of a `Follow` that had not arrived is remembered, and for how long: longer
 * than any sender retries a delivery (the reference implementation's horizon is days).
 */
function undoneFollowKey(followId: string): KvKey {
  return ["taskweb", "undone-follow", followId];
}
// The library's types name the standard Temporal; at run time it uses this same polyfill.
const UNDONE_FOLLOW_KEPT = Temporal.Duration.from({ days: 30 }) as unknown as NonNullable<
  KvStoreSetOptions["ttl"]
>;

/** Builds the cluster's Fedify federation. */
export function createClusterFederation(options: ClusterFederationOptions): ClusterFederation {
  const { db, urls, name } = options;
  const retry = options.deliveryRetry ?? {
    maxAttempts: 16,
    initialDelayMs: 10_000,
    maxDelayMs: 12 * 3600_000,
  };
  const delivering = new AsyncLocalStorage<DeliveryState>();
  const federation = createFederation<null>({
    kv: options.kv,
    // No fanout queue: Fedify's fanout re-parses activities and drops taskweb's properties.
    // No inbox queue: an activity is applied inside the request, so a failure answers 5xx
    // and the sender retries.
    queue: { outbox: observedQueue(options.queue, delivering, options.onDelivery) },
    ...(options.tracerProvider != null ? { tracerProvider: options.tracerProvider } : {}),
    manuallyStartQueue: options.manuallyStartQueue,
    origin: urls.origin,
    documentLoaderFactory: () => options.loaders.documentLoader,
    contextLoaderFactory: () => options.loaders.contextLoader,
    // Fedify names an actor's keys by position; this cluster's fetches are signed under the
    // key's own id.
    authenticatedDocumentLoaderFactory: (identity) =>
      options.loaders.authenticated({
        keyId: keyIds.get(identity.privateKey) ?? identity.keyId,
        privateKey: identity.privateKey,
      }),
    outboxRetryPolicy: createExponentialBackoffPolicy({
      maxAttempts: retry.maxAttempts,
      initialDelay: { milliseconds: retry.initialDelayMs },
      maxDelay: { milliseconds: retry.maxDelayMs },
    }),
    onOutboxError: (error, activity) => {
      const state = delivering.getStore();
      if (state != null) state.error = error;
      logger.warn("Delivery of {activityId} failed: {error}", {
        activityId: activity?.id?.href,
        error: String(error),
      });
    },
  });

  const graceMs = options.keyGraceMs ?? 7 * 86_400_000;
  // Loaded again every few seconds: another process may have rotated the keys.
  let keyPairs: { at: number; pairs: Promise<ClusterKeyPair[]> } | undefined;
  // Inside a rotation's transaction, the keys that transaction wrote (for the Update).
  const rotating = new AsyncLocalStorage<Promise<ClusterKeyPair[]>>();
  const getKeyPairs = () => {
    const uncommitted = rotating.getStore();
    if (uncommitted != null) return uncommitted;
    if (keyPairs == null || Date.now() - keyPairs.at > KEY_RELOAD_MS) {
      const pairs = loadOrCreateKeyPairs(db, name, graceMs).then((loaded) => {
        for (const p of loaded) keyIds.set(p.privateKey, keyIdOf(p));
        return loaded;
      });
      pairs.catch(() => (keyPairs = undefined));
      keyPairs = { at: Date.now(), pairs };
    }
    return keyPairs.pairs;
  };
  /**
   * Each key's id is its own for life (`<actor>#<fragment>`): Fedify's ids are positions in
   * the list, which a rotation shifts, so this cluster signs and publishes under these.
   */
  const keyIdOf = (pair: ClusterKeyPair) => new URL(`#${pair.fragment}`, urls.actor);
  /** This cluster's private keys → their ids, for the fetches Fedify signs. */
  const keyIds = new WeakMap<CryptoKey, URL>();
  /** The active keys (RSA first), to sign with. */
  const senderKeys = async () =>
    (await getKeyPairs())
      .filter((p) => p.active)
      .map((p) => ({ keyId: keyIdOf(p), privateKey: p.privateKey }));

  const manuallyApproves = async () =>
    options.followPolicy != null && (await options.followPolicy.acceptance()) !== "auto";
  /** The actor document; `manual` is given inside a transaction, which must not read `db`. */
  const buildActor = async (ctx: Context<null>, identifier: string, manual?: boolean) => {
    const keys = await getKeyPairs();
    const owner = ctx.getActorUri(identifier);
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
      // The active RSA key first, then any replaced one still in its grace period, each under
      // its own id. An RSA key is also a Multikey, under a second id (a JSON-LD node has one).
      publicKeys: keys
        .filter((k) => k.privateKey.algorithm.name === "RSASSA-PKCS1-v1_5")
        .map((k) => new CryptographicKey({ id: keyIdOf(k), owner, publicKey: k.publicKey })),
      assertionMethods: keys.map(
        (k) =>
          new Multikey({
            id:
              k.privateKey.algorithm.name === "Ed25519"
                ? keyIdOf(k)
                : new URL(`${keyIdOf(k).href}-multikey`),
            controller: owner,
            publicKey: k.publicKey,
          }),
      ),
      manuallyApprovesFollowers: manual ?? (await manuallyApproves()),
    });
  };

  /**
   * Runs `change` in one transaction with the deliveries of the activities it addresses,
   * then enqueues those deliveries.
   */
  const commit = async <T>(
    change: (trx: Transaction<DatabaseSchema>, address: Address) => Promise<T>,
  ): Promise<T> => {
    const jobs: DeliveryJob[] = [];
    const result = await db.transaction().execute(async (trx) => {
      jobs.length = 0;
      return await change(trx, async (activity, inboxes) => {
        const json =
          activity instanceof Activity
            ? ((await activity.toJsonLd({
                format: "compact",
                contextLoader: options.loaders.contextLoader,
              })) as Record<string, unknown>)
            : activity;
        jobs.push(...(await options.deliveries.address(trx, json, inboxes)));
      });
    });
    await options.deliveries.dispatch(jobs);
    return result;
  };

  federation
    .setActorDispatcher("/clusters/{identifier}", async (ctx, identifier) =>
      identifier === name ? await buildActor(ctx, identifier) : null,
    )
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

  /** The activities among `activities` that name a private artifact of this cluster. */
  const privateArtifactsNamed = async (
    activities: readonly Record<string, unknown>[],
  ): Promise<Set<Record<string, unknown>>> => {
    const taskPrefix = urls.task("");
    const taskIdOf = (url: unknown) =>
      typeof url === "string" && url.startsWith(taskPrefix)
        ? decodeURIComponent(url.slice(taskPrefix.length))
        : undefined;
    const artifactUrls = (a: Record<string, unknown>): string[] => {
      const object = a.object as Record<string, unknown> | undefined;
      if (object == null || typeof object !== "object") return [];
      const list = Array.isArray(object.artifacts) ? (object.artifacts as unknown[]) : [object];
      return list.flatMap((x) =>
        typeof x === "object" && x != null && typeof (x as { id?: unknown }).id === "string"
          ? [(x as { id: string }).id]
          : [],
      );
    };
    const taskIds = new Set<string>();
    for (const a of activities) {
      const object = a.object as Record<string, unknown> | undefined;
      for (const id of [taskIdOf(object?.id), taskIdOf(object?.task)]) {
        if (id != null) taskIds.add(id);
      }
    }
    if (taskIds.size === 0) return new Set();
    const privates = await db
      .selectFrom("artifacts")
      .select(["task_id", "name"])
      .where("private", "=", true)
      .where("task_id", "in", [...taskIds])
      .execute();
    if (privates.length === 0) return new Set();
    const privateUrls = new Set(privates.map((p) => urls.artifact(p.task_id, p.name)));
    return new Set(activities.filter((a) => artifactUrls(a).some((u) => privateUrls.has(u))));
  };
  /** Whether the request was signed, by a key its actor owns, by an accepted follower. */
  const signedByFollower = async (ctx: RequestContext<null>): Promise<boolean> => {
    const key = await ctx.getSignedKey().catch(() => null);
    const owner = key?.ownerId?.href;
    if (key?.id == null || owner == null || new URL(key.id.href).origin !== new URL(owner).origin) {
      return false;
    }
    if (options.followPolicy != null && (await options.followPolicy.isBlocked(owner))) return false;
    const row = await db
      .selectFrom("followers")
      .select("actor_id")
      .where("actor_id", "=", owner)
      .where("state", "=", "accepted")
      .executeTakeFirst();
    return row != null;
  };

  // The outbox is paged newest first; a cursor is the `seq` of the first item of the page.
  federation
    .setOutboxDispatcher("/clusters/{identifier}/outbox", async (ctx, identifier, cursor) => {
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
      // Activities that name a private artifact (its ArtifactPublished, its task's
      // TaskCompleted) are listed only to a GET signed by an accepted follower: they are
      // signed, so they cannot be trimmed, and anyone may page the outbox.
      const naming = await privateArtifactsNamed(page.map((r) => r.activity));
      const shown =
        naming.size === 0 || (await signedByFollower(ctx))
          ? page
          : page.filter((r) => !naming.has(r.activity));
      return {
        items: shown.map((r) => TaskwebActivity.fromJson(r.activity)),
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
      const followerId = follower.id.href;
      const followerInbox = follower.inboxId.href;
      const sharedInbox = follower.endpoints?.sharedInbox?.href;
      // Deliveries go to these URLs: a follower must not point them at private addresses.
      for (const url of [followerInbox, sharedInbox]) {
        if (url != null && !(await options.isDeliverable(url))) {
          logger.warn("Ignored a Follow from {follower}: its inbox {url} is not deliverable.", {
            follower: follower.id.href,
            url,
          });
          return;
        }
      }
      const followId = follow.id.href;
      if ((await options.kv.get(undoneFollowKey(followId))) === followerId) {
        logger.info("Ignored a Follow from {follower}: it was undone before it arrived.", {
          follower: followerId,
        });
        return;
      }
      const decision: FollowDecision =
        options.followPolicy != null
          ? await options.followPolicy.decide(follower.id.href)
          : "accept";
      if (decision === "reject") {
        // A rejected follower leaves nothing behind, not even an earlier acceptance.
        await commit(async (trx, address) => {
          await trx.deleteFrom("followers").where("actor_id", "=", followerId).execute();
          await address(
            new Reject({
              id: new URL(`${urls.actor}#rejects/${crypto.randomUUID()}`),
              actor: ctx.getActorUri(name),
              object: follow,
            }),
            [followerInbox],
          );
        });
        logger.info("Rejected a follow from {follower} (federation policy).", {
          follower: follower.id.href,
        });
        return;
      }
      const state = decision === "accept" ? "accepted" : "pending";
      const now = new Date();
      await commit(async (trx, address) => {
        await trx
          .insertInto("followers")
          .values({
            actor_id: followerId,
            inbox: followerInbox,
            shared_inbox: sharedInbox ?? null,
            follow_id: followId,
            state,
            updated_at: now,
          })
          .onConflict((oc) =>
            oc.column("actor_id").doUpdateSet({
              inbox: followerInbox,
              shared_inbox: sharedInbox ?? null,
              follow_id: followId,
              state,
              updated_at: now,
              gone_at: null,
            }),
          )
          .execute();
        if (state === "pending") return;
        await address(
          new Accept({
            id: new URL(`${urls.actor}#accepts/${crypto.randomUUID()}`),
            actor: ctx.getActorUri(name),
            object: follow,
          }),
          [followerInbox],
        );
      });
      if (state === "pending") {
        logger.info("{follower} asked to follow this cluster; waiting for approval.", {
          follower: follower.id.href,
        });
        return;
      }
      await options.onFollowed?.(sharedInbox ?? followerInbox);
      logger.info("{follower} now follows this cluster.", { follower: follower.id.href });
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
      const removed = await db
        .deleteFrom("followers")
        .where("actor_id", "=", actorId)
        .where("follow_id", "=", objectId)
        .returning("actor_id")
        .executeTakeFirst();
      // The Follow may still be on its way (its sender retries it while the Undo got through):
      // remembered, so that it changes nothing when it arrives.
      if (removed == null) {
        await options.kv.set(undoneFollowKey(objectId), actorId, { ttl: UNDONE_FOLLOW_KEPT });
      }
    })
    .on(Activity, options.onActivity)
    .onError((_ctx, error) => {
      logger.error("Inbox listener failed: {error}", { error: String(error) });
    });

  const context = () => federation.createContext(new URL(urls.origin), null);
  /** An Accept or a Reject of the Follow `row`'s follower sent. */
  const followAnswer = (
    row: { actor_id: string; follow_id: string },
    Answer: typeof Accept | typeof Reject,
  ): Accept | Reject =>
    new Answer({
      id: new URL(
        `${urls.actor}#${Answer === Accept ? "accepts" : "rejects"}/${crypto.randomUUID()}`,
      ),
      actor: new URL(urls.actor),
      object: new Follow({
        id: new URL(row.follow_id),
        actor: new URL(row.actor_id),
        object: new URL(urls.actor),
      }),
    });

  // An activity is signed once (its Object Integrity Proof and Linked Data signature), however
  // many inboxes it goes to; each delivery only adds its own HTTP signature.
  const signedBodies = new Map<string, Promise<string>>();
  const acceptedSpecs = new Map<string, HttpSignatureSpec>();
  const signedBody = (
    activityJson: Record<string, unknown>,
    source: ActivitySource,
  ): Promise<string> => {
    const id = String(activityJson.id);
    let body = signedBodies.get(id);
    if (body == null) {
      body = signActivity(activityJson, source);
      signedBodies.set(id, body);
      body.catch(() => signedBodies.delete(id));
      if (signedBodies.size > SIGNED_BODIES_KEPT) {
        signedBodies.delete(signedBodies.keys().next().value!);
      }
    }
    return body;
  };
  const signActivity = async (
    activityJson: Record<string, unknown>,
    source: ActivitySource,
  ): Promise<string> => {
    const ctx = context();
    const pairs = await senderKeys();
    const loader = { contextLoader: ctx.contextLoader };
    // Taskweb activities (the outbox, an Offer) carry terms the library's vocabulary does not
    // know; the others (Follow, Accept, Update, …) are its own types, parsed as such.
    let activity: Activity =
      source === "outbox" || hasTaskwebContext(activityJson)
        ? TaskwebActivity.fromJson(activityJson)
        : await Activity.fromJsonLd(activityJson, {
            ...loader,
            documentLoader: ctx.documentLoader,
          });
    const ed25519 = pairs.find((p) => p.privateKey.algorithm.name === "Ed25519");
    if (ed25519 != null) {
      // The proof names the key by its Multikey id, as the actor document publishes it.
      activity = await signObject(activity, ed25519.privateKey, ed25519.keyId, loader);
    }
    let json = await activity.toJsonLd({ format: "compact", ...loader });
    const rsa = pairs.find((p) => p.privateKey.algorithm.name === "RSASSA-PKCS1-v1_5");
    if (rsa != null) json = await signJsonLd(json, rsa.privateKey, rsa.keyId, loader);
    return JSON.stringify(json);
  };

  /** Signs and POSTs one activity to one inbox; reports how that went. */
  const sendOnce = async (
    activityJson: Record<string, unknown>,
    inbox: string,
    source: ActivitySource,
  ): Promise<SendOutcome> => {
    try {
      const body = await signedBody(activityJson, source);
      const pairs = await senderKeys();
      const rsa = pairs.find((p) => p.privateKey.algorithm.name === "RSASSA-PKCS1-v1_5");
      if (rsa == null) throw new Error(`${urls.actor} has no RSA key to sign deliveries with.`);
      const origin = new URL(inbox).origin;
      const post = async (spec: HttpSignatureSpec) => {
        const signed = await signRequest(
          new Request(inbox, {
            method: "POST",
            headers: { "content-type": "application/activity+json" },
            body,
          }),
          rsa.privateKey,
          rsa.keyId,
          { spec },
        );
        return await options.deliveryFetch(inbox, {
          method: "POST",
          headers: Object.fromEntries(signed.headers),
          body,
          redirect: "manual",
          timeoutMs: DELIVERY_TIMEOUT_MS,
          idleTimeoutMs: DELIVERY_TIMEOUT_MS,
        });
      };
      // RFC 9421 first; a peer that refuses it as unauthenticated gets draft-cavage, and
      // whichever it accepted is used first for its origin from then on.
      const first = acceptedSpecs.get(origin) ?? "rfc9421";
      let response = await post(first);
      let spec = first;
      if (response.status === 400 || response.status === 401) {
        await response.body?.cancel();
        spec = first === "rfc9421" ? "draft-cavage-http-signatures-12" : "rfc9421";
        response = await post(spec);
      }
      if (response.ok) {
        acceptedSpecs.set(origin, spec);
        await response.body?.cancel();
        return { ok: true, status: response.status };
      }
      const text = await readLimited(response, inbox, DELIVERY_ANSWER_BYTES).then(
        (bytes) => new TextDecoder().decode(bytes).slice(0, 500),
        () => "",
      );
      return {
        ok: false,
        status: response.status,
        retryAfter: response.headers.get("retry-after"),
        error: `${inbox} answered ${response.status}${text !== "" ? `: ${text}` : ""}`,
      };
    } catch (error) {
      const refused =
        error instanceof OutboundFetchError &&
        (error.reason === "private-address" || error.reason === "bad-scheme");
      return {
        ok: false,
        status: undefined,
        retryAfter: null,
        error: refused ? `refused by the outbound policy: ${error.message}` : String(error),
        ...(refused ? { refused } : {}),
      };
    }
  };

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
      if (!(await options.isDeliverable(actor.inboxId.href))) {
        throw new Error(`${actorUrl} has its inbox on a refused address.`);
      }
      const actorId = actor.id;
      const inbox = actor.inboxId.href;
      const followId = `${urls.actor}#follows/${crypto.randomUUID()}`;
      const now = new Date();
      await commit(async (trx, address) => {
        await trx
          .insertInto("following")
          .values({
            actor_id: actorId.href,
            inbox,
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
        await address(
          new Follow({ id: new URL(followId), actor: ctx.getActorUri(name), object: actorId }),
          [inbox],
        );
      });
      return { actorId: actorId.href, state: "pending" };
    },
    commit,
    async unfollow(actorUrl) {
      const row = await db
        .selectFrom("following")
        .selectAll()
        .where("actor_id", "=", actorUrl)
        .executeTakeFirst();
      if (row == null) return false;
      return await commit(async (trx, address) => {
        const deleted = await trx
          .deleteFrom("following")
          .where("actor_id", "=", actorUrl)
          .where("follow_id", "=", row.follow_id)
          .returning("actor_id")
          .executeTakeFirst();
        if (deleted == null) return false;
        await address(
          new Undo({
            id: new URL(`${urls.actor}#undo/${crypto.randomUUID()}`),
            actor: new URL(urls.actor),
            object: new URL(row.follow_id),
          }),
          [row.inbox],
        );
        return true;
      });
    },
    async approveFollower(actorId) {
      const row = await commit(async (trx, address) => {
        const approved = await trx
          .updateTable("followers")
          .set({ state: "accepted", updated_at: new Date() })
          .where("actor_id", "=", actorId)
          .where("state", "=", "pending")
          .returning(["actor_id", "inbox", "shared_inbox", "follow_id"])
          .executeTakeFirst();
        if (approved != null) await address(followAnswer(approved, Accept), [approved.inbox]);
        return approved;
      });
      if (row == null) return false;
      await options.onFollowed?.(row.shared_inbox ?? row.inbox);
      logger.info("{follower} now follows this cluster (approved).", { follower: actorId });
      return true;
    },
    async rejectFollower(actorId) {
      const row = await commit(async (trx, address) => {
        const removed = await trx
          .deleteFrom("followers")
          .where("actor_id", "=", actorId)
          .returning(["actor_id", "inbox", "follow_id"])
          .executeTakeFirst();
        if (removed != null) await address(followAnswer(removed, Reject), [removed.inbox]);
        return removed;
      });
      if (row == null) return false;
      logger.info("Rejected the follow of {follower}.", { follower: actorId });
      return true;
    },
    async rotateKeys() {
      const ctx = context();
      const manual = await manuallyApproves();
      const jobs: DeliveryJob[] = [];
      // The Update (the actor with its new keys) and its deliveries to every follower's
      // inbox, shared inbox preferred, are committed with the new keys or not at all.
      const result = await rotateKeyPairs(db, name, async (trx) => {
        jobs.length = 0;
        const actor = await rotating.run(readKeyPairs(trx, name, graceMs), () =>
          buildActor(ctx, name, manual),
        );
        const update = new Update({
          id: new URL(`${urls.actor}#updates/${crypto.randomUUID()}`),
          actor: ctx.getActorUri(name),
          object: actor,
        });
        const json = (await update.toJsonLd({
          format: "compact",
          contextLoader: options.loaders.contextLoader,
        })) as Record<string, unknown>;
        jobs.push(...(await options.deliveries.address(trx, json, await followerInboxes(trx))));
      });
      keyPairs = undefined;
      await options.deliveries.dispatch(jobs);
      logger.info("Rotated the keys of {actor}; followers were sent an Update.", {
        actor: urls.actor,
      });
      return {
        ...result,
        keyIds: (await senderKeys()).map((p) => p.keyId.href),
        graceUntil: new Date(result.rotatedAt.getTime() + graceMs),
      };
    },
    async signingKeys() {
      const pairs = await senderKeys();
      return await Promise.all(
        pairs.map(async (p) => ({
          keyId: p.keyId.href,
          privateKey: await exportJwk(p.privateKey),
        })),
      );
    },
    async deliver(activityJson, inbox, source = "outbox") {
      const tracer = (options.tracerProvider ?? trace.getTracerProvider()).getTracer("taskweb");
      return await tracer.startActiveSpan(
        "activitypub.send_activity",
        {
          kind: SpanKind.CLIENT,
          attributes: {
            "activitypub.activity.id": String(activityJson.id),
            "activitypub.inbox.url": inbox,
          },
        },
        async (span) => {
          try {
            const outcome = await sendOnce(activityJson, inbox, source);
            if (outcome.status != null)
              span.setAttribute("http.response.status_code", outcome.status);
            if (!outcome.ok) span.setStatus({ code: SpanStatusCode.ERROR, message: outcome.error });
            return outcome;
          } finally {
            span.end();
          }
        },
      );
    },
  };
}
