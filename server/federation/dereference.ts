/**
 * Catch-up by dereferencing: a cluster that missed a `TaskCompleted` (it was down, its
 * queue lost jobs, or it followed after the fact) asks the task's own cluster for the task's
 * current state. The answer is trusted by origin: the document must have the id that was
 * requested and be attributed to an actor on the same origin.
 *
 * A local task may also wait on a remote task group (an offered group, or a group of a
 * followed cluster): when its `TaskGroupResolved` was lost (the sender's delivery gave up,
 * this cluster was down), the group's own document says whether and how it resolved.
 * Start-up and the periodic reconcile dereference every remote dependency still unresolved,
 * tasks and groups alike, so a lost callback delays a waiting task and never blocks it.
 * @module
 */
import type { DocumentLoader } from "@fedify/fedify";
import { getLogger } from "@logtape/logtape";
import {
  parseTaskGroupObject,
  parseTaskObject,
  type TaskGroupObject,
} from "../../protocol/index.ts";
import type { RemoteTaskReport, TaskService } from "../domain/task-service.ts";
import { compactWithTaskwebContext, taskReport } from "./inbox.ts";

const logger = getLogger(["taskweb", "dereference"]);

/** Why a dereference did not apply anything. */
export type DereferenceFailure = "fetch-failed" | "invalid" | "id-mismatch";

/** Result of {@link dereferenceRemoteTask}. */
export type DereferenceResult =
  | { readonly ok: true; readonly state: string }
  | { readonly ok: false; readonly reason: DereferenceFailure; readonly detail: string };

/**
 * A resolved remote task group as a local dependency sees it: completed when every task of
 * it completed, failed otherwise (the same rule as for its `TaskGroupResolved`, see
 * spec/v1/offers-and-relays.md). Undefined while the group has not resolved.
 */
export function taskGroupReport(
  group: TaskGroupObject,
  source: RemoteTaskReport["source"],
): RemoteTaskReport | undefined {
  if (group.resolved == null) return undefined;
  return {
    taskUrl: group.id,
    actorId: group.attributedTo,
    state: group.completedCount === group.taskCount ? "completed" : "failed",
    resolvedAt: group.resolved,
    artifacts: [],
    source,
  };
}

/**
 * Fetches the remote task or task group at `url` and applies its state (a group only once it
 * resolved). Applying is idempotent: a dependency already resolved stays as it is.
 */
export async function dereferenceRemoteTask(
  url: string,
  loaders: { documentLoader: DocumentLoader; contextLoader: DocumentLoader },
  tasks: TaskService,
): Promise<DereferenceResult> {
  let document: unknown;
  try {
    ({ document } = await loaders.documentLoader(url));
  } catch (error) {
    logger.info("Could not dereference {url}: {error}", { url, error: String(error) });
    return { ok: false, reason: "fetch-failed", detail: String(error) };
  }
  let compacted: Record<string, unknown>;
  try {
    compacted = await compactWithTaskwebContext(document, loaders.contextLoader);
  } catch (error) {
    return { ok: false, reason: "invalid", detail: String(error) };
  }
  if ([compacted.type].flat().includes("TaskGroup")) {
    const group = parseTaskGroupObject(compacted);
    if (!group.ok) return { ok: false, reason: "invalid", detail: group.reason.message };
    if (group.value.id !== url) {
      return { ok: false, reason: "id-mismatch", detail: `${url} served ${group.value.id}` };
    }
    const report = taskGroupReport(group.value, "dereference");
    if (report == null) return { ok: true, state: "unresolved" };
    await tasks.applyRemoteTask(report);
    return { ok: true, state: report.state };
  }
  const parsed = parseTaskObject(compacted);
  if (!parsed.ok) return { ok: false, reason: "invalid", detail: parsed.reason.message };
  if (parsed.value.id !== url) {
    return { ok: false, reason: "id-mismatch", detail: `${url} served ${parsed.value.id}` };
  }
  await tasks.applyRemoteTask(taskReport(parsed.value.attributedTo, parsed.value, "dereference"));
  return { ok: true, state: parsed.value.taskState };
}
