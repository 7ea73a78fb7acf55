/**
 * Delivery of outbox activities to followers, kept in the database.
 *
 * Publishing an outbox row writes one `deliveries` row per distinct inbox (a follower's
 * shared inbox when it has one, so one POST reaches every follower behind it) in the same
 * transaction that marks the row fanned out. The queue only dispatches those rows: a job
 * names (activity, inbox, generation), and a job whose generation is not the row's current
 * one does nothing, so a lost, repeated or early job is harmless and the reconciler can
 * enqueue every open row again after Redis lost its data.
 *
 * Each failed send is retried with exponential backoff and jitter, or after the peer's
 * `Retry-After`, until the horizon (days by default) has passed since the activity was
 * published. A 404 or 410 marks the inbox and its followers gone: nothing more is sent there.
 * Every other failure is retried (spec TW-DLV-5). Per inbox, a circuit breaker opens after
 * consecutive network errors or 5xx answers; while it is open deliveries wait, and after a
 * cool-down one process sends a probe (half-open) whose outcome closes or reopens it. The
 * state lives in `delivery_peers`, shared by every process of the cluster.
 *
 * Activities addressed to particular actors (a Follow, its Accept or Reject, an Undo, the
 * actor's Update after a key rotation) take the same path: {@link Delivery.address} writes
 * the activity to `addressed_activities` and its deliveries inside the caller's transaction,
 * the one that makes the change the activity announces, and {@link Delivery.dispatch}
 * enqueues them after the commit (the reconciler does, should the process die in between).
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Kysely, Selectable, Transaction } from "kysely";
import type { JobQueue } from "../queue/job-queue.ts";
import type { DatabaseSchema, DeliveriesTable } from "../store/schema.ts";

const logger = getLogger(["taskweb", "delivery"]);

/**
 * The inboxes a follower-wide activity goes to: one per accepted follower that is not gone,
 * its shared inbox preferred, each once.
 */
export async function followerInboxes(db: Kysely<DatabaseSchema>): Promise<string[]> {
  const followers = await db
    .selectFrom("followers")
    .select(["inbox", "shared_inbox"])
    .where("state", "=", "accepted")
    .where("gone_at", "is", null)
    .execute();
  return [...new Set(followers.map((f) => f.shared_inbox ?? f.inbox))];
}

/** The queue that carries delivery jobs. */
export const DELIVERY_QUEUE = "deliver";

/** How deliveries are retried and when a peer's circuit opens. */
export interface DeliveryPolicy {
  /** Delay before the first retry; it doubles with every failure. @defaultValue 10 s */
  readonly initialDelayMs: number;
  /** Longest delay between two tries. @defaultValue 6 h */
  readonly maxDelayMs: number;
  /** A delivery is given up this long after it was published. @defaultValue 3 days */
  readonly horizonMs: number;
  /** Consecutive failures of an inbox that open its circuit. @defaultValue 5 */
  readonly circuitFailures: number;
  /** How long an open circuit holds deliveries before one probe is sent. @defaultValue 5 min */
  readonly circuitCooldownMs: number;
  /** An attempt under way is presumed lost (its process died) after this long. @defaultValue 2 min */
  readonly attemptLeaseMs: number;
}

/** The defaults of {@link DeliveryPolicy}. */
export const DEFAULT_DELIVERY_POLICY: DeliveryPolicy = {
  initialDelayMs: 10_000,
  maxDelayMs: 6 * 3600_000,
  horizonMs: 3 * 24 * 3600_000,
  circuitFailures: 5,
  circuitCooldownMs: 5 * 60_000,
  attemptLeaseMs: 2 * 60_000,
};

type DeliveryRow = Pick<
  Selectable<DeliveriesTable>,
  "activity_id" | "inbox" | "attempts" | "created_at"
>;

/** How one send ended, as {@link DeliveryOptions.send} reports it. */
export type SendOutcome =
  | { readonly ok: true; readonly status: number }
  | {
      readonly ok: false;
      /** The HTTP status, or undefined when no response came (network error, timeout). */
      readonly status: number | undefined;
      readonly retryAfter: string | null;
      readonly error: string;
      /**
       * True when the cluster's outbound policy refused the inbox (its host resolves to a
       * private or special-use address not on the allowlist): nothing was sent.
       */
      readonly refused?: boolean;
    };

