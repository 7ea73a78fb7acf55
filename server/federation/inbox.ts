/**
 * What the inbox does with a verified taskweb activity. It acts only when the activity
 * parses under taskweb's schema and origin rules, comes from a cluster this one follows,
 * and has never been processed before; the dedupe record and every effect commit in one
 * transaction, so a replay or a redelivery changes nothing.
 * @module
 */
import type { Context } from "@fedify/fedify";
import type { Activity } from "@fedify/vocab";
import { getLogger } from "@logtape/logtape";
import jsonld from "jsonld";
import type { Kysely } from "kysely";
import {
  CONTEXT,
  isTaskGraphOffer,
  parseActivity,
  type ArtifactObject,
  type TaskObject,
} from "../../protocol/index.ts";
import type { HookService, HookWork } from "../domain/hooks.ts";
import {
  emptyEffects,
  mergeEffects,
  type Effects,
  type RemoteArtifactReport,
  type RemoteTaskReport,
  type TaskService,
} from "../domain/task-service.ts";
import { MIN_DEDUPE_RETENTION_DAYS } from "../config.ts";
import type { DatabaseSchema } from "../store/schema.ts";
import type { OfferService } from "./offers.ts";
import {
  taskwebForm,
  verifyRelayedActivity,
  type RelayLoaders,
  type RelayService,
} from "./relays.ts";

type ParsedActivity = Extract<ReturnType<typeof parseActivity>, { ok: true }>["value"];

const logger = getLogger(["taskweb", "inbox"]);

/** Why an activity that passed signature checks was not acted on. */
export type IgnoredReason =
  | "unparsable"
  | "invalid"
  | "actor-mismatch"
  | "not-followed"
  | "duplicate"
  /** A relayed activity whose proof or publication did not check out. */
  | "relay-refused";

/** Outcome of one activity, reported to {@link TaskwebInboxOptions.onOutcome}. */
export type InboxOutcome =
  | { readonly outcome: "applied"; readonly activityId: string; readonly kind: string }
  | { readonly outcome: "ignored"; readonly reason: IgnoredReason; readonly detail: string };

/** Options for {@link createTaskwebInbox}. */
export interface TaskwebInboxOptions {
  readonly db: Kysely<DatabaseSchema>;
  readonly tasks: TaskService;
  /** Hooks matched against every applied activity, in the same transaction. */
  readonly hooks?: HookService;
  /** Receives `Offer`s of task graphs and admits the callbacks of our own offers. */
  readonly offers?: OfferService;
  /** Re-publishes the activities of relay sources as `Announce`s. */
  readonly relays?: RelayService;
  /** Loaders to verify relayed activities with; without them relays are refused. */
  readonly relayLoaders?: (ctx: Context<null>) => Promise<RelayLoaders>;
  /** The body of an admitted request as its sender sent it, by activity id. */
  readonly admittedBody?: (activityId: string) => Record<string, unknown> | undefined;
  readonly onOutcome?: (outcome: InboxOutcome) => void;
}

/** Converts a taskweb Artifact object into what the task service stores. */
export function artifactReport(actorId: string, a: ArtifactObject): RemoteArtifactReport {
  return {
    artifactUrl: a.id,
    taskUrl: a.task,
    actorId,
    name: a.name,
    contentUrl: a.url,
    sha256: a.sha256,
    size: a.size,
    mediaType: a.mediaType,
    tags: a.tags,
  };
}

/** Converts a taskweb Task object into what the task service stores. */
export function taskReport(
  actorId: string,
  task: TaskObject,
  source: RemoteTaskReport["source"],
): RemoteTaskReport {
  return {
    taskUrl: task.id,
    actorId,
    state: task.taskState,
    resolvedAt: task.resolved,
    artifacts: (task.artifacts ?? []).map((a) => artifactReport(actorId, a)),
    source,
  };
}

/**
 * The URL of the task or task group an activity reports on (an artifact's task for an
 * `ArtifactPublished`): what a task's page matches against its remote dependencies and inputs.
 */
export function reportedObjectId(value: ParsedActivity): string | null {
  if ("task" in value) return value.task.id;
  if ("artifact" in value) return value.artifact.task;
  if ("taskGroup" in value) return value.taskGroup.id;
  return null;
}

/** Re-compacts received JSON-LD with taskweb's context so its terms have their short names. */
export async function compactWithTaskwebContext(
  json: unknown,
  contextLoader: unknown,
): Promise<Record<string, unknown>> {
  return await jsonld.compact(json, { "@context": CONTEXT }, { documentLoader: contextLoader });
}

/**
 * Deletes the ids of activities processed more than `retentionDays` ago and returns how many
 * went. Senders retry for about three days, so a retention of 30 days or more (the
 * configuration refuses less) means a redelivery always finds its id.
 */
