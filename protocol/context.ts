/**
 * The JSON-LD context of taskweb v1 and the check that a received `@context` gives taskweb
 * terms exactly their v1 meaning.
 *
 * The context travels inline, never by URL: a receiver that cannot fetch a context URL
 * refuses the activity, and a term the context does not define is dropped by JSON-LD
 * canonicalisation and so is not covered by a Linked Data signature.
 *
 * @module
 */
import type { ParseFailure } from "./result.ts";

/** The IRI every taskweb v1 term expands under. */
export const TASKWEB_NAMESPACE = "https://taskweb.dev/ns/v1#";

/** The version of the wire format this library speaks; the value of `protocolVersion`. */
export const PROTOCOL_VERSION = "1";

/** The ActivityStreams 2.0 context IRI; always the first entry of a taskweb `@context`. */
export const ACTIVITYSTREAMS_CONTEXT_URL = "https://www.w3.org/ns/activitystreams";

/**
 * The Data Integrity context IRI. A sender that adds an Object Integrity Proof (FEP-8b32)
 * puts it between the ActivityStreams context and {@link TASKWEB_CONTEXT}.
 */
export const DATA_INTEGRITY_CONTEXT_URL = "https://w3id.org/security/data-integrity/v1";

/** The ActivityStreams namespace, under which `Activity` and `Object` expand. */
export const ACTIVITYSTREAMS_NAMESPACE = "https://www.w3.org/ns/activitystreams#";

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

/**
 * The inline JSON-LD context object that defines every taskweb v1 term.
 *
 * Numbers and strings are plain terms (no type coercion), so `size: 12` and
 * `resolved: "2026-…Z"` round-trip through JSON-LD unchanged; URL-valued terms use
 * `"@type": "@id"`; `artifacts` and `dependencies` are sets, so compaction keeps them arrays
 * even with one element (and drops them when empty). The object is frozen; copy it before
 * changing it.
 */
export const TASKWEB_CONTEXT = deepFreeze({
  tw: TASKWEB_NAMESPACE,
  TaskCompleted: "tw:TaskCompleted",
  TaskFailed: "tw:TaskFailed",
  ArtifactPublished: "tw:ArtifactPublished",
  Task: "tw:Task",
  Artifact: "tw:Artifact",
  taskState: "tw:taskState",
  taskGroup: { "@id": "tw:taskGroup", "@type": "@id" },
  runId: "tw:runId",
  reasonResolved: "tw:reasonResolved",
  resolved: "tw:resolved",
  artifacts: { "@id": "tw:artifacts", "@container": "@set" },
  sha256: "tw:sha256",
  size: "tw:size",
  expires: "tw:expires",
  task: { "@id": "tw:task", "@type": "@id" },
  dependencies: { "@id": "tw:dependencies", "@type": "@id", "@container": "@set" },
  requires: "tw:requires",
  protocolVersion: "tw:protocolVersion",
  // Since v1.1: task groups.
  TaskGroupResolved: "tw:TaskGroupResolved",
  TaskGroup: "tw:TaskGroup",
  taskCount: "tw:taskCount",
  completedCount: "tw:completedCount",
  failedCount: "tw:failedCount",
  exceptionCount: "tw:exceptionCount",
  // Since v1.2: offers of task graphs (see spec/v1/offers-and-relays.md).
  TaskGraph: "tw:TaskGraph",
  taskGraph: { "@id": "tw:taskGraph", "@type": "@json" },
  // Since v1.3: tags on tasks and artifacts (see spec/v1/tags.md).
  tags: { "@id": "tw:tags", "@type": "@json" },
  // Since v1.4: the inputs a task consumed, for provenance (see spec/v1/provenance.md).
  // Each entry is a JSON literal, in a set so that one input stays an array when compacted.
  inputs: { "@id": "tw:inputs", "@type": "@json", "@container": "@set" },
} as const);

/** The `@context` array of a taskweb document: ActivityStreams, then the taskweb terms. */
export const CONTEXT = deepFreeze([ACTIVITYSTREAMS_CONTEXT_URL, TASKWEB_CONTEXT] as const);