/** Where a delivered activity is kept: the public outbox, or `addressed_activities`. */
export type ActivitySource = "outbox" | "addressed";

/** What a delivery job carries. */
export interface DeliveryJob {
  readonly activityId: string;
  readonly inbox: string;
  /** The row's `attempts` when the job was enqueued. */
  readonly generation: number;
}

/** Options for {@link createDelivery}. */
export interface DeliveryOptions {
  readonly db: Kysely<DatabaseSchema>;
  readonly jobs: JobQueue;
  readonly policy: DeliveryPolicy;
  /** Signs and POSTs one activity to one inbox. */
  readonly send: (
    activity: Record<string, unknown>,
    inbox: string,
    source: ActivitySource,
  ) => Promise<SendOutcome>;
  /** Told when an inbox answered 404 or 410. */
  readonly onGone?: (inbox: string) => void;
}

/** One peer inbox's delivery health, as `GET /api/v1/deliveries/peers` shows it. */
export interface PeerHealth {
  readonly inbox: string;
  readonly lastSuccessAt: string | null;
  readonly lastFailureAt: string | null;
  readonly consecutiveFailures: number;
  readonly circuit: "closed" | "open" | "half-open";
  readonly gone: boolean;
  /** Deliveries to it not yet delivered nor given up. */
  readonly pending: number;
}

/** Parses `Retry-After` (seconds or an HTTP date) into a delay in ms from `now`. */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value == null || value.trim() === "") return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** The delay before retry number `failures` (1 = first retry): doubling, capped, jittered ×1–1.5. */
export function backoffDelay(policy: DeliveryPolicy, failures: number): number {
  const base = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** Math.max(0, failures - 1));
  return Math.round(base * (1 + Math.random() * 0.5));
}

function iso(value: Date | string | null): string | null {
  return value == null ? null : new Date(value).toISOString();
}

/** Activities kept in memory for the deliveries still to come (the newest ones). */
const ACTIVITIES_KEPT = 64;

/** What {@link createDelivery}'s admission needs of a peer's row (nulls: no row yet). */
interface PeerState {
  readonly circuit: "closed" | "open" | "half-open" | null;
  readonly opened_at: Date | null;
  readonly probe_until: Date | null;
}