export async function pruneProcessedActivities(
  db: Kysely<DatabaseSchema>,
  retentionDays: number,
  now: Date = new Date(),
): Promise<number> {
  if (!(retentionDays >= MIN_DEDUPE_RETENTION_DAYS)) {
    throw new RangeError(
      `The dedupe retention must be at least ${MIN_DEDUPE_RETENTION_DAYS} days.`,
    );
  }
  const cutoff = new Date(now.getTime() - retentionDays * 86_400_000);
  const result = await db
    .deleteFrom("inbox_processed")
    .where("received_at", "<", cutoff)
    .executeTakeFirst();
  return Number(result.numDeletedRows);
}

/**
 * Applies one taskweb activity, compacted with taskweb's context, that `actorId` is known to
 * have published: by a verified signature (the inbox) or because it was read from that
 * actor's own outbox on its own origin (catch-up paging). Same checks and one transaction
 * for the dedupe record and the effects, whichever way the activity came. `raw` is the
 * activity as its sender sent it (what a relay re-publishes); the compacted form by default.
 */
export type ActivityApplier = (
  compacted: Record<string, unknown>,
  actorId: string | undefined,
  raw?: Record<string, unknown>,
) => Promise<InboxOutcome>;

/** What the inbox and catch-up paging share: the checks, the transaction, the report. */
function createInboxCore(options: TaskwebInboxOptions) {
  const { db, tasks } = options;
  const report = (o: InboxOutcome): InboxOutcome => {
    if (o.outcome === "ignored" && o.reason !== "duplicate") {
      logger.info("Ignored an activity ({reason}): {detail}", {
        reason: o.reason,
        detail: o.detail,
      });
    }
    options.onOutcome?.(o);
    return o;
  };

  /**
   * Applies a parsed activity whose sender is trusted: dedupe record, effects, hooks and,
   * for a relay source, the Announce re-publishing it, all in one transaction.
   */
  const applyParsed = async (
    value: ParsedActivity,
    raw: Record<string, unknown>,
    relayed?: { announceId: string; relayedBy: string },
  ): Promise<InboxOutcome> => {
    const applied = await db.transaction().execute(async (trx) => {
      const inserted = await trx
        .insertInto("inbox_processed")
        .values({
          activity_id: value.id,
          actor_id: value.actor,
          types: JSON.stringify([value.kind]),
          object_id: reportedObjectId(value),
        })
        .onConflict((oc) => oc.column("activity_id").doNothing())
        .returning("activity_id")
        .executeTakeFirst();
      if (inserted == null) {
        // Applied before, perhaps by catch-up paging, which reads no proofs: a relay source's
        // signed copy is relayed now (once; see relays.ts).
        const late =
          relayed == null
            ? await options.relays?.announceInTransaction(trx, value.actor, raw)
            : undefined;
        return late == null ? undefined : { late };
      }
      let effects: Effects;
      if (value.kind === "ArtifactPublished") {
        effects = await tasks.applyPublishedArtifact(
          artifactReport(value.actor, value.artifact),
          trx,
        );
      } else if (value.kind === "TaskGroupResolved") {
        // A task may wait on a remote group by its URL: the group counts as completed when
        // every task of it completed, and as failed otherwise.
        const g = value.taskGroup;
        effects = await tasks.applyRemoteTask(
          {
            taskUrl: g.id,
            actorId: value.actor,
            state: g.completedCount === g.taskCount ? "completed" : "failed",
            resolvedAt: g.resolved,
            artifacts: [],
            source: "activity",
          },
          trx,
        );
      } else {
        effects = await tasks.applyRemoteTask(taskReport(value.actor, value.task, "activity"), trx);
      }
      if (relayed != null) {
        await trx
          .insertInto("relayed_activities")
          .values({
            activity_id: value.id,
            announce_id: relayed.announceId,
            relayed_by: relayed.relayedBy,
            original_actor: value.actor,
            activity: JSON.stringify(raw),
          })
          .execute();
      } else {
        const announced = await options.relays?.announceInTransaction(trx, value.actor, raw);
        if (announced != null) effects.publish.push(announced);
      }
      // Hooks fire in this transaction: a redelivered activity stops at the insert above.
      const hookWork: HookWork | undefined = await options.hooks?.matchInTransaction(trx, value);
      return { effects, hookWork };
    });
    if (applied == null) {
      return report({ outcome: "ignored", reason: "duplicate", detail: value.id });
    }
    if ("late" in applied) {
      await tasks.runEffects({ ...emptyEffects(), publish: [applied.late] });
      return report({ outcome: "ignored", reason: "duplicate", detail: value.id });
    }
    const { effects, hookWork } = applied;
    if (hookWork != null && options.hooks != null) {
      mergeEffects(hookWork.effects, effects);
      await options.hooks.afterCommit(hookWork);
    } else {
      await tasks.runEffects(effects);
    }
    return report({ outcome: "applied", activityId: value.id, kind: value.kind });
  };

  const isFollowed = async (actorId: string): Promise<boolean> => {
    const following = await db
      .selectFrom("following")
      .select("state")
      .where("actor_id", "=", actorId)
      .executeTakeFirst();
    return following?.state === "accepted";
  };

  const applyCompacted: ActivityApplier = async (compacted, actorId, raw = compacted) => {
    const parsed = parseActivity(compacted);
    if (!parsed.ok) {
      return report({
        outcome: "ignored",
        reason: "invalid",
        detail: `${parsed.reason.code}: ${parsed.reason.message}`,
      });
    }
    const value = parsed.value;
    if (value.actor !== actorId) {
      return report({ outcome: "ignored", reason: "actor-mismatch", detail: value.id });
    }
    // A cluster that accepted one of our offers sends its group's resolution, followed or not.
    const offered =
      value.kind === "TaskGroupResolved" &&
      (await options.offers?.isOfferedGroup(value.actor, value.taskGroup.id)) === true;
    if (!offered && !(await isFollowed(value.actor))) {
      return report({
        outcome: "ignored",
        reason: "not-followed",
        detail: `${value.actor} is not followed`,
      });
    }
    // Relayed as sent, with its proof, when this cluster relays the sender.
    return await applyParsed(value, raw);
  };

  return { report, applyParsed, applyCompacted, isFollowed };
}