/** The `@context` array of a taskweb document that carries a Data Integrity proof. */
export const CONTEXT_WITH_DATA_INTEGRITY = deepFreeze([
  ACTIVITYSTREAMS_CONTEXT_URL,
  DATA_INTEGRITY_CONTEXT_URL,
  TASKWEB_CONTEXT,
] as const);

/** The wire type of {@link CONTEXT}. */
export type TaskwebContext = [typeof ACTIVITYSTREAMS_CONTEXT_URL, typeof TASKWEB_CONTEXT];

/**
 * A fresh, mutable copy of {@link CONTEXT} for a document being built, so that a caller who
 * appends to a document's `@context` cannot change the shared constant.
 */
export function contextForDocument(): TaskwebContext {
  return [ACTIVITYSTREAMS_CONTEXT_URL, structuredClone(TASKWEB_CONTEXT)];
}

/** A term of {@link TASKWEB_CONTEXT}. */
export type TaskwebTermName = keyof typeof TASKWEB_CONTEXT;
type TermName = TaskwebTermName;
const TERM_NAMES = Object.keys(TASKWEB_CONTEXT) as TermName[];

/** The terms added in v1.1 for task groups; documents about task groups must define them. */
export const TASK_GROUP_TERMS: readonly TaskwebTermName[] = [
  "TaskGroupResolved",
  "TaskGroup",
  "taskCount",
  "completedCount",
  "failedCount",
  "exceptionCount",
];

/** The terms added in v1.2 for offers of task graphs; an `Offer` of a graph must define them. */
export const OFFER_TERMS: readonly TaskwebTermName[] = ["TaskGraph", "taskGraph"];

/** The term added in v1.3 for tags; a document whose objects carry `tags` must define it. */
export const TAG_TERMS: readonly TaskwebTermName[] = ["tags"];

/** The term added in v1.4 for provenance; a task document that carries `inputs` must define it. */
export const INPUT_TERMS: readonly TaskwebTermName[] = ["inputs"];

/**
 * The v1.0 terms, which every taskweb document's `@context` must define. Terms added by a
 * later minor version are required only in documents that use them, so that a v1.0 peer's
 * documents stay valid.
 */
export const CORE_TERMS: readonly TaskwebTermName[] = TERM_NAMES.filter(
  (term) =>
    !TASK_GROUP_TERMS.includes(term) &&
    !OFFER_TERMS.includes(term) &&
    !TAG_TERMS.includes(term) &&
    !INPUT_TERMS.includes(term),
);

