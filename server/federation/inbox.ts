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
import type { DatabaseSchema } from "../store/schema.ts";
import type { OfferService } from "./offers.ts";

const logger = getLogger(["taskweb", "inbox"]);

/** Why an activity that passed signature checks was not acted on. */
export type IgnoredReason =
  "unparsable" | "invalid" | "actor-mismatch" | "not-followed" | "duplicate";

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

/** Re-compacts received JSON-LD with taskweb's context so its terms have their short names. */
export async function compactWithTaskwebContext(
  json: unknown,
  contextLoader: unknown,
): Promise<Record<string, unknown>> {
  return await jsonld.compact(json, { "@context": CONTEXT }, { documentLoader: contextLoader });
}

/** Builds the listener for taskweb activities (Fedify's `.on(Activity, …)`). */
export function createTaskwebInbox(options: TaskwebInboxOptions) {
  const { db, tasks } = options;
  const report = (o: InboxOutcome) => {
    if (o.outcome === "ignored") {
      logger.info("Ignored an activity ({reason}): {detail}", {
        reason: o.reason,
        detail: o.detail,
      });
    }
    options.onOutcome?.(o);
  };

  return async (ctx: Context<null>, activity: Activity): Promise<void> => {
    let compacted: Record<string, unknown>;
    try {
      compacted = await compactWithTaskwebContext(await activity.toJsonLd(), ctx.contextLoader);
    } catch (error) {
      report({ outcome: "ignored", reason: "unparsable", detail: String(error) });
      return;
    }
    if (options.offers != null && isTaskGraphOffer(compacted)) {
      await options.offers.receive(compacted, activity.actorId?.href);
      return;
    }
    const parsed = parseActivity(compacted);
    if (!parsed.ok) {
      report({
        outcome: "ignored",
        reason: "invalid",
        detail: `${parsed.reason.code}: ${parsed.reason.message}`,
      });
      return;
    }
    const value = parsed.value;
    if (value.actor !== activity.actorId?.href) {
      report({ outcome: "ignored", reason: "actor-mismatch", detail: value.id });
      return;
    }
    const following = await db
      .selectFrom("following")
      .select("state")
      .where("actor_id", "=", value.actor)
      .executeTakeFirst();
    // A cluster that accepted one of our offers sends its group's resolution, followed or not.
    const offered =
      value.kind === "TaskGroupResolved" &&
      (await options.offers?.isOfferedGroup(value.actor, value.taskGroup.id)) === true;
    if (following?.state !== "accepted" && !offered) {
      report({
        outcome: "ignored",
        reason: "not-followed",
        detail: `${value.actor} is not followed`,
      });
      return;
    }
    const applied = await db.transaction().execute(async (trx) => {
      const inserted = await trx
        .insertInto("inbox_processed")
        .values({
          activity_id: value.id,
          actor_id: value.actor,
          types: JSON.stringify([value.kind]),
        })
        .onConflict((oc) => oc.column("activity_id").doNothing())
        .returning("activity_id")
        .executeTakeFirst();
      if (inserted == null) return undefined;
      let effects: Effects;
      if (value.kind === "ArtifactPublished") {
        await tasks.applyRemoteArtifact(artifactReport(value.actor, value.artifact), trx);
        effects = emptyEffects();
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
      // Hooks fire in this transaction: a redelivered activity stops at the insert above.
      const hookWork: HookWork | undefined = await options.hooks?.matchInTransaction(trx, value);
      return { effects, hookWork };
    });
    if (applied == null) {
      report({ outcome: "ignored", reason: "duplicate", detail: value.id });
      return;
    }
    const { effects, hookWork } = applied;
    if (hookWork != null && options.hooks != null) {
      mergeEffects(hookWork.effects, effects);
      await options.hooks.afterCommit(hookWork);
    } else {
      await tasks.runEffects(effects);
    }
    report({ outcome: "applied", activityId: value.id, kind: value.kind });
  };
}
