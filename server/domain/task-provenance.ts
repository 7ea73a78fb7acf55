/**
 * What a task consumed, as its published document lists it (`inputs`, since v1.4; see
 * spec/v1/provenance.md): every declared input and every join input that a run fetched, with
 * the cluster that published it and the SHA-256 the worker verified its bytes against (recorded
 * per input when a run fetched it). An input no run has verified is not listed: not before the
 * task runs, and not when its bytes were refused.
 * @module
 */
import type { Kysely } from "kysely";
import type { TaskInputInit } from "../../protocol/index.ts";
import type { ClusterUrls } from "../federation/cluster-urls.ts";
import type { DatabaseSchema } from "../store/schema.ts";

/**
 * The inputs of each of `taskIds`, in path order. An input no run has fetched and verified
 * yet (or whose bytes a run refused) is left out, and so is a private
 * artifact: one of this cluster's own marked private, or a remote one named `private/…` (its
 * cluster serves it only to signed requests). Its name and digest are as private as its bytes.
 */
export async function consumedInputs(
  db: Kysely<DatabaseSchema>,
  urls: ClusterUrls,
  taskIds: readonly string[],
): Promise<Map<string, TaskInputInit[]>> {
  const out = new Map<string, TaskInputInit[]>();
  if (taskIds.length === 0) return out;
  const rows = await db
    .selectFrom("task_inputs")
    .leftJoin("remote_artifacts", "remote_artifacts.artifact_url", "task_inputs.artifact_url")
    .select([
      "task_inputs.task_id",
      "task_inputs.path",
      "task_inputs.artifact_url",
      "task_inputs.task_url",
      "task_inputs.sha256 as consumed",
      "remote_artifacts.actor_id",
    ])
    .where("task_inputs.task_id", "in", taskIds)
    .orderBy("task_inputs.task_id")
    .orderBy("task_inputs.path")
    .execute();
  for (const row of rows) {
    let input: TaskInputInit | undefined;
    const localTask = urls.localTaskId(row.task_url);
    const name = nameOf(row);
    if (name?.startsWith("private/") === true) continue;
    // Only what a run verified: a task lists nothing it did not check ([TW-PRV-3]).
    const consumed = row.consumed;
    if (consumed == null) continue;
    if (localTask != null) {
      const local = await db
        .selectFrom("artifacts")
        .select(["sha256", "private"])
        .where("task_id", "=", localTask)
        .where("name", "=", name ?? "")
        .executeTakeFirst();
      if (local != null && !local.private) {
        input = { attributedTo: urls.actor, sha256: consumed, ...baseOf(row) };
      }
    } else if (row.actor_id != null) {
      input = { attributedTo: row.actor_id, sha256: consumed, ...baseOf(row) };
    }
    if (input == null) continue;
    const list = out.get(row.task_id) ?? [];
    list.push(input);
    out.set(row.task_id, list);
  }
  return out;
}

/** The artifact's name, when its URL is `<task URL>/artifacts/<name>` as taskweb mints them. */
function nameOf(row: { artifact_url: string; task_url: string }): string | undefined {
  const prefix = `${row.task_url}/artifacts/`;
  if (!row.artifact_url.startsWith(prefix)) return undefined;
  try {
    return decodeURIComponent(row.artifact_url.slice(prefix.length));
  } catch {
    return undefined;
  }
}

function baseOf(row: { artifact_url: string; task_url: string; path: string }) {
  return { artifact: row.artifact_url, task: row.task_url, path: row.path };
}