interface NormalisedDefinition {
  readonly id: string;
  readonly type: string | undefined;
  readonly container: string | undefined;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function expandIri(value: string, twPrefix: string | undefined): string {
  if (value.startsWith("tw:") && twPrefix !== undefined) return twPrefix + value.slice(3);
  return value;
}

function normaliseDefinition(
  definition: unknown,
  twPrefix: string | undefined,
): NormalisedDefinition | undefined {
  if (typeof definition === "string") {
    return { id: expandIri(definition, twPrefix), type: undefined, container: undefined };
  }
  if (!isPlainObject(definition)) return undefined;
  const id = definition["@id"];
  if (typeof id !== "string") return undefined;
  // Only keys that cannot change the meaning of a taskweb term are tolerated; anything else
  // (a scoped context, @reverse, a language) makes the definition differ from v1.
  for (const key of Object.keys(definition)) {
    if (key !== "@id" && key !== "@type" && key !== "@container" && key !== "@protected") {
      return undefined;
    }
  }
  const type = definition["@type"];
  if (type !== undefined && typeof type !== "string") return undefined;
  let container = definition["@container"];
  if (Array.isArray(container) && container.length === 1) container = container[0];
  if (container !== undefined && typeof container !== "string") return undefined;
  return {
    id: expandIri(id, twPrefix),
    type: type === undefined ? undefined : expandIri(type, twPrefix),
    container,
  };
}

const EXPECTED = new Map<string, NormalisedDefinition | undefined>(
  TERM_NAMES.map((term) => [term, normaliseDefinition(TASKWEB_CONTEXT[term], TASKWEB_NAMESPACE)]),
);

function sameDefinition(a: NormalisedDefinition | undefined, b: NormalisedDefinition | undefined) {
  return (
    a !== undefined &&
    b !== undefined &&
    a.id === b.id &&
    a.type === b.type &&
    a.container === b.container
  );
}

/**
 * Checks that the `@context` of a top-level taskweb document gives every taskweb term its
 * v1 meaning, so that what a JSON reader sees is what a JSON-LD processor (and a Linked Data
 * signature) sees.
 *
 * Rules, in JSON-LD processing order:
 * - the ActivityStreams context IRI is included;
 * - an inline object defines every term of `required` (by default the v1.0
 *   {@link CORE_TERMS}) with the same IRI, `@type` and `@container` as
 *   {@link TASKWEB_CONTEXT}; any other taskweb term it defines must have that meaning too,
 *   and unknown terms are allowed, for later minor versions;
 * - no remote context (an IRI, or `@import`) follows that object, because its content is
 *   unknown here and could redefine a taskweb term (the security context redefines
 *   `expires`), and no later inline object or `null` undoes it.
 *
 * @param context - The value of the document's `@context`, or `undefined` when absent.
 * @param required - The taskweb terms the document must define.
 * @returns `undefined` when the context is acceptable, otherwise why it is not.
 */
export function checkTaskwebContext(
  context: unknown,
  required: readonly TaskwebTermName[] = CORE_TERMS,
): ParseFailure | undefined {
  const hint = "put the ActivityStreams context IRI first and TASKWEB_CONTEXT last in @context";
  if (context === undefined) {
    return {
      code: "bad-context",
      message: `the document has no @context; ${hint}`,
      path: "/@context",
    };
  }
  const entries: unknown[] = Array.isArray(context) ? context : [context];
  const defined = new Map<string, boolean>();
  let activityStreams = false;
  let twPrefix: string | undefined;
  for (const [index, entry] of entries.entries()) {
    const path = Array.isArray(context) ? `/@context/${index}` : "/@context";
    const anyTaskwebTermDefined = [...defined.values()].some(Boolean);
    if (entry === null) {
      // A null entry resets the active context: everything before it stops applying.
      defined.clear();
      activityStreams = false;
      twPrefix = undefined;
    } else if (typeof entry === "string") {
      if (anyTaskwebTermDefined) {
        return {
          code: "bad-context",
          message: `the remote context ${JSON.stringify(entry)} comes after the taskweb terms and could redefine them; ${hint}`,
          path,
        };
      }
      if (entry === ACTIVITYSTREAMS_CONTEXT_URL) activityStreams = true;
    } else if (isPlainObject(entry)) {
      if ("@import" in entry && anyTaskwebTermDefined) {
        return {
          code: "bad-context",
          message: `an @import after the taskweb terms could redefine them; ${hint}`,
          path: `${path}/@import`,
        };
      }
      const tw = entry["tw"];
      if (typeof tw === "string") twPrefix = tw;
      else if ("tw" in entry) twPrefix = undefined;
      for (const term of TERM_NAMES) {
        if (!(term in entry)) continue;
        const same = sameDefinition(normaliseDefinition(entry[term], twPrefix), EXPECTED.get(term));
        defined.set(term, same);
      }
    } else {
      return {
        code: "bad-context",
        message: "@context entries must be context IRIs or context objects",
        path,
      };
    }
  }
  if (!activityStreams) {
    return {
      code: "bad-context",
      message: `@context does not include ${ACTIVITYSTREAMS_CONTEXT_URL}; ${hint}`,
      path: "/@context",
    };
  }
  const redefined = TERM_NAMES.filter((term) => defined.get(term) === false);
  const missing = [...new Set([...required, ...redefined])].filter(
    (term) => defined.get(term) !== true,
  );
  if (missing.length > 0) {
    let message: string;
    if (redefined.length > 0) {
      message = `@context gives the taskweb term(s) ${redefined.join(", ")} another meaning than taskweb v1; use TASKWEB_CONTEXT unchanged as the last entry`;
    } else if (defined.size === 0) {
      // The usual cause: a library compacted the document with the ActivityStreams context
      // only, leaving taskweb terms as full IRIs.
      message = `@context does not include TASKWEB_CONTEXT; ${hint}, or re-compact the document with CONTEXT`;
    } else {
      message = `@context does not define the taskweb term(s) ${missing.join(", ")}; ${hint}`;
    }
    return { code: "bad-context", message, path: "/@context" };
  }
  return undefined;
}
