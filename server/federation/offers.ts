/**
 * Offers of task graphs between clusters (spec/v1/offers-and-relays.md).
 *
 * Offering side (B): {@link OfferService.send} records the offer and sends the `Offer` to the
 * target cluster; its `Accept` (with the task group's URL as `result`) or `Reject` is
 * recorded by {@link OfferService.answered}. A local task waits on the remote group by
 * naming the group's URL as a dependency; the group's `TaskGroupResolved` resolves it (see
 * `inbox.ts`, which admits that activity from a cluster that accepted one of our offers).
 *
 * Receiving side (C): {@link OfferService.receive} checks the policy (the offering actor
 * must hold `taskweb:offer:accept`), then creates the task group in the same transaction as
 * the dedupe record and answers `Accept`; a refused offer creates nothing and is answered
 * `Reject`. When the group resolves, its `TaskGroupResolved` is sent to the offering
 * cluster through a job, re-found by {@link OfferService.recover} after a lost queue.
 * @module
 */
import type { Context } from "@fedify/fedify";
import { Accept, isActor, Reject } from "@fedify/vocab";
import { getLogger } from "@logtape/logtape";
import { sql, type Kysely, type Transaction } from "kysely";
import {
  buildTaskGraphOffer,
  newSlugId,
  parseTaskGraphOffer,
  type TaskGraphOffer,
} from "../../protocol/index.ts";
import { ApiError } from "../domain/errors.ts";
import { checkTaskGraph } from "../domain/task-graph.ts";
import { emptyEffects, type Effects, type TaskService } from "../domain/task-service.ts";
import type { JobQueue } from "../queue/job-queue.ts";
import type { DatabaseSchema, OffersSentTable } from "../store/schema.ts";
import type { ClusterUrls } from "./cluster-urls.ts";
import type { Address } from "./federation.ts";

const logger = getLogger(["taskweb", "offers"]);

/** The queue whose jobs send a resolved group's `TaskGroupResolved` to the offering cluster. */
export const OFFER_CALLBACK_QUEUE = "offer-callbacks";

/** The scope a remote cluster needs (as `actor:<its actor URL>`) for its offers to be accepted. */
export const OFFER_ACCEPT_SCOPE = "taskweb:offer:accept";

/** Decides whether the cluster `actorId` may have its offers run here. */
export type OfferPolicy = (actorId: string) => Promise<boolean>;

/** What became of a received offer. */
export type OfferOutcome =
  | { readonly outcome: "accepted"; readonly offerId: string; readonly taskGroupId: string }
  | { readonly outcome: "rejected"; readonly offerId: string; readonly reason: string }
  | { readonly outcome: "ignored"; readonly detail: string };