/** Builds the {@link ActivityApplier} shared by the inbox and catch-up paging. */
export function createActivityApplier(options: TaskwebInboxOptions): ActivityApplier {
  return createInboxCore(options).applyCompacted;
}

/** Builds the listener for taskweb activities (Fedify's `.on(Activity, …)`). */
export function createTaskwebInbox(options: TaskwebInboxOptions) {
  const { report, applyParsed, applyCompacted, isFollowed } = createInboxCore(options);

  /** An `Announce` from a followed cluster relaying another cluster's signed activity. */
  const receiveRelayed = async (
    ctx: Context<null>,
    raw: Record<string, unknown>,
    signer: string | undefined,
  ): Promise<void> => {
    if (signer == null || raw.actor !== signer || typeof raw.id !== "string") {
      report({ outcome: "ignored", reason: "actor-mismatch", detail: String(raw.id) });
      return;
    }
    if (!(await isFollowed(signer))) {
      report({ outcome: "ignored", reason: "not-followed", detail: `${signer} is not followed` });
      return;
    }
    const loaders = options.relayLoaders?.(ctx);
    if (loaders == null) {
      report({ outcome: "ignored", reason: "invalid", detail: "relays are not accepted here" });
      return;
    }
    const verified = await verifyRelayedActivity(raw, await loaders);
    if (!verified.ok) {
      report({
        outcome: "ignored",
        reason: "relay-refused",
        detail: `${verified.reason}: ${verified.detail}`,
      });
      return;
    }
    const compacted = taskwebForm(verified.original);
    const parsed = parseActivity(compacted);
    if (!parsed.ok || parsed.value.actor !== verified.original.actor) {
      report({
        outcome: "ignored",
        reason: "invalid",
        detail: parsed.ok ? "actor changed" : `${parsed.reason.code}: ${parsed.reason.message}`,
      });
      return;
    }
    await applyParsed(parsed.value, verified.original, { announceId: raw.id, relayedBy: signer });
  };

  return async (ctx: Context<null>, activity: Activity): Promise<void> => {
    let raw: Record<string, unknown>;
    let sent: Record<string, unknown> | undefined;
    let compacted: Record<string, unknown>;
    try {
      sent = activity.id == null ? undefined : options.admittedBody?.(activity.id.href);
      raw = (await activity.toJsonLd()) as Record<string, unknown>;
      if (raw.type === "Announce") {
        // The embedded original as its sender sent it: its proof covers those bytes.
        await receiveRelayed(ctx, sent ?? raw, activity.actorId?.href);
        return;
      }
      compacted = await compactWithTaskwebContext(raw, ctx.contextLoader);
    } catch (error) {
      report({ outcome: "ignored", reason: "unparsable", detail: String(error) });
      return;
    }
    if (options.offers != null && isTaskGraphOffer(compacted)) {
      await options.offers.receive(compacted, activity.actorId?.href);
      return;
    }
    await applyCompacted(compacted, activity.actorId?.href, sent ?? raw);
  };
}
