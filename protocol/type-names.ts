/**
 * Type names as they arrive: JSON-LD lets a sender spell `TaskCompleted` as a term, as the
 * compact IRI `tw:TaskCompleted` or as the full IRI, in any order within `type`. Parsers
 * reduce all spellings to the short term before deciding what a document is.
 *
 * @module
 */
import { ACTIVITYSTREAMS_NAMESPACE, TASKWEB_NAMESPACE } from "./context.ts";
import { fail, ok } from "./result.ts";
import type { ParseResult } from "./result.ts";

/** The taskweb activity types. */
export const ACTIVITY_KINDS = [
  "TaskCompleted",
  "TaskFailed",
  "ArtifactPublished",
  "TaskGroupResolved",
] as const;

/** A taskweb activity type; the `kind` of a parsed activity. */
export type TaskwebActivityKind = (typeof ACTIVITY_KINDS)[number];

/** Every taskweb type name: the activity types and the object types `Task` and `Artifact`. */
export const TASKWEB_TYPE_NAMES = [...ACTIVITY_KINDS, "Task", "Artifact", "TaskGroup"] as const;

/** A taskweb type name. */
export type TaskwebTypeName = (typeof TASKWEB_TYPE_NAMES)[number];

/** The ActivityStreams base types taskweb types are paired with. */
export type BaseTypeName = "Activity" | "Object";

const TASKWEB_TYPES: ReadonlySet<string> = new Set(TASKWEB_TYPE_NAMES);
const BASE_TYPES: ReadonlySet<string> = new Set(["Activity", "Object"]);

function isTaskwebTypeName(name: string): name is TaskwebTypeName {
  return TASKWEB_TYPES.has(name);
}

/**
 * Reduces one type name to its short term when it is a taskweb type or an ActivityStreams
 * base type; any other name is returned unchanged.
 *
 * @param name - A type name as received, e.g. `https://taskweb.dev/ns/v1#Task` or `as:Object`.
 * @returns The short term, e.g. `Task` or `Object`.
 */
export function normaliseTypeName(name: string): string {
  for (const prefix of ["tw:", TASKWEB_NAMESPACE]) {
    if (name.startsWith(prefix)) {
      const local = name.slice(prefix.length);
      if (TASKWEB_TYPES.has(local)) return local;
    }
  }
  for (const prefix of ["as:", ACTIVITYSTREAMS_NAMESPACE]) {
    if (name.startsWith(prefix)) {
      const local = name.slice(prefix.length);
      if (BASE_TYPES.has(local)) return local;
    }
  }
  return name;
}

/**
 * Finds the one taskweb type of a document and checks that its base type is listed too.
 *
 * @param type - The document's `type` value.
 * @param path - JSON Pointer of `type`, for failures.
 * @param base - The base type that must be listed (`Activity` or `Object`).
 * @param allowed - The taskweb types acceptable here.
 * @returns The taskweb type, or `schema` (not a list of names), `unknown-type` (no taskweb
 *   type, several, or one not allowed here) or `missing-base-type`.
 */
export function classifyType<T extends TaskwebTypeName>(
  type: unknown,
  path: string,
  base: BaseTypeName,
  allowed: readonly T[],
): ParseResult<T> {
  const names = typeof type === "string" ? [type] : type;
  if (!Array.isArray(names) || !names.every((name) => typeof name === "string")) {
    return fail(
      "schema",
      `type must be a list of type names, e.g. ["${base}", "${allowed[0]}"]`,
      path,
    );
  }
  const normalised = names.map(normaliseTypeName);
  const taskweb = normalised.filter(isTaskwebTypeName);
  const expected = allowed.map((name) => `["${base}", "${name}"]`).join(" or ");
  const [only] = taskweb;
  if (only === undefined) {
    return fail("unknown-type", `type names no taskweb type; expected ${expected}`, path);
  }
  if (taskweb.length > 1) {
    return fail(
      "unknown-type",
      `type names ${taskweb.length} taskweb types (${taskweb.join(", ")}); send exactly one, as ${expected}`,
      path,
    );
  }
  if (!(allowed as readonly string[]).includes(only)) {
    return fail("unknown-type", `a ${only} is not acceptable here; expected ${expected}`, path);
  }
  if (!normalised.includes(base)) {
    return fail(
      "missing-base-type",
      `type must list "${base}" beside "${only}", as ["${base}", "${only}"]: ActivityPub servers such as Fedify refuse a lone custom type`,
      path,
    );
  }
  return ok(only as T);
}