/** An offer this cluster sent, as the API shows it. */
export interface SentOfferView {
  readonly offerId: string;
  readonly target: string;
  readonly taskGroupId: string;
  readonly state: OffersSentTable["state"];
  /** The task group's URL on the target, once accepted: name it as a dependency. */
  readonly taskGroupUrl: string | null;
  readonly reason: string | null;
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** Options for {@link createOfferService}. */
export interface OfferServiceOptions {
  readonly db: Kysely<DatabaseSchema>;
  readonly tasks: TaskService;
  readonly jobs: JobQueue;
  readonly urls: ClusterUrls;
  /** A Fedify context for looking up actors (the federation is built after this service). */
  context(): Context<null>;
  /**
   * Runs a change in one transaction with the deliveries of the activities it addresses
   * (durable, retried, POSTed through the checked fetch); see `ClusterFederation.commit`.
   */
  commit<T>(change: (trx: Transaction<DatabaseSchema>, address: Address) => Promise<T>): Promise<T>;
  /** Whether an actor's offers are accepted. */
  readonly policy: OfferPolicy;
  /** Told what became of every received offer. */
  readonly onOutcome?: (outcome: OfferOutcome) => void;
}

/** Offers of one cluster. */
export type OfferService = ReturnType<typeof createOfferService>;

function view(row: {
  offer_id: string;
  target_actor: string;
  task_group_id: string;
  state: OffersSentTable["state"];
  task_group_url: string | null;
  reason: string | null;
  created_at: Date;
  updated_at: Date;
}): SentOfferView {
  return {
    offerId: row.offer_id,
    target: row.target_actor,
    taskGroupId: row.task_group_id,
    state: row.state,
    taskGroupUrl: row.task_group_url,
    reason: row.reason,
    createdAt: new Date(row.created_at).toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
  };
}

/** Creates the offer service. */
export function createOfferService(options: OfferServiceOptions) {
  const { db, tasks, jobs, urls } = options;

  /**
   * The inbox of the cluster `actorUrl`, looked up before a transaction addresses it (a
   * change that cannot be sent is not made).
   * @throws {ApiError} `RemoteUnavailable`
   */
  async function inboxOf(actorUrl: string): Promise<string> {
    const actor = await options.context().lookupObject(actorUrl);
    if (!isActor(actor) || actor.id == null || actor.inboxId == null) {
      throw new ApiError("RemoteUnavailable", `${actorUrl} is not a reachable cluster actor.`);
    }
    return actor.inboxId.href;
  }

  /** The Accept (with the created group) or the Reject (with the reason) of `offer`. */
  function answerTo(
    offer: TaskGraphOffer,
    accepted: { taskGroupUrl: string } | { reason: string },
  ): Accept | Reject {
    const values = {
      id: new URL(`${urls.actor}#offer-answers/${newSlugId()}`),
      actor: new URL(urls.actor),
      object: new URL(offer.id),
      to: new URL(offer.actor),
    };
    return "taskGroupUrl" in accepted
      ? new Accept({ ...values, result: new URL(accepted.taskGroupUrl) })
      : new Reject({ ...values, summary: accepted.reason });
  }

  return {
    /**
     * Offers `graph` to the cluster `target`. The graph is checked first as this cluster
     * would check it; the target checks it again.
     * @throws {ApiError} `InputError`; `RemoteUnavailable` when the target cannot be reached.
     */
    async send(target: string, graph: unknown): Promise<SentOfferView> {
      const check = checkTaskGraph(graph);
      if (check.problems.length > 0 || check.taskGroupId == null) {
        throw new ApiError("InputError", "The task graph is invalid; nothing was offered.", {
          problems: check.problems,
        });
      }
      const taskGroupId = check.taskGroupId;
      const offerId = `${urls.actor}/offers/${newSlugId()}`;
      const json = buildTaskGraphOffer({
        id: offerId,
        actor: urls.actor,
        target,
        published: new Date(),
        taskGraph: graph as Record<string, unknown>,
      });
      const inbox = await inboxOf(target);
      // The offer is recorded and its delivery written together, or neither.
      await options.commit(async (trx, address) => {
        await trx
          .insertInto("offers_sent")
          .values({
            offer_id: offerId,
            target_actor: target,
            task_group_id: taskGroupId,
            graph: JSON.stringify(graph),
            state: "pending",
            updated_at: new Date(),
          })
          .execute();
        await address(json as unknown as Record<string, unknown>, [inbox]);
      });
      const row = await db
        .selectFrom("offers_sent")
        .selectAll()
        .where("offer_id", "=", offerId)
        .executeTakeFirstOrThrow();
      return view(row);
    },

    /** One sent offer; undefined when there is none. */
    async get(offerId: string): Promise<SentOfferView | undefined> {
      const row = await db
        .selectFrom("offers_sent")
        .selectAll()
        .where("offer_id", "=", offerId)
        .executeTakeFirst();
      return row == null ? undefined : view(row);
    },

    /** Sent offers, newest first. */
    async list(): Promise<SentOfferView[]> {
      const rows = await db
        .selectFrom("offers_sent")
        .selectAll()
        .orderBy("created_at", "desc")
        .limit(1000)
        .execute();
      return rows.map(view);
    },

    /**
     * Records the target's answer to one of our offers. Only the offer's target can answer
     * it (the signer is the Accept's actor), and only once.
     * @returns false when no pending offer of ours to `actorId` has that id.
     */
    async answered(
      kind: "accept" | "reject",
      actorId: string,
      offerId: string,
      detail: { result?: string | undefined; reason?: string | undefined },
    ): Promise<boolean> {
      if (kind === "accept" && detail.result == null) return false;
      if (detail.result != null && new URL(detail.result).origin !== new URL(actorId).origin)
        return false;
      const updated = await db
        .updateTable("offers_sent")
        .set({
          state: kind === "accept" ? "accepted" : "rejected",
          task_group_url: kind === "accept" ? (detail.result ?? null) : null,
          reason: detail.reason?.slice(0, 2000) ?? null,
          updated_at: new Date(),
        })
        .where("offer_id", "=", offerId)
        .where("target_actor", "=", actorId)
        .where("state", "=", "pending")
        .returning("offer_id")
        .executeTakeFirst();
      if (updated != null)
        logger.info("{actor} answered {kind} to {offerId}.", { actor: actorId, kind, offerId });
      return updated != null;
    },

    /**
     * Whether `actorId` accepted an offer of ours whose group is `taskGroupUrl`: then its
     * `TaskGroupResolved` for that group is admitted although we may not follow it.
     */
    async isOfferedGroup(actorId: string, taskGroupUrl: string): Promise<boolean> {
      const row = await db
        .selectFrom("offers_sent")
        .select("offer_id")
        .where("target_actor", "=", actorId)
        .where("task_group_url", "=", taskGroupUrl)
        .where("state", "=", "accepted")
        .executeTakeFirst();
      return row != null;
    },

    /**
     * Handles an `Offer` the inbox received, compacted with taskweb's context. Creates the
     * task group in the transaction that records the offer as processed, then answers.
     */
    async receive(compacted: Record<string, unknown>, signer: string | undefined): Promise<void> {
      const report = (o: OfferOutcome) => options.onOutcome?.(o);
      const parsed = parseTaskGraphOffer(compacted);
      if (!parsed.ok) {
        report({ outcome: "ignored", detail: `${parsed.reason.code}: ${parsed.reason.message}` });
        return;
      }
      const offer = parsed.value;
      if (offer.actor !== signer) {
        report({ outcome: "ignored", detail: `actor-mismatch: ${offer.id}` });
        return;
      }
      if (offer.target !== urls.actor) {
        report({ outcome: "ignored", detail: `offered to ${offer.target}, not this cluster` });
        return;
      }
      // A redelivered offer stops here, before anything is looked up remotely; the insert
      // below stays the check that counts (two deliveries may pass this one together).
      const seen = await db
        .selectFrom("inbox_processed")
        .select("activity_id")
        .where("activity_id", "=", offer.id)
        .executeTakeFirst();
      if (seen != null) {
        report({ outcome: "ignored", detail: `duplicate: ${offer.id}` });
        return;
      }
      const allowed = await options.policy(offer.actor);
      let reason: string | undefined;
      let effects: Effects = emptyEffects();
      let taskGroupId: string | undefined;
      // Looked up first: the answer is written in the transaction that decides it, so an
      // offer is either unprocessed (and processed again when redelivered) or answered.
      const inbox = await inboxOf(offer.actor);
      const fresh = await options.commit(async (trx, address) => {
        const inserted = await trx
          .insertInto("inbox_processed")
          .values({
            activity_id: offer.id,
            actor_id: offer.actor,
            types: JSON.stringify(["Offer"]),
          })
          .onConflict((oc) => oc.column("activity_id").doNothing())
          .returning("activity_id")
          .executeTakeFirst();
        if (inserted == null) return false;
        if (!allowed) {
          reason = `${offer.actor} does not hold ${OFFER_ACCEPT_SCOPE} on this cluster.`;
          await address(answerTo(offer, { reason }), [inbox]);
          return true;
        }
        await sql`savepoint offer_graph`.execute(trx);
        try {
          const created = await tasks.createTaskGroupInTransaction(trx, offer.taskGraph);
          if (!created.result.created) {
            throw new ApiError("RequestConflict", "That task group already exists here.");
          }
          await sql`release savepoint offer_graph`.execute(trx);
          effects = created.effects;
          taskGroupId = created.result.taskGroupId;
          await trx
            .insertInto("offers_received")
            .values({ offer_id: offer.id, actor_id: offer.actor, task_group_id: taskGroupId })
            .execute();
          await address(answerTo(offer, { taskGroupUrl: urls.taskGroup(taskGroupId) }), [inbox]);
        } catch (error) {
          await sql`rollback to savepoint offer_graph`.execute(trx);
          const problems =
            error instanceof ApiError
              ? (error.details as { problems?: { message: string }[] } | undefined)?.problems
              : undefined;
          reason =
            `The task graph was refused: ${error instanceof Error ? error.message : String(error)}${
              problems != null ? ` ${problems.map((p) => p.message).join("; ")}` : ""
            }`.slice(0, 2000);
          await address(answerTo(offer, { reason }), [inbox]);
        }
        return true;
      });
      if (!fresh) {
        report({ outcome: "ignored", detail: `duplicate: ${offer.id}` });
        return;
      }
      await tasks.runEffects(effects);
      if (taskGroupId != null) {
        report({ outcome: "accepted", offerId: offer.id, taskGroupId });
        // The group may have resolved in the same transaction (every task doomed at once).
        await jobs.enqueue(OFFER_CALLBACK_QUEUE, `${taskGroupId}/accepted`, { taskGroupId });
      } else {
        report({ outcome: "rejected", offerId: offer.id, reason: reason ?? "refused" });
      }
    },

    /** Called when a task group resolved: sends its TaskGroupResolved back if it was offered. */
    async groupResolved(taskGroupId: string): Promise<void> {
      const row = await db
        .selectFrom("offers_received")
        .select("offer_id")
        .where("task_group_id", "=", taskGroupId)
        .executeTakeFirst();
      if (row == null) return;
      await jobs.enqueue(OFFER_CALLBACK_QUEUE, `${taskGroupId}/${Date.now()}`, { taskGroupId });
    },

    /**
     * Sends the newest `TaskGroupResolved` of an offered group to the offering cluster,
     * unless it was sent already. The job handler of {@link OFFER_CALLBACK_QUEUE}.
     */
    async sendCallback(taskGroupId: string): Promise<void> {
      const offer = await db
        .selectFrom("offers_received")
        .selectAll()
        .where("task_group_id", "=", taskGroupId)
        .executeTakeFirst();
      if (offer == null) return;
      const latest = await db
        .selectFrom("outbox")
        .select(["activity_id", "activity"])
        .where(sql<boolean>`activity->'object'->>'id' = ${urls.taskGroup(taskGroupId)}`)
        .where(sql<boolean>`types::text like '%TaskGroupResolved%'`)
        .orderBy("seq", "desc")
        .executeTakeFirst();
      if (latest == null || latest.activity_id === offer.callback_activity_id) return;
      const inbox = await inboxOf(offer.actor_id);
      // The activity as published to followers, byte for byte the same claims; its delivery
      // and the note that it was sent are written together.
      await options.commit(async (trx, address) => {
        await address(latest.activity, [inbox]);
        await trx
          .updateTable("offers_received")
          .set({ callback_activity_id: latest.activity_id })
          .where("offer_id", "=", offer.offer_id)
          .execute();
      });
    },

    /** Enqueues the callbacks of resolved offered groups not yet sent (after a lost queue). */
    async recover(): Promise<void> {
      // A group whose last callback is the TaskGroupResolved of its latest resolution (written
      // with `published_at` = `resolved_at`) has nothing to send; a rerun's resolution is newer.
      const rows = await db
        .selectFrom("offers_received")
        .innerJoin("task_groups", "task_groups.task_group_id", "offers_received.task_group_id")
        .leftJoin("outbox", "outbox.activity_id", "offers_received.callback_activity_id")
        .select("offers_received.task_group_id")
        .where("task_groups.resolved_at", "is not", null)
        .where((eb) =>
          eb.or([
            eb("outbox.published_at", "is", null),
            eb("outbox.published_at", "<", eb.ref("task_groups.resolved_at")),
          ]),
        )
        .execute();
      for (const r of rows) {
        await jobs.enqueue(OFFER_CALLBACK_QUEUE, `${r.task_group_id}/recover`, {
          taskGroupId: r.task_group_id,
        });
      }
    },
  };
}
