/**
 * Catch-up by dereferencing: a cluster that missed a `TaskCompleted` (it was down, its
 * queue lost jobs, or it followed after the fact) asks the task's own cluster for the task's
 * current state. The answer is trusted by origin: the document must have the id that was
 * requested and be attributed to an actor on the same origin.
 * @module
 */
import type { DocumentLoader } from "@fedify/fedify";
import { getLogger } from "@logtape/logtape";
import { parseTaskObject } from "../../protocol/index.ts";
import type { TaskService } from "../domain/task-service.ts";
import { compactWithTaskwebContext, taskReport } from "./inbox.ts";

const logger = getLogger(["taskweb", "dereference"]);

/** Why a dereference did not apply anything. */
export type DereferenceFailure = "fetch-failed" | "invalid" | "id-mismatch";

/** Result of {@link dereferenceRemoteTask}. */
export type DereferenceResult =
  | { readonly ok: true; readonly state: string }
  | { readonly ok: false; readonly reason: DereferenceFailure; readonly detail: string };

/** Fetches the remote task at `url` and applies its state. */
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
  const parsed = parseTaskObject(compacted);
  if (!parsed.ok) return { ok: false, reason: "invalid", detail: parsed.reason.message };
  if (parsed.value.id !== url) {
    return { ok: false, reason: "id-mismatch", detail: `${url} served ${parsed.value.id}` };
  }
  await tasks.applyRemoteTask(taskReport(parsed.value.attributedTo, parsed.value, "dereference"));
  return { ok: true, state: parsed.value.taskState };
}
