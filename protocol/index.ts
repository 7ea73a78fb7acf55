/**
 * The taskweb v1 wire format as a library: the JSON-LD context, the activity and object
 * types with their builders and parsers, the JSON Schemas, body limits, digests, the
 * origin rules and task ids.
 *
 * It depends on no server: a taskweb cluster, a third-party implementation's tests and the
 * conformance suite all use it the same way. Parsers never throw on untrusted input; they
 * return a {@link ParseResult} whose failure carries a {@link ParseFailureCode}.
 *
 * A receiver typically runs `checkJsonLimits` on the raw body, verifies signatures, then
 * calls `parseActivity` on the JSON.
 *
 * @packageDocumentation
 */
import taskGraphSchema from "./schemas/v1/task-graph.json" with { type: "json" };

export {
  ACTIVITYSTREAMS_CONTEXT_URL,
  CONTEXT,
  CONTEXT_WITH_DATA_INTEGRITY,
  DATA_INTEGRITY_CONTEXT_URL,
  PROTOCOL_VERSION,
  TASKWEB_CONTEXT,
  TASKWEB_NAMESPACE,
  CORE_TERMS,
  TASK_GROUP_TERMS,
  OFFER_TERMS,
  TAG_TERMS,
  INPUT_TERMS,
  checkTaskwebContext,
} from "./context.ts";
export { buildTaskGraphOffer, isTaskGraphOffer, parseTaskGraphOffer } from "./offers.ts";
export type { TaskGraphOffer, TaskGraphOfferInit, TaskGraphOfferJson } from "./offers.ts";
export type { TaskwebContext, TaskwebTermName } from "./context.ts";
export { PARSE_FAILURE_CODES } from "./result.ts";
export type { ParseFailure, ParseFailureCode, ParseResult } from "./result.ts";
export {
  PUBLIC_COLLECTION,
  TASK_STATES,
  buildArtifactObject,
  buildArtifactPublished,
  buildTaskCompleted,
  buildTaskFailed,
  buildTaskGroupObject,
  buildTaskGroupResolved,
  buildTaskObject,
  parseActivity,
  parseArtifactObject,
  parseTaskGroupObject,
  parseTaskObject,
} from "./activities.ts";
export type {
  ActivityFields,
  ActivityInit,
  ActivityJsonFields,
  ArtifactDocumentJson,
  ArtifactObject,
  ArtifactObjectInit,
  ArtifactObjectJson,
  ArtifactPublishedActivity,
  ArtifactPublishedInit,
  ArtifactPublishedJson,
  DateTimeInput,
  ObjectParseOptions,
  TaskCompletedActivity,
  TaskCompletedInit,
  TaskCompletedJson,
  TaskDocumentJson,
  TaskFailedActivity,
  TaskFailedInit,
  TaskFailedJson,
  TaskGroupDocumentJson,
  TaskGroupObject,
  TaskGroupObjectInit,
  TaskGroupObjectJson,
  TaskGroupResolvedActivity,
  TaskGroupResolvedInit,
  TaskGroupResolvedJson,
  TaskObject,
  TaskInput,
  TaskInputInit,
  TaskInputJson,
  TaskObjectInit,
  TaskObjectJson,
  TaskRequires,
  TaskState,
  TaskwebActivity,
  UrlInput,
} from "./activities.ts";
export { ACTIVITY_KINDS, normaliseTypeName } from "./type-names.ts";
export type { TaskwebActivityKind } from "./type-names.ts";
export { SCHEMA_NAMES, schemaDocuments, schemaId, validateAgainstSchema } from "./schemas.ts";
export type { SchemaName } from "./schemas.ts";
export { DEFAULT_MAX_JSON_BYTES, DEFAULT_MAX_JSON_DEPTH, checkJsonLimits } from "./limits.ts";
export type { JsonLimitsOptions } from "./limits.ts";
export {
  checkContentDigest,
  contentDigestOf,
  createSha256,
  formatContentDigest,
  isSha256Hex,
  parseContentDigest,
  sha256Hex,
  sha256OfStream,
} from "./digest.ts";
export type { Sha256Hasher } from "./digest.ts";
export { originOf, parseHttpUrl, sameOrigin } from "./origin.ts";
export {
  addProof,
  base58btc,
  decodeBase58btc,
  assertionMethodKey,
  ed25519FromMultibase,
  jcs,
  verifyProof,
} from "./proof.ts";
export type { AddProofOptions } from "./proof.ts";
export { isTaskId, newSlugId } from "./ids.ts";

/**
 * The JSON Schema (draft 2020-12) of a task graph, `https://taskweb.dev/schemas/v1/task-graph.json`:
 * a whole task group submitted at once. Self-contained; do not change the object.
 */
export const TASK_GRAPH_SCHEMA: Readonly<Record<string, unknown>> = taskGraphSchema;

/** One task of a {@link TaskGraphDocument}, as `TASK_GRAPH_SCHEMA` describes it. */
export interface TaskGraphTaskDocument {
  taskId: string;
  /** Must equal the graph's when given. */
  taskGroupId?: string;
  name?: string;
  /** Required unless `breakpoint` is true. */
  payload?: {
    command: string[];
    env?: Record<string, string>;
    /** Environment variables filled from the cluster's secrets, by secret name. */
    secrets?: Record<string, string>;
    maxRunTime?: number;
  };
  /** Task ids of this graph or of the receiving cluster, or URLs of remote tasks. */
  dependencies?: string[];
  requires?: "all-completed" | "all-resolved";
  inputs?: { task: string; artifact: string; path?: string }[];
  deadline?: string;
  retries?: number;
  /** Not scheduled until activated. */
  inactive?: boolean;
  /** Taskcluster's levels, `highest` to `lowest` (the default). */
  priority?: "highest" | "very-high" | "high" | "medium" | "low" | "very-low" | "lowest";
  /** Runs nothing; waits until a person or an API call resolves it. */
  breakpoint?: boolean;
  /** Labels for reports, such as `{"project": "web"}`: at most 32, queried by `/api/v1/stats`. */
  tags?: Record<string, string>;
  /**
   * Since v1.3: wait for one matching artifact from each of `clusters` (followed by the
   * cluster that runs the task), which become inputs at `join/<position>/<artifact name>`.
   */
  join?: {
    clusters: string[];
    /** A glob on the artifact's name. */
    artifact?: string;
    /** Tags the artifact must carry. */
    tags?: Record<string, string>;
    /** An ISO 8601 date-time, or a duration from creation such as `PT30M`. */
    deadline: string;
    /**
     * An ISO 8601 date-time, or a duration counted back from creation such as `P7D`: matching
     * artifacts recorded since then, before the task was created, count too.
     */
    since?: string;
    /** @defaultValue "fail" */
    atDeadline?: "run" | "fail";
  };
}

/** A task graph document: every task joins `taskGroupId`. */
export interface TaskGraphDocument {
  taskGroupId: string;
  tasks: TaskGraphTaskDocument[];
}
export { readRelayedActivities, verifyProvenance } from "./provenance.ts";
export type {
  InputVerification,
  JsonLoader,
  ProvenanceEvidence,
  ProvenanceRefusal,
  ProvenanceResult,
  VerifyProvenanceOptions,
} from "./provenance.ts";