/** Delivery of outbox activities: fan-out, the job handler, recovery and the peer view. */
export function createDelivery(options: DeliveryOptions) {
  const { db, jobs, policy } = options;

  const jobId = (j: DeliveryJob) => `${j.activityId} ${j.inbox} ${j.generation}`;
  const enqueue = async (j: DeliveryJob, delayMs: number) => {
    await jobs.enqueue(DELIVERY_QUEUE, jobId(j), { ...j }, { delayMs: Math.max(0, delayMs) });
  };

  /** Moves a row to its next generation, due at `due`, and enqueues it. */
  async function reschedule(row: DeliveryRow, due: number, failed: boolean): Promise<void> {
    const created = new Date(row.created_at).getTime();
    if (due > created + policy.horizonMs) {
      await abandon(row.activity_id, row.inbox, "horizon");
      return;
    }
    const next = await db
      .updateTable("deliveries")
      .set((eb) => ({
        attempts: eb("attempts", "+", 1),
        failures: failed ? eb("failures", "+", 1) : eb.ref("failures"),
        next_attempt_at: new Date(due),
      }))
      .where("activity_id", "=", row.activity_id)
      .where("inbox", "=", row.inbox)
      .where("attempts", "=", row.attempts)
      .where("delivered_at", "is", null)
      .where("abandoned_at", "is", null)
      .returning("attempts")
      .executeTakeFirst();
    if (next == null) return;
    await enqueue(
      { activityId: row.activity_id, inbox: row.inbox, generation: next.attempts },
      due - Date.now(),
    );
  }

  async function abandon(activityId: string, inbox: string, reason: string): Promise<void> {
    await db
      .updateTable("deliveries")
      .set({ abandoned_at: new Date(), last_error: reason })
      .where("activity_id", "=", activityId)
      .where("inbox", "=", inbox)
      .where("delivered_at", "is", null)
      .where("abandoned_at", "is", null)
      .execute();
    logger.warn("Gave up delivering {activityId} to {inbox} ({reason}).", {
      activityId,
      inbox,
      reason,
    });
  }

  async function touchPeer(inbox: string): Promise<void> {
    await db
      .insertInto("delivery_peers")
      .values({ inbox })
      .onConflict((oc) => oc.column("inbox").doNothing())
      .execute();
  }

  async function recordSuccess(inbox: string): Promise<void> {
    const healthy = {
      last_success_at: new Date(),
      consecutive_failures: 0,
      circuit: "closed" as const,
      opened_at: null,
      probe_until: null,
      gone_at: null,
    };
    await db
      .insertInto("delivery_peers")
      .values({ inbox, ...healthy })
      .onConflict((oc) => oc.column("inbox").doUpdateSet(healthy))
      .execute();
  }

  /** Counts a failure of a reachable-or-not peer; opens the circuit at the threshold. */
  async function recordFailure(inbox: string, countsForCircuit: boolean): Promise<void> {
    await touchPeer(inbox);
    const now = new Date();
    if (!countsForCircuit) {
      await db
        .updateTable("delivery_peers")
        .set({ last_failure_at: now })
        .where("inbox", "=", inbox)
        .execute();
      return;
    }
    const row = await db
      .updateTable("delivery_peers")
      .set((eb) => ({
        last_failure_at: now,
        consecutive_failures: eb("consecutive_failures", "+", 1),
      }))
      .where("inbox", "=", inbox)
      .returning(["consecutive_failures", "circuit"])
      .executeTakeFirst();
    if (row == null) return;
    if (row.circuit === "half-open" || row.consecutive_failures >= policy.circuitFailures) {
      await db
        .updateTable("delivery_peers")
        .set({ circuit: "open", opened_at: now, probe_until: null })
        .where("inbox", "=", inbox)
        .execute();
      if (row.circuit !== "open") {
        logger.warn("Circuit to {inbox} opened after {failures} consecutive failures.", {
          inbox,
          failures: row.consecutive_failures,
        });
      }
    }
  }

  /** The inbox answered 404 or 410: it and its followers are gone, its deliveries given up. */
  async function markGone(inbox: string): Promise<void> {
    const now = new Date();
    await touchPeer(inbox);
    await db.transaction().execute(async (trx) => {
      await trx
        .updateTable("delivery_peers")
        .set({ gone_at: now, last_failure_at: now })
        .where("inbox", "=", inbox)
        .execute();
      await trx
        .updateTable("followers")
        .set({ gone_at: now, updated_at: now })
        .where((eb) => eb.or([eb("inbox", "=", inbox), eb("shared_inbox", "=", inbox)]))
        .where("gone_at", "is", null)
        .execute();
      await trx
        .updateTable("deliveries")
        .set({ abandoned_at: now, last_error: "gone" })
        .where("inbox", "=", inbox)
        .where("delivered_at", "is", null)
        .where("abandoned_at", "is", null)
        .execute();
    });
    logger.warn("{inbox} is gone (404/410): its followers are marked gone.", { inbox });
    options.onGone?.(inbox);
  }

  /**
   * Whether this process may send to `inbox` now. With the circuit open past its cool-down,
   * exactly one process wins the half-open probe. Otherwise returns when to look again.
   */
  async function admit(inbox: string, peer: PeerState | undefined): Promise<true | number> {
    if (peer == null || peer.circuit == null || peer.circuit === "closed") return true;
    const now = Date.now();
    const probeUntil = new Date(now + policy.attemptLeaseMs);
    const won = await db
      .updateTable("delivery_peers")
      .set({ circuit: "half-open", probe_until: probeUntil })
      .where("inbox", "=", inbox)
      .where((eb) =>
        eb.or([
          eb.and([
            eb("circuit", "=", "open"),
            eb("opened_at", "<=", new Date(now - policy.circuitCooldownMs)),
          ]),
          eb.and([eb("circuit", "=", "half-open"), eb("probe_until", "<", new Date(now))]),
        ]),
      )
      .returning("inbox")
      .executeTakeFirst();
    if (won != null) return true;
    const wait =
      peer.circuit === "open" && peer.opened_at != null
        ? new Date(peer.opened_at).getTime() + policy.circuitCooldownMs - now
        : Math.min(policy.circuitCooldownMs, 2000);
    return now + Math.max(250, wait) + Math.round(Math.random() * 250);
  }

  // One activity goes to many inboxes: read it once, not once per inbox. Outbox and
  // addressed rows never change, so a kept copy cannot go stale.
  type Stored = { activity: Record<string, unknown>; source: ActivitySource };
  const activities = new Map<string, Promise<Stored | undefined>>();
  const storedActivity = (activityId: string) => {
    let activity = activities.get(activityId);
    if (activity == null) {
      activity = (async (): Promise<Stored | undefined> => {
        const published = await db
          .selectFrom("outbox")
          .select("activity")
          .where("activity_id", "=", activityId)
          .executeTakeFirst();
        if (published != null) return { activity: published.activity, source: "outbox" };
        const addressed = await db
          .selectFrom("addressed_activities")
          .select("activity")
          .where("activity_id", "=", activityId)
          .executeTakeFirst();
        return addressed == null
          ? undefined
          : { activity: addressed.activity, source: "addressed" };
      })();
      activities.set(activityId, activity);
      activity.then(
        (a) => a ?? activities.delete(activityId),
        () => activities.delete(activityId),
      );
      if (activities.size > ACTIVITIES_KEPT) activities.delete(activities.keys().next().value!);
    }
    return activity;
  };

  /** Handles one delivery job. */
  async function handle(job: DeliveryJob): Promise<void> {
    // The delivery and its peer's state in one read.
    const found = await db
      .selectFrom("deliveries as d")
      .leftJoin("delivery_peers as p", "p.inbox", "d.inbox")
      .select([
        "d.activity_id",
        "d.inbox",
        "d.attempts",
        "d.failures",
        "d.created_at",
        "d.next_attempt_at",
        "d.delivered_at",
        "d.abandoned_at",
        "p.gone_at",
        "p.circuit",
        "p.opened_at",
        "p.probe_until",
      ])
      .where("d.activity_id", "=", job.activityId)
      .where("d.inbox", "=", job.inbox)
      .executeTakeFirst();
    if (found == null || found.delivered_at != null || found.abandoned_at != null) return;
    const { gone_at: goneAt, ...row } = found;
    if (row.attempts !== job.generation) return;
    const now = Date.now();
    const due = new Date(row.next_attempt_at).getTime();
    // Early (a recovered job for a row that waits for a later retry): wait until it is due.
    if (due > now + 1000) {
      await reschedule(row, due, false);
      return;
    }
    if (goneAt != null) {
      await abandon(row.activity_id, row.inbox, "gone");
      return;
    }
    if (now > new Date(row.created_at).getTime() + policy.horizonMs) {
      await abandon(row.activity_id, row.inbox, "horizon");
      return;
    }
    const admitted = await admit(job.inbox, row);
    if (admitted !== true) {
      await reschedule(row, admitted, false);
      return;
    }
    // Claim this generation: a job for it run again (a stalled job) does nothing.
    const claimed = await db
      .updateTable("deliveries")
      .set((eb) => ({
        attempts: eb("attempts", "+", 1),
        next_attempt_at: new Date(now + policy.attemptLeaseMs),
      }))
      .where("activity_id", "=", row.activity_id)
      .where("inbox", "=", row.inbox)
      .where("attempts", "=", row.attempts)
      .where("delivered_at", "is", null)
      .where("abandoned_at", "is", null)
      .returning(["attempts", "created_at", "failures"])
      .executeTakeFirst();
    if (claimed == null) return;
    const stored = await storedActivity(row.activity_id);
    if (stored == null) {
      await abandon(row.activity_id, row.inbox, "activity not stored");
      return;
    }
    const outcome = await options.send(stored.activity, row.inbox, stored.source);
    const current = { ...row, ...claimed };
    if (outcome.ok) {
      await db
        .updateTable("deliveries")
        .set({ delivered_at: new Date(), last_status: outcome.status, last_error: null })
        .where("activity_id", "=", row.activity_id)
        .where("inbox", "=", row.inbox)
        .execute();
      await recordSuccess(row.inbox);
      return;
    }
    await db
      .updateTable("deliveries")
      .set({ last_status: outcome.status ?? null, last_error: outcome.error.slice(0, 1000) })
      .where("activity_id", "=", row.activity_id)
      .where("inbox", "=", row.inbox)
      .execute();
    const status = outcome.status;
    if (status === 404 || status === 410) {
      await markGone(row.inbox);
      return;
    }
    // A peer that answers 4xx is up (it may not have fetched our key yet; TW-DLV-5 retries
    // it), and one that answers 429 is busy: neither counts towards opening the circuit. An
    // inbox our policy refused was never contacted: retried (its name may resolve elsewhere
    // later, or the allowlist change), but it says nothing of the peer's health.
    await recordFailure(row.inbox, outcome.refused !== true && (status == null || status >= 500));
    const after = Date.now();
    const delay = Math.max(
      backoffDelay(policy, current.failures + 1),
      parseRetryAfter(outcome.retryAfter, after) ?? 0,
    );
    logger.info("Delivery of {activityId} to {inbox} failed ({error}); retry in {delay} ms.", {
      activityId: row.activity_id,
      inbox: row.inbox,
      error: outcome.error.split("\n")[0],
      delay,
    });
    await reschedule(current, after + delay, true);
  }

  const dispatch = async (jobs: readonly DeliveryJob[]): Promise<void> => {
    for (const j of jobs) {
      try {
        await enqueue(j, 0);
      } catch (error) {
        // The rows are committed: the reconciler enqueues them once the queue answers again.
        logger.warn("Delivery of {activityId} to {inbox} not queued yet: {error}", {
          activityId: j.activityId,
          inbox: j.inbox,
          error: String(error),
        });
      }
    }
  };

  return {
    /**
     * Writes an activity addressed to particular inboxes and one delivery per distinct
     * inbox, inside `trx`: the transaction of the change the activity announces, so that
     * either both are committed or neither. Pass what it returns to {@link dispatch} after the
     * commit. Idempotent per (activity, inbox).
     */
    async address(
      trx: Transaction<DatabaseSchema>,
      activity: Record<string, unknown>,
      inboxes: readonly string[],
    ): Promise<DeliveryJob[]> {
      const activityId = String(activity.id);
      const distinct = [...new Set(inboxes)];
      await trx
        .insertInto("addressed_activities")
        .values({ activity_id: activityId, activity: JSON.stringify(activity) })
        .onConflict((oc) => oc.column("activity_id").doNothing())
        .execute();
      if (distinct.length === 0) return [];
      const now = new Date();
      await trx
        .insertInto("deliveries")
        .values(distinct.map((inbox) => ({ activity_id: activityId, inbox, next_attempt_at: now })))
        .onConflict((oc) => oc.columns(["activity_id", "inbox"]).doNothing())
        .execute();
      return distinct.map((inbox) => ({ activityId, inbox, generation: 0 }));
    },

    /**
     * Enqueues deliveries written by {@link address} once their transaction committed. A
     * queue that does not answer is logged, not thrown: the change is made, and the
     * reconciler enqueues every open delivery.
     */
    dispatch,

    /**
     * Writes one delivery per distinct inbox of the followers that are not gone, and marks
     * the outbox row fanned out, in one transaction; then enqueues them. Idempotent.
     */
    async fanOut(activityId: string): Promise<number> {
      const created = await db.transaction().execute(async (trx) => {
        const row = await trx
          .selectFrom("outbox")
          .select("fanned_out_at")
          .where("activity_id", "=", activityId)
          .forUpdate()
          .executeTakeFirst();
        if (row == null || row.fanned_out_at != null) return [];
        const inboxes = await followerInboxes(trx);
        const now = new Date();
        if (inboxes.length > 0) {
          await trx
            .insertInto("deliveries")
            .values(
              inboxes.map((inbox) => ({ activity_id: activityId, inbox, next_attempt_at: now })),
            )
            .onConflict((oc) => oc.columns(["activity_id", "inbox"]).doNothing())
            .execute();
        }
        await trx
          .updateTable("outbox")
          .set({ fanned_out_at: now })
          .where("activity_id", "=", activityId)
          .execute();
        return inboxes;
      });
      for (const inbox of created) await enqueue({ activityId, inbox, generation: 0 }, 0);
      return created.length;
    },

    /** The job handler for {@link DELIVERY_QUEUE}. */
    handle,

    /**
     * Enqueues every delivery not yet delivered nor given up, due when its row says. Jobs
     * already in the queue are not duplicated (same id); used at start and by the reconciler.
     */
    async recover(): Promise<number> {
      const rows = await db
        .selectFrom("deliveries")
        .select(["activity_id", "inbox", "attempts", "next_attempt_at"])
        .where("delivered_at", "is", null)
        .where("abandoned_at", "is", null)
        .orderBy("next_attempt_at")
        .execute();
      const now = Date.now();
      for (const r of rows) {
        await enqueue(
          { activityId: r.activity_id, inbox: r.inbox, generation: r.attempts },
          new Date(r.next_attempt_at).getTime() - now,
        );
      }
      return rows.length;
    },

    /** Every peer inbox this cluster delivers to, with its health. */
    async peers(): Promise<PeerHealth[]> {
      const [peers, followers, pending] = await Promise.all([
        db.selectFrom("delivery_peers").selectAll().execute(),
        db
          .selectFrom("followers")
          .select(["inbox", "shared_inbox", "gone_at"])
          .where("state", "=", "accepted")
          .execute(),
        db
          .selectFrom("deliveries")
          .select(["inbox", (eb) => eb.fn.countAll<string | number>().as("n")])
          .where("delivered_at", "is", null)
          .where("abandoned_at", "is", null)
          .groupBy("inbox")
          .execute(),
      ]);
      const byInbox = new Map<string, PeerHealth>();
      for (const f of followers) {
        const inbox = f.shared_inbox ?? f.inbox;
        byInbox.set(inbox, {
          inbox,
          lastSuccessAt: null,
          lastFailureAt: null,
          consecutiveFailures: 0,
          circuit: "closed",
          gone: f.gone_at != null,
          pending: 0,
        });
      }
      for (const p of peers) {
        byInbox.set(p.inbox, {
          inbox: p.inbox,
          lastSuccessAt: iso(p.last_success_at),
          lastFailureAt: iso(p.last_failure_at),
          consecutiveFailures: p.consecutive_failures,
          circuit: p.circuit,
          gone: p.gone_at != null,
          pending: 0,
        });
      }
      for (const p of pending) {
        // An inbox that is no follower's (a followee's, for a Follow) shows once it has
        // something open.
        const peer = byInbox.get(p.inbox) ?? {
          inbox: p.inbox,
          lastSuccessAt: null,
          lastFailureAt: null,
          consecutiveFailures: 0,
          circuit: "closed" as const,
          gone: false,
          pending: 0,
        };
        byInbox.set(p.inbox, { ...peer, pending: Number(p.n) });
      }
      return [...byInbox.values()].sort((a, b) => a.inbox.localeCompare(b.inbox));
    },

    /** Forgets that an inbox was gone (its actor followed again). */
    async clearGone(inbox: string): Promise<void> {
      await db
        .updateTable("delivery_peers")
        .set({ gone_at: null, consecutive_failures: 0, circuit: "closed", opened_at: null })
        .where("inbox", "=", inbox)
        .execute();
    },
  };
}

/** The delivery of one cluster. */
export type Delivery = ReturnType<typeof createDelivery>;
