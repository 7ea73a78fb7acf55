/**
 * The ActivityStreams documents of this cluster's tasks and artifacts: what a task id
 * dereferences to, and the activities that announce a resolution.
 * @module
 */
import type { Selectable } from "kysely";
import {
  buildArtifactObject,
  buildArtifactPublished,
  buildTaskCompleted,
  buildTaskFailed,
  buildTaskGroupObject,
  buildTaskGroupResolved,
  buildTaskObject,
  type ArtifactDocumentJson,
  type ArtifactObjectInit,
  type TaskDocumentJson,
  type TaskGroupDocumentJson,
  type TaskGroupObjectInit,
  type TaskInputInit,
  type TaskObjectInit,
} from "../../protocol/index.ts";
import type { ClusterUrls } from "../federation/cluster-urls.ts";
import { storedDefinition } from "./task-definition.ts";
import type { ArtifactsTable, RunsTable, TasksTable } from "../store/schema.ts";

type TaskRow = Pick<
  Selectable<TasksTable>,
  "task_id" | "task_group_id" | "name" | "state" | "requires" | "resolved_at" | "definition"
>;
type RunRow = Pick<Selectable<RunsTable>, "run_id" | "reason_resolved" | "resolved_at">;
type ArtifactRow = Pick<
  Selectable<ArtifactsTable>,
  "name" | "media_type" | "size" | "sha256" | "expires_at"
>;

/** What a task document is made of. */
export interface TaskDocumentSource {
  readonly task: TaskRow;
  readonly run: RunRow | undefined;
  /** Local task ids or remote task URLs. */
  readonly dependencies: readonly string[];
  readonly artifacts: readonly ArtifactRow[];
  /** What it consumed (see `consumedInputs`); listed as `inputs` since v1.4. */
  readonly inputs?: readonly TaskInputInit[];
}

const RESOLVED = ["completed", "failed", "exception"];

function artifactInit(
  urls: ClusterUrls,
  taskId: string,
  a: ArtifactRow,
  tags: Readonly<Record<string, string>>,
): ArtifactObjectInit {
  return {
    id: urls.artifact(taskId, a.name),
    attributedTo: urls.actor,
    name: a.name,
    task: urls.task(taskId),
    url: urls.artifactContent(taskId, a.name),
    mediaType: a.media_type,
    size: Number(a.size),
    sha256: a.sha256,
    expires: new Date(a.expires_at),
    tags,
  };
}

function taskInit(urls: ClusterUrls, source: TaskDocumentSource): TaskObjectInit {
  const { task, run } = source;
  const resolved = RESOLVED.includes(task.state);
  // The task's tags travel on it and on each of its artifacts (since v1.3).
  const tags = storedDefinition(task.definition).tags;
  return {
    id: urls.task(task.task_id),
    attributedTo: urls.actor,
    name: task.name,
    taskGroup: urls.taskGroup(task.task_group_id),
    taskState: task.state,
    ...(run != null ? { runId: run.run_id } : {}),
    ...(resolved && run?.reason_resolved != null ? { reasonResolved: run.reason_resolved } : {}),
    ...(resolved && task.resolved_at != null ? { resolved: new Date(task.resolved_at) } : {}),
    dependencies: source.dependencies.map((d) => (d.includes("://") ? d : urls.task(d))),
    requires: task.requires,
    artifacts: source.artifacts.map((a) => artifactInit(urls, task.task_id, a, tags)),
    tags,
    inputs: source.inputs ?? [],
  };
}

/** The Artifact document of one of this cluster's artifacts. */
export function artifactDocument(
  urls: ClusterUrls,
  taskId: string,
  a: ArtifactRow,
  tags: Readonly<Record<string, string>> = {},
): ArtifactDocumentJson {
  return buildArtifactObject(artifactInit(urls, taskId, a, tags));
}

/** The Task document of one of this cluster's tasks, as its id dereferences to. */
export function taskDocument(urls: ClusterUrls, source: TaskDocumentSource): TaskDocumentJson {
  return buildTaskObject(taskInit(urls, source));
}

/** An activity as written to the outbox. */
export interface OutboxActivity {
  readonly id: string;
  readonly type: readonly string[];
}

/**
 * The activities announcing that a task resolved: one `ArtifactPublished` per artifact,
 * then `TaskCompleted` or `TaskFailed` carrying the task as it now is.
 */
export function buildTaskActivities(
  urls: ClusterUrls,
  source: TaskDocumentSource & { newActivityId: () => string },
): OutboxActivity[] {
  const published = new Date();
  const to = [urls.followers];
  const task = taskInit(urls, source);
  const out: OutboxActivity[] = [];
  for (const artifact of task.artifacts ?? []) {
    out.push(
      buildArtifactPublished({
        id: urls.activity(source.newActivityId()),
        actor: urls.actor,
        published,
        to,
        artifact,
      }),
    );
  }
  const state = source.task.state;
  const id = urls.activity(source.newActivityId());
  if (state === "completed") {
    out.push(
      buildTaskCompleted({
        id,
        actor: urls.actor,
        published,
        to,
        task: { ...task, taskState: "completed" },
      }),
    );
  } else if (state === "failed" || state === "exception") {
    out.push(
      buildTaskFailed({
        id,
        actor: urls.actor,
        published,
        to,
        task: { ...task, taskState: state, reasonResolved: task.reasonResolved ?? state },
      }),
    );
  }
  return out;
}

/** A task group's tally, as the database counts it. */
export interface TaskGroupTally {
  readonly taskGroupId: string;
  readonly taskCount: number;
  readonly completedCount: number;
  readonly failedCount: number;
  readonly exceptionCount: number;
  /** When the group last resolved; undefined while it has not (or was reopened). */
  readonly resolvedAt: Date | undefined;
}

function taskGroupInit(urls: ClusterUrls, tally: TaskGroupTally): TaskGroupObjectInit {
  return {
    id: urls.taskGroup(tally.taskGroupId),
    attributedTo: urls.actor,
    taskCount: tally.taskCount,
    completedCount: tally.completedCount,
    failedCount: tally.failedCount,
    exceptionCount: tally.exceptionCount,
    ...(tally.resolvedAt != null ? { resolved: tally.resolvedAt } : {}),
  };
}

/** The TaskGroup document of one of this cluster's task groups, as its id dereferences to. */
export function taskGroupDocument(urls: ClusterUrls, tally: TaskGroupTally): TaskGroupDocumentJson {
  return buildTaskGroupObject(taskGroupInit(urls, tally));
}

/** The `TaskGroupResolved` announcing that every active task of a group has resolved. */
export function buildTaskGroupActivity(
  urls: ClusterUrls,
  tally: TaskGroupTally & { readonly resolvedAt: Date },
  activityId: string,
): OutboxActivity {
  return buildTaskGroupResolved({
    id: urls.activity(activityId),
    actor: urls.actor,
    published: tally.resolvedAt,
    to: [urls.followers],
    taskGroup: { ...taskGroupInit(urls, tally), resolved: tally.resolvedAt },
  });
}
