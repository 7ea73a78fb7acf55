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
  parseActivity,
  type ArtifactObject,
  type TaskObject,
} from "../../protocol/index.ts";
import {
  emptyEffects,
  type Effects,
  type RemoteArtifactReport,
  type RemoteTaskReport,
  type TaskService,
} from "../domain/task-service.ts";
import { MIN_DEDUPE_RETENTION_DAYS } from "../config.ts";
import type { DatabaseSchema } from "../store/schema.ts";

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
 * for the dedupe record and the effects, whichever way the activity came.
 */
export type ActivityApplier = (
  compacted: Record<string, unknown>,
  actorId: string | undefined,
) => Promise<InboxOutcome>;

/** Builds the {@link ActivityApplier} shared by the inbox and catch-up paging. */
export function createActivityApplier(options: TaskwebInboxOptions): ActivityApplier {
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

  return async (compacted, actorId) => {
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
    const following = await db
      .selectFrom("following")
      .select("state")
      .where("actor_id", "=", value.actor)
      .executeTakeFirst();
    if (following?.state !== "accepted") {
      return report({
        outcome: "ignored",
        reason: "not-followed",
        detail: `${value.actor} is not followed`,
      });
    }
    const effects = await db.transaction().execute(async (trx): Promise<Effects | undefined> => {
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
      if (value.kind === "ArtifactPublished") {
        await tasks.applyRemoteArtifact(artifactReport(value.actor, value.artifact), trx);
        return emptyEffects();
      }
      // Recorded as processed; no local task waits on a remote group (subgraphs will).
      if (value.kind === "TaskGroupResolved") return emptyEffects();
      return await tasks.applyRemoteTask(taskReport(value.actor, value.task, "activity"), trx);
    });
    if (effects == null) {
      return report({ outcome: "ignored", reason: "duplicate", detail: value.id });
    }
    await tasks.runEffects(effects);
    return report({ outcome: "applied", activityId: value.id, kind: value.kind });
  };
}

/** Builds the listener for taskweb activities (Fedify's `.on(Activity, …)`). */
export function createTaskwebInbox(options: TaskwebInboxOptions) {
  const apply = createActivityApplier(options);
  return async (ctx: Context<null>, activity: Activity): Promise<void> => {
    let compacted: Record<string, unknown>;
    try {
      compacted = await compactWithTaskwebContext(await activity.toJsonLd(), ctx.contextLoader);
    } catch (error) {
      logger.info("Ignored an activity (unparsable): {error}", { error: String(error) });
      options.onOutcome?.({ outcome: "ignored", reason: "unparsable", detail: String(error) });
      return;
    }
    await apply(compacted, activity.actorId?.href);
  };
}
