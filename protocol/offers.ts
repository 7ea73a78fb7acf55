/**
 * The `Offer` of a task graph: cluster B asks cluster C to run a whole task group. C answers
 * with `Accept` (its `result` is the task group's URL on C) or `Reject`, and once the group
 * resolves sends B the group's `TaskGroupResolved`. See spec/v1/offers-and-relays.md.
 *
 * The graph travels as a JSON literal (`taskGraph`, `"@type": "@json"`) in the task graph
 * format of `schemas/v1/task-graph.json`: JSON-LD leaves it as it is, and the receiver
 * validates it exactly as a graph submitted to its API.
 * @module
 */
import {
  ACTIVITYSTREAMS_CONTEXT_URL,
  CORE_TERMS,
  OFFER_TERMS,
  TASKWEB_CONTEXT,
  checkTaskwebContext,
  type TaskwebContext,
} from "./context.ts";
import { parseHttpUrl, sameOrigin } from "./origin.ts";
import { fail, ok, type ParseResult } from "./result.ts";

/** An `Offer` of a task graph as sent on the wire. */
export interface TaskGraphOfferJson {
  readonly "@context": TaskwebContext;
  readonly id: string;
  readonly type: "Offer";
  readonly actor: string;
  readonly to: readonly string[];
  readonly target: string;
  readonly published: string;
  readonly object: {
    readonly id: string;
    readonly type: readonly ["Object", "TaskGraph"];
    readonly attributedTo: string;
    readonly taskGraph: Readonly<Record<string, unknown>>;
  };
}

/** What {@link buildTaskGraphOffer} needs. */
export interface TaskGraphOfferInit {
  /** The offer's id, on the offering cluster's origin. */
  readonly id: string;
  /** The offering cluster. */
  readonly actor: string;
  /** The cluster asked to run the graph. */
  readonly target: string;
  readonly published: Date | string;
  /** The task graph document (`taskGroupId`, `tasks`). */
  readonly taskGraph: Readonly<Record<string, unknown>>;
}

/** A parsed `Offer` of a task graph. */
export interface TaskGraphOffer {
  readonly id: string;
  readonly actor: string;
  readonly target: string;
  readonly published: string;
  /** The graph as sent; the receiver validates it as a submitted graph. */
  readonly taskGraph: Readonly<Record<string, unknown>>;
}

/**
 * Builds an `Offer` of a task graph. The object's id is the offer's id with `#graph`.
 * @returns The wire JSON, with taskweb's inline context.
 */
export function buildTaskGraphOffer(init: TaskGraphOfferInit): TaskGraphOfferJson {
  return {
    "@context": [ACTIVITYSTREAMS_CONTEXT_URL, structuredClone(TASKWEB_CONTEXT)],
    id: init.id,
    type: "Offer",
    actor: init.actor,
    to: [init.target],
    target: init.target,
    published: typeof init.published === "string" ? init.published : init.published.toISOString(),
    object: {
      id: `${init.id}#graph`,
      type: ["Object", "TaskGraph"],
      attributedTo: init.actor,
      taskGraph: init.taskGraph,
    },
  };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function types(value: unknown): string[] {
  return (Array.isArray(value) ? value : [value]).filter((t): t is string => typeof t === "string");
}

/** Whether a compacted activity is an `Offer` whose object is typed `TaskGraph`. */
export function isTaskGraphOffer(json: unknown): boolean {
  return (
    isRecord(json) &&
    types(json.type).includes("Offer") &&
    isRecord(json.object) &&
    types(json.object.type).includes("TaskGraph")
  );
}

/**
 * Parses an `Offer` of a task graph (compacted with taskweb's context). Checks the context,
 * the types, that every id is an http(s) URL on the actor's origin, and that the graph is a
 * JSON object; the graph itself is checked by the receiver as any submitted graph.
 */
export function parseTaskGraphOffer(json: unknown): ParseResult<TaskGraphOffer> {
  if (!isRecord(json)) return fail("schema", "An Offer must be a JSON object.");
  const contextProblem = checkTaskwebContext(json["@context"], [...CORE_TERMS, ...OFFER_TERMS]);
  if (contextProblem !== undefined) return { ok: false, reason: contextProblem };
  if (!types(json.type).includes("Offer")) return fail("unknown-type", "The type must be Offer.");
  const object = json.object;
  if (!isRecord(object)) return fail("schema", "The Offer must embed its TaskGraph.", "/object");
  const objectTypes = types(object.type);
  if (!objectTypes.includes("TaskGraph"))
    return fail("unknown-type", "The object must be typed TaskGraph.", "/object/type");
  if (!objectTypes.includes("Object"))
    return fail("missing-base-type", 'Type the object ["Object", "TaskGraph"].', "/object/type");
  for (const [path, value] of [
    ["/id", json.id],
    ["/actor", json.actor],
    ["/target", json.target],
    ["/object/id", object.id],
    ["/object/attributedTo", object.attributedTo],
  ] as const) {
    const url = parseHttpUrl(value, path);
    if (!url.ok) return url as ParseResult<never>;
  }
  const actor = json.actor as string;
  for (const [path, value] of [
    ["/id", json.id],
    ["/object/id", object.id],
  ] as const) {
    if (!sameOrigin(value as string, actor))
      return fail("origin-mismatch", "Ids must be on the actor's origin.", path);
  }
  if (object.attributedTo !== actor)
    return fail(
      "origin-mismatch",
      "The graph must be attributed to the actor.",
      "/object/attributedTo",
    );
  if (!isRecord(object.taskGraph))
    return fail("schema", "taskGraph must be a task graph object.", "/object/taskGraph");
  if (typeof json.published !== "string")
    return fail("schema", "published must be a date-time.", "/published");
  return ok({
    id: json.id as string,
    actor,
    target: json.target as string,
    published: json.published,
    taskGraph: object.taskGraph,
  });
}
