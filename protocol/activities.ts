/**
 * The taskweb v1 activities and objects: their TypeScript types, builders that produce the
 * wire JSON, and parsers that accept only what the spec allows.
 *
 * Builders always emit the short multi-typed form (`["Activity", "TaskCompleted"]`) with the
 * inline context. Parsers check, in this order, and report the first failure:
 * 1. the top-level `type` (`unknown-type`, `missing-base-type`);
 * 2. `@context`, and that embedded objects carry none (`bad-context`);
 * 3. the embedded objects' `type`;
 * 4. the JSON Schema (`schema`, `bad-url`, `bad-digest`);
 * 5. URLs (`bad-url`);
 * 6. the origin rules (`origin-mismatch`), then that listed artifacts name their task
 *    (`task-mismatch`).
 *
 * @module
 */
import {
  ACTIVITYSTREAMS_NAMESPACE,
  CORE_TERMS,
  TAG_TERMS,
  INPUT_TERMS,
  TASK_GROUP_TERMS,
  checkTaskwebContext,
  contextForDocument,
} from "./context.ts";
import type { TaskwebContext } from "./context.ts";
import { parseHttpUrl } from "./origin.ts";
import { fail, ok } from "./result.ts";
import type { ParseFailure, ParseResult } from "./result.ts";
import { validateAgainstSchema } from "./schemas.ts";
import type { SchemaName } from "./schemas.ts";
import { ACTIVITY_KINDS, classifyType } from "./type-names.ts";
import type { TaskwebActivityKind } from "./type-names.ts";

/** The states of a task, as Taskcluster names them. */
export const TASK_STATES = [
  "unscheduled",
  "pending",
  "running",
  "completed",
  "failed",
  "exception",
] as const;

/** A task's state. `completed`, `failed` and `exception` are resolved states. */
export type TaskState = (typeof TASK_STATES)[number];

/** When a task may run: once all dependencies completed, or once all resolved in any way. */
export type TaskRequires = "all-completed" | "all-resolved";

/** The full IRI of the ActivityStreams public collection, which `to` may name. */
export const PUBLIC_COLLECTION = `${ACTIVITYSTREAMS_NAMESPACE}Public`;

// ---------------------------------------------------------------------------------------
// Parsed values

/** An artifact as a parser returns it. */
export interface ArtifactObject {
  /** The artifact's id, on its cluster's origin; `GET` returns this metadata. */
  readonly id: string;
  /** The cluster (actor) that published it. */
  readonly attributedTo: string;
  /** The name within its task, e.g. `public/build.txt`. */
  readonly name: string;
  /** The id of the task that produced it. */
  readonly task: string;
  /** Where the content is downloaded from; may be on another origin. */
  readonly url: string;
  /** The content's media type. */
  readonly mediaType: string;
  /** The content's length in bytes. */
  readonly size: number;
  /** The content's SHA-256, 64 lowercase hex digits. */
  readonly sha256: string;
  /** When the artifact stops being available (RFC 3339). */
  readonly expires: string;
  /** Since v1.3: its task's tags; empty when it has none. */
  readonly tags: Readonly<Record<string, string>>;
}

/** A task as a parser returns it. */
export interface TaskObject {
  /** The task's id, on its cluster's origin; `GET` returns its current state. */
  readonly id: string;
  /** The cluster (actor) that runs it. */
  readonly attributedTo: string;
  /** A human-readable name. */
  readonly name: string;
  /** The id of the task group it belongs to. */
  readonly taskGroup: string;
  /** The current state. */
  readonly taskState: TaskState;
  /** The latest run's number, once the task has run. */
  readonly runId?: number;
  /** Why the latest run resolved, once it has (always present for failed and exception). */
  readonly reasonResolved?: string;
  /** When the latest run resolved (RFC 3339), once it has. */
  readonly resolved?: string;
  /** Ids of the tasks this one waits for, on any cluster; empty when it has none. */
  readonly dependencies: readonly string[];
  /** When it may run. */
  readonly requires: TaskRequires;
  /** The artifacts it published; empty when it has none. */
  readonly artifacts: readonly ArtifactObject[];
  /** Since v1.3: its tags, such as `{"project": "web"}`; empty when it has none. */
  readonly tags: Readonly<Record<string, string>>;
  /** Since v1.4: the artifacts it consumed, for provenance; empty when it has none. */
  readonly inputs: readonly TaskInput[];
}

/**
 * One artifact a task consumed (since v1.4): which cluster published it, from which task,
 * and the digest the consuming cluster verified its bytes against. See spec/v1/provenance.md.
 */
export interface TaskInput {
  /** The artifact's id, on its own cluster's origin. */
  readonly artifact: string;
  /** The id of the task that produced it. */
  readonly task: string;
  /** The cluster (actor) that published it. */
  readonly attributedTo: string;
  /** The SHA-256 of the bytes consumed, 64 lowercase hex digits. */
  readonly sha256: string;
  /** Where the consuming task found it, relative to its inputs folder, e.g. `join/0/data.csv`. */
  readonly path?: string;
}

/** A task group's tally as a parser returns it (since v1.1). */
export interface TaskGroupObject {
  /** The group's id, on its cluster's origin; `GET` returns its current tally. */
  readonly id: string;
  /** The cluster (actor) the group belongs to. */
  readonly attributedTo: string;
  /** Tasks in the group, inactive ones included. */
  readonly taskCount: number;
  readonly completedCount: number;
  readonly failedCount: number;
  readonly exceptionCount: number;
  /** When the group last resolved (RFC 3339); absent while it has not. */
  readonly resolved?: string;
}

/** What every parsed activity has. */
export interface ActivityFields {
  /** The activity id; receivers deduplicate on it. */
  readonly id: string;
  /** The cluster that sent it. */
  readonly actor: string;
  /** When it was published (RFC 3339). */
  readonly published: string;
  /** Addressees; the public collection is given as {@link PUBLIC_COLLECTION}. */
  readonly to: readonly string[];
  /** The JSON as received, for storage and for forwarding with its signatures intact. */
  readonly raw: Readonly<Record<string, unknown>>;
}

/** A parsed `TaskCompleted`: the task completed. */
export interface TaskCompletedActivity extends ActivityFields {
  readonly kind: "TaskCompleted";
  /** The task, in state `completed`. */
  readonly task: TaskObject & { readonly taskState: "completed" };
}

/** A parsed `TaskFailed`: the task resolved as failed or exception. */
export interface TaskFailedActivity extends ActivityFields {
  readonly kind: "TaskFailed";
  /** The task, in state `failed` or `exception`, with the reason. */
  readonly task: TaskObject & {
    readonly taskState: "failed" | "exception";
    readonly reasonResolved: string;
  };
}

/** A parsed `ArtifactPublished`: a task published an artifact. */
export interface ArtifactPublishedActivity extends ActivityFields {
  readonly kind: "ArtifactPublished";
  /** The artifact. */
  readonly artifact: ArtifactObject;
}

/** A parsed `TaskGroupResolved`: every task of a group has resolved (since v1.1). */
export interface TaskGroupResolvedActivity extends ActivityFields {
  readonly kind: "TaskGroupResolved";
  /** The group's tally when it resolved. */
  readonly taskGroup: TaskGroupObject & { readonly resolved: string };
}

/** Any parsed taskweb activity; switch on `kind`. */
export type TaskwebActivity =
  | TaskCompletedActivity
  | TaskFailedActivity
  | ArtifactPublishedActivity
  | TaskGroupResolvedActivity;

// ---------------------------------------------------------------------------------------
// Wire JSON, as the builders produce it

/** An artifact object as embedded in a task or an activity. */
export interface ArtifactObjectJson {
  id: string;
  type: ["Object", "Artifact"];
  attributedTo: string;
  name: string;
  task: string;
  url: string;
  mediaType: string;
  size: number;
  sha256: string;
  expires: string;
  tags?: Record<string, string>;
}

/** An artifact document, as `GET` on the artifact's id returns it. */
export type ArtifactDocumentJson = { "@context": TaskwebContext } & ArtifactObjectJson;

/** A task object as embedded in an activity. */
export interface TaskObjectJson {
  id: string;
  type: ["Object", "Task"];
  attributedTo: string;
  name: string;
  taskGroup: string;
  taskState: TaskState;
  runId?: number;
  reasonResolved?: string;
  resolved?: string;
  dependencies: string[];
  requires: TaskRequires;
  artifacts: ArtifactObjectJson[];
  tags?: Record<string, string>;
  inputs?: TaskInputJson[];
}

/** An entry of a task's `inputs` on the wire (since v1.4). */
export interface TaskInputJson {
  artifact: string;
  task: string;
  attributedTo: string;
  sha256: string;
  path?: string;
}

/** A task document, as `GET` on the task's id returns it. */
export type TaskDocumentJson = { "@context": TaskwebContext } & TaskObjectJson;

/** What every taskweb activity has on the wire. */
export interface ActivityJsonFields {
  "@context": TaskwebContext;
  id: string;
  type: ["Activity", TaskwebActivityKind];
  actor: string;
  published: string;
  to?: string[];
}

/** A `TaskCompleted` on the wire. */
export interface TaskCompletedJson extends ActivityJsonFields {
  type: ["Activity", "TaskCompleted"];
  object: TaskObjectJson;
}

/** A `TaskFailed` on the wire. */
export interface TaskFailedJson extends ActivityJsonFields {
  type: ["Activity", "TaskFailed"];
  object: TaskObjectJson;
}

/** An `ArtifactPublished` on the wire. */
export interface ArtifactPublishedJson extends ActivityJsonFields {
  type: ["Activity", "ArtifactPublished"];
  object: ArtifactObjectJson;
}

/** A task group object as embedded in an activity. */
export interface TaskGroupObjectJson {
  id: string;
  type: ["Object", "TaskGroup"];
  attributedTo: string;
  taskCount: number;
  completedCount: number;
  failedCount: number;
  exceptionCount: number;
  resolved?: string;
}

/** A task group document, as `GET` on the group's id returns it. */
export type TaskGroupDocumentJson = { "@context": TaskwebContext } & TaskGroupObjectJson;

/** A `TaskGroupResolved` on the wire. */
export interface TaskGroupResolvedJson extends ActivityJsonFields {
  type: ["Activity", "TaskGroupResolved"];
  object: TaskGroupObjectJson & { resolved: string };
}

// ---------------------------------------------------------------------------------------
// Builders

/** A URL given as a string or a `URL`. */
export type UrlInput = string | URL;

/** A date-time given as a `Date` or an RFC 3339 string. */
export type DateTimeInput = Date | string;

/** What {@link buildArtifactObject} needs. A parsed {@link ArtifactObject} fits. */
export interface ArtifactObjectInit {
  readonly id: UrlInput;
  readonly attributedTo: UrlInput;
  readonly name: string;
  readonly task: UrlInput;
  readonly url: UrlInput;
  readonly mediaType: string;
  readonly size: number;
  readonly sha256: string;
  readonly expires: DateTimeInput;
  /** Since v1.3; left out of the wire JSON when empty. @defaultValue `{}` */
  readonly tags?: Readonly<Record<string, string>>;
}

/** What {@link buildTaskObject} needs. A parsed {@link TaskObject} fits. */
export interface TaskObjectInit {
  readonly id: UrlInput;
  readonly attributedTo: UrlInput;
  readonly name: string;
  readonly taskGroup: UrlInput;
  readonly taskState: TaskState;
  readonly runId?: number;
  readonly reasonResolved?: string;
  readonly resolved?: DateTimeInput;
  /** @defaultValue `[]` */
  readonly dependencies?: readonly UrlInput[];
  readonly requires: TaskRequires;
  /** @defaultValue `[]` */
  readonly artifacts?: readonly ArtifactObjectInit[];
  /** Since v1.3; left out of the wire JSON when empty. @defaultValue `{}` */
  readonly tags?: Readonly<Record<string, string>>;
  /** Since v1.4; left out of the wire JSON when empty. @defaultValue `[]` */
  readonly inputs?: readonly TaskInputInit[];
}

/** What an entry of {@link TaskObjectInit.inputs} needs. A parsed {@link TaskInput} fits. */
export interface TaskInputInit {
  readonly artifact: UrlInput;
  readonly task: UrlInput;
  readonly attributedTo: UrlInput;
  readonly sha256: string;
  readonly path?: string;
}

/** What {@link buildTaskGroupObject} needs. A parsed {@link TaskGroupObject} fits. */
export interface TaskGroupObjectInit {
  readonly id: UrlInput;
  readonly attributedTo: UrlInput;
  readonly taskCount: number;
  readonly completedCount: number;
  readonly failedCount: number;
  readonly exceptionCount: number;
  readonly resolved?: DateTimeInput;
}

/** What every activity builder needs. */
export interface ActivityInit {
  /** The activity id, on the actor's origin. */
  readonly id: UrlInput;
  /** The sending cluster. */
  readonly actor: UrlInput;
  readonly published: DateTimeInput;
  /** Addressees, e.g. the actor's followers collection; omitted when not given. */
  readonly to?: readonly UrlInput[];
}

/** What {@link buildTaskCompleted} needs. */
export interface TaskCompletedInit extends ActivityInit {
  readonly task: TaskObjectInit & { readonly taskState: "completed" };
}

/** What {@link buildTaskFailed} needs. */
export interface TaskFailedInit extends ActivityInit {
  readonly task: TaskObjectInit & {
    readonly taskState: "failed" | "exception";
    readonly reasonResolved: string;
  };
}

/** What {@link buildArtifactPublished} needs. */
export interface ArtifactPublishedInit extends ActivityInit {
  readonly artifact: ArtifactObjectInit;
}

/** What {@link buildTaskGroupResolved} needs. */
export interface TaskGroupResolvedInit extends ActivityInit {
  readonly taskGroup: TaskGroupObjectInit & { readonly resolved: DateTimeInput };
}

function dateTime(value: DateTimeInput): string {
  return typeof value === "string" ? value : value.toISOString();
}

function artifactJson(init: ArtifactObjectInit): ArtifactObjectJson {
  return {
    id: String(init.id),
    type: ["Object", "Artifact"],
    attributedTo: String(init.attributedTo),
    name: init.name,
    task: String(init.task),
    url: String(init.url),
    mediaType: init.mediaType,
    size: init.size,
    sha256: init.sha256,
    expires: dateTime(init.expires),
    ...tagsJson(init.tags),
  };
}

/** `tags` when there are any: a document without tags stays a v1.0–v1.2 document. */
function tagsJson(tags: Readonly<Record<string, string>> | undefined): {
  tags?: Record<string, string>;
} {
  return tags == null || Object.keys(tags).length === 0 ? {} : { tags: { ...tags } };
}

function taskJson(init: TaskObjectInit): TaskObjectJson {
  return {
    id: String(init.id),
    type: ["Object", "Task"],
    attributedTo: String(init.attributedTo),
    name: init.name,
    taskGroup: String(init.taskGroup),
    taskState: init.taskState,
    ...(init.runId === undefined ? {} : { runId: init.runId }),
    ...(init.reasonResolved === undefined ? {} : { reasonResolved: init.reasonResolved }),
    ...(init.resolved === undefined ? {} : { resolved: dateTime(init.resolved) }),
    dependencies: (init.dependencies ?? []).map(String),
    requires: init.requires,
    artifacts: (init.artifacts ?? []).map(artifactJson),
    ...tagsJson(init.tags),
    ...inputsJson(init.inputs),
  };
}

/** `inputs` when there are any: a task that consumed nothing stays a v1.0–v1.3 document. */
function inputsJson(inputs: readonly TaskInputInit[] | undefined): { inputs?: TaskInputJson[] } {
  if (inputs == null || inputs.length === 0) return {};
  return {
    inputs: inputs.map((input) => ({
      artifact: String(input.artifact),
      task: String(input.task),
      attributedTo: String(input.attributedTo),
      sha256: input.sha256,
      ...(input.path === undefined ? {} : { path: input.path }),
    })),
  };
}

function taskGroupJson(init: TaskGroupObjectInit): TaskGroupObjectJson {
  return {
    id: String(init.id),
    type: ["Object", "TaskGroup"],
    attributedTo: String(init.attributedTo),
    taskCount: init.taskCount,
    completedCount: init.completedCount,
    failedCount: init.failedCount,
    exceptionCount: init.exceptionCount,
    ...(init.resolved === undefined ? {} : { resolved: dateTime(init.resolved) }),
  };
}

function activityFields<T extends ActivityJsonFields["type"]>(
  init: ActivityInit,
  type: T,
): Omit<ActivityJsonFields, "@context" | "type"> & { type: T } {
  return {
    id: String(init.id),
    type,
    actor: String(init.actor),
    published: dateTime(init.published),
    ...(init.to === undefined ? {} : { to: init.to.map(String) }),
  };
}

/**
 * Builds an artifact document (what `GET` on its id returns). The input is not validated;
 * run the result through {@link parseArtifactObject} in tests.
 *
 * @param init - The artifact's fields.
 * @returns The wire JSON, with `@context`.
 */
export function buildArtifactObject(init: ArtifactObjectInit): ArtifactDocumentJson {
  return { "@context": contextForDocument(), ...artifactJson(init) };
}

/**
 * Builds a task document (what `GET` on its id returns), listing its artifacts without
 * their own `@context`. The input is not validated; run the result through
 * {@link parseTaskObject} in tests.
 *
 * @param init - The task's fields.
 * @returns The wire JSON, with `@context`; `dependencies` and `artifacts` are always present.
 */
export function buildTaskObject(init: TaskObjectInit): TaskDocumentJson {
  return { "@context": contextForDocument(), ...taskJson(init) };
}

/**
 * Builds a `TaskCompleted` activity embedding the task.
 *
 * @param init - The activity's fields and the completed task.
 * @returns The wire JSON, typed `["Activity", "TaskCompleted"]`.
 */
export function buildTaskCompleted(init: TaskCompletedInit): TaskCompletedJson {
  return {
    "@context": contextForDocument(),
    ...activityFields(init, ["Activity", "TaskCompleted"]),
    object: taskJson(init.task),
  };
}

/**
 * Builds a `TaskFailed` activity embedding the task.
 *
 * @param init - The activity's fields and the failed task, with its `reasonResolved`.
 * @returns The wire JSON, typed `["Activity", "TaskFailed"]`.
 */
export function buildTaskFailed(init: TaskFailedInit): TaskFailedJson {
  return {
    "@context": contextForDocument(),
    ...activityFields(init, ["Activity", "TaskFailed"]),
    object: taskJson(init.task),
  };
}

/**
 * Builds an `ArtifactPublished` activity embedding the artifact.
 *
 * @param init - The activity's fields and the artifact.
 * @returns The wire JSON, typed `["Activity", "ArtifactPublished"]`.
 */
export function buildArtifactPublished(init: ArtifactPublishedInit): ArtifactPublishedJson {
  return {
    "@context": contextForDocument(),
    ...activityFields(init, ["Activity", "ArtifactPublished"]),
    object: artifactJson(init.artifact),
  };
}

/**
 * Builds a task group document (what `GET` on its id returns). The input is not validated;
 * run the result through {@link parseTaskGroupObject} in tests.
 *
 * @param init - The group's tally.
 * @returns The wire JSON, with `@context`.
 */
export function buildTaskGroupObject(init: TaskGroupObjectInit): TaskGroupDocumentJson {
  return { "@context": contextForDocument(), ...taskGroupJson(init) };
}

/**
 * Builds a `TaskGroupResolved` activity embedding the group's tally.
 *
 * @param init - The activity's fields and the resolved group, with `resolved`.
 * @returns The wire JSON, typed `["Activity", "TaskGroupResolved"]`.
 */
export function buildTaskGroupResolved(init: TaskGroupResolvedInit): TaskGroupResolvedJson {
  return {
    "@context": contextForDocument(),
    ...activityFields(init, ["Activity", "TaskGroupResolved"]),
    object: { ...taskGroupJson(init.taskGroup), resolved: dateTime(init.taskGroup.resolved) },
  };
}

// ---------------------------------------------------------------------------------------
// Parsers

type JsonObject = Record<string, unknown>;

function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

// The shapes below are what the schemas guarantee once validation passed; a unit test
// checks that the schemas and these types list the same properties.
interface ValidatedArtifact {
  id: string;
  attributedTo: string;
  name: string;
  task: string;
  url: string;
  mediaType: string;
  size: number;
  sha256: string;
  expires: string;
  tags?: Record<string, string>;
}

interface ValidatedTask {
  id: string;
  attributedTo: string;
  name: string;
  taskGroup: string;
  taskState: TaskState;
  runId?: number;
  reasonResolved?: string;
  resolved?: string;
  dependencies?: string[];
  requires: TaskRequires;
  artifacts?: ValidatedArtifact[];
  tags?: Record<string, string>;
  inputs?: ValidatedInput[];
}

interface ValidatedInput {
  artifact: string;
  task: string;
  attributedTo: string;
  sha256: string;
  path?: string;
}

interface ValidatedTaskGroup {
  id: string;
  attributedTo: string;
  taskCount: number;
  completedCount: number;
  failedCount: number;
  exceptionCount: number;
  resolved?: string;
}

interface ValidatedActivity {
  id: string;
  actor: string;
  published: string;
  to?: string | string[];
  object: JsonObject;
}

function embeddedContextFailure(node: unknown, path: string): ParseFailure | undefined {
  if (!isJsonObject(node)) return undefined;
  if ("@context" in node) {
    return {
      code: "bad-context",
      message: `${path} carries its own @context; embedded objects must not, the document's @context applies to them`,
      path: `${path}/@context`,
    };
  }
  const artifacts = node["artifacts"];
  if (Array.isArray(artifacts)) {
    for (const [index, artifact] of artifacts.entries()) {
      const failure = embeddedContextFailure(artifact, `${path}/artifacts/${index}`);
      if (failure !== undefined) return failure;
    }
  }
  return undefined;
}

function typeFailure(
  node: unknown,
  path: string,
  expected: "Task" | "Artifact" | "TaskGroup",
): ParseFailure | undefined {
  // A missing or malformed object is left to the schema, which says what is missing.
  if (!isJsonObject(node) || !("type" in node)) return undefined;
  const result = classifyType(node["type"], `${path}/type`, "Object", [expected]);
  if (!result.ok) return result.reason;
  const artifacts = node["artifacts"];
  if (expected === "Task" && Array.isArray(artifacts)) {
    for (const [index, artifact] of artifacts.entries()) {
      const failure = typeFailure(artifact, `${path}/artifacts/${index}`, "Artifact");
      if (failure !== undefined) return failure;
    }
  }
  return undefined;
}

function taskUrls(task: ValidatedTask, path: string): [unknown, string][] {
  return [
    [task.id, `${path}/id`],
    [task.attributedTo, `${path}/attributedTo`],
    [task.taskGroup, `${path}/taskGroup`],
    ...(task.dependencies ?? []).map((url, index): [unknown, string] => [
      url,
      `${path}/dependencies/${index}`,
    ]),
    ...(task.artifacts ?? []).flatMap((artifact, index) =>
      artifactUrls(artifact, `${path}/artifacts/${index}`),
    ),
    ...(task.inputs ?? []).flatMap((input, index): [unknown, string][] => [
      [input.artifact, `${path}/inputs/${index}/artifact`],
      [input.task, `${path}/inputs/${index}/task`],
      [input.attributedTo, `${path}/inputs/${index}/attributedTo`],
    ]),
  ];
}

function artifactUrls(artifact: ValidatedArtifact, path: string): [unknown, string][] {
  return [
    [artifact.id, `${path}/id`],
    [artifact.attributedTo, `${path}/attributedTo`],
    [artifact.task, `${path}/task`],
    [artifact.url, `${path}/url`],
  ];
}

function urlFailure(urls: readonly [unknown, string][]): ParseFailure | undefined {
  for (const [url, path] of urls) {
    const parsed = parseHttpUrl(url, path);
    if (!parsed.ok) return parsed.reason;
  }
  return undefined;
}

/** The cluster every id in a document must belong to. */
interface Owner {
  /** The actor's URL, normalised. */
  readonly href: string;
  readonly origin: string;
  /** How the owner is named in messages. */
  readonly label: string;
}

function ownerOf(url: string, label: string): Owner {
  // Callers pass only URLs that parseHttpUrl accepted.
  const parsed = new URL(url);
  return { href: parsed.href, origin: parsed.origin, label };
}

function originFailure(url: string, path: string, owner: Owner): ParseFailure | undefined {
  const origin = new URL(url).origin;
  if (origin === owner.origin) return undefined;
  return {
    code: "origin-mismatch",
    message: `${path} is on ${origin}, but the ${owner.label} is on ${owner.origin}; a cluster may only speak for objects on its own origin`,
    path,
  };
}

function attributionFailure(url: string, path: string, owner: Owner): ParseFailure | undefined {
  if (new URL(url).href === owner.href) return undefined;
  return {
    code: "origin-mismatch",
    message: `${path} is ${url}, but must be the ${owner.label}, ${owner.href}`,
    path,
  };
}

function artifactOriginFailure(
  artifact: ValidatedArtifact,
  path: string,
  owner: Owner,
): ParseFailure | undefined {
  return (
    originFailure(artifact.id, `${path}/id`, owner) ??
    attributionFailure(artifact.attributedTo, `${path}/attributedTo`, owner) ??
    originFailure(artifact.task, `${path}/task`, owner)
  );
}

function taskOriginFailure(
  task: ValidatedTask,
  path: string,
  owner: Owner,
): ParseFailure | undefined {
  const own =
    originFailure(task.id, `${path}/id`, owner) ??
    attributionFailure(task.attributedTo, `${path}/attributedTo`, owner) ??
    originFailure(task.taskGroup, `${path}/taskGroup`, owner);
  if (own !== undefined) return own;
  const artifacts = task.artifacts ?? [];
  for (const [index, artifact] of artifacts.entries()) {
    const failure = artifactOriginFailure(artifact, `${path}/artifacts/${index}`, owner);
    if (failure !== undefined) return failure;
  }
  // An input is its own cluster's: its artifact and task on the origin of its attributedTo.
  for (const [index, input] of (task.inputs ?? []).entries()) {
    const at = `${path}/inputs/${index}`;
    const publisher = ownerOf(input.attributedTo, `cluster in ${at}/attributedTo`);
    const failure =
      originFailure(input.artifact, `${at}/artifact`, publisher) ??
      originFailure(input.task, `${at}/task`, publisher);
    if (failure !== undefined) return failure;
  }
  const taskHref = new URL(task.id).href;
  for (const [index, artifact] of artifacts.entries()) {
    if (new URL(artifact.task).href !== taskHref) {
      return {
        code: "task-mismatch",
        message: `${path}/artifacts/${index} names the task ${artifact.task}, but is listed on ${task.id}; list an artifact only on the task that produced it`,
        path: `${path}/artifacts/${index}/task`,
      };
    }
  }
  return undefined;
}

function artifactValue(artifact: ValidatedArtifact): ArtifactObject {
  return {
    id: artifact.id,
    attributedTo: artifact.attributedTo,
    name: artifact.name,
    task: artifact.task,
    url: artifact.url,
    mediaType: artifact.mediaType,
    size: artifact.size,
    sha256: artifact.sha256,
    expires: artifact.expires,
    tags: artifact.tags ?? {},
  };
}

function taskValue(task: ValidatedTask): TaskObject {
  return {
    id: task.id,
    attributedTo: task.attributedTo,
    name: task.name,
    taskGroup: task.taskGroup,
    taskState: task.taskState,
    ...(task.runId === undefined ? {} : { runId: task.runId }),
    ...(task.reasonResolved === undefined ? {} : { reasonResolved: task.reasonResolved }),
    ...(task.resolved === undefined ? {} : { resolved: task.resolved }),
    dependencies: task.dependencies ?? [],
    requires: task.requires,
    artifacts: (task.artifacts ?? []).map(artifactValue),
    tags: task.tags ?? {},
    inputs: (task.inputs ?? []).map((input) => ({
      artifact: input.artifact,
      task: input.task,
      attributedTo: input.attributedTo,
      sha256: input.sha256,
      ...(input.path === undefined ? {} : { path: input.path }),
    })),
  };
}

const SCHEMA_OF_KIND: Readonly<Record<TaskwebActivityKind, SchemaName>> = {
  TaskCompleted: "task-completed",
  TaskFailed: "task-failed",
  ArtifactPublished: "artifact-published",
  TaskGroupResolved: "task-group-resolved",
};

const EMBEDDED_TYPE_OF_KIND: Readonly<
  Record<TaskwebActivityKind, "Task" | "Artifact" | "TaskGroup">
> = {
  TaskCompleted: "Task",
  TaskFailed: "Task",
  ArtifactPublished: "Artifact",
  TaskGroupResolved: "TaskGroup",
};

/** Whether an object, or an artifact listed on it, carries `tags` (a v1.3 term). */
function usesTags(node: unknown): boolean {
  if (!isJsonObject(node)) return false;
  if ("tags" in node) return true;
  const artifacts = node["artifacts"];
  return Array.isArray(artifacts) && artifacts.some((a) => isJsonObject(a) && "tags" in a);
}

/** The taskweb terms a document of this kind must define in its `@context`. */
function requiredTerms(kind: TaskwebActivityKind | "TaskGroup", object?: unknown) {
  const terms =
    kind === "TaskGroupResolved" || kind === "TaskGroup"
      ? [...CORE_TERMS, ...TASK_GROUP_TERMS]
      : CORE_TERMS;
  const withTags = usesTags(object) ? [...terms, ...TAG_TERMS] : terms;
  return isJsonObject(object) && "inputs" in object ? [...withTags, ...INPUT_TERMS] : withTags;
}

function taskGroupUrls(group: ValidatedTaskGroup, path: string): [unknown, string][] {
  return [
    [group.id, `${path}/id`],
    [group.attributedTo, `${path}/attributedTo`],
  ];
}

/** Rules of a task group that its schema cannot express: the tally adds up, the origins. */
function taskGroupFailure(
  group: ValidatedTaskGroup,
  path: string,
  owner: Owner,
): ParseFailure | undefined {
  const resolved = group.completedCount + group.failedCount + group.exceptionCount;
  if (resolved > group.taskCount) {
    return {
      code: "bad-count",
      message: `${path === "" ? "the group" : path} counts ${resolved} resolved tasks but only ${group.taskCount} tasks`,
      path: `${path}/taskCount`,
    };
  }
  return (
    originFailure(group.id, `${path}/id`, owner) ??
    attributionFailure(group.attributedTo, `${path}/attributedTo`, owner)
  );
}

function taskGroupValue(group: ValidatedTaskGroup): TaskGroupObject {
  return {
    id: group.id,
    attributedTo: group.attributedTo,
    taskCount: group.taskCount,
    completedCount: group.completedCount,
    failedCount: group.failedCount,
    exceptionCount: group.exceptionCount,
    ...(group.resolved === undefined ? {} : { resolved: group.resolved }),
  };
}

function audience(value: string | string[] | undefined): string[] {
  const list = value === undefined ? [] : typeof value === "string" ? [value] : value;
  return list.map((entry) => (entry === "as:Public" ? PUBLIC_COLLECTION : entry));
}

/**
 * Parses a received taskweb activity (`TaskCompleted`, `TaskFailed`, `ArtifactPublished`).
 *
 * The input is the JSON as sent by a taskweb cluster, or re-compacted with
 * {@link CONTEXT} (for example from the expanded form an ActivityPub library hands to its
 * listeners). Type names are accepted in any order and as terms, `tw:` compact IRIs or full
 * IRIs. Bound the body first with `checkJsonLimits`. Authenticity (signatures, key
 * ownership) and replay protection are the caller's: this checks what the document says,
 * not who sent it.
 *
 * @param json - The parsed JSON body.
 * @returns The activity with its `kind`, or the first rule it breaks (see the module
 *   documentation for the order).
 */
export function parseActivity(json: unknown): ParseResult<TaskwebActivity> {
  if (!isJsonObject(json)) return fail("schema", "an activity must be a JSON object", "");
  const kind = classifyType(json["type"], "/type", "Activity", ACTIVITY_KINDS);
  if (!kind.ok) return kind;
  const contextFailure =
    checkTaskwebContext(json["@context"], requiredTerms(kind.value, json["object"])) ??
    embeddedContextFailure(json["object"], "/object");
  if (contextFailure !== undefined) return { ok: false, reason: contextFailure };
  const embeddedType = typeFailure(json["object"], "/object", EMBEDDED_TYPE_OF_KIND[kind.value]);
  if (embeddedType !== undefined) return { ok: false, reason: embeddedType };
  const valid = validateAgainstSchema(SCHEMA_OF_KIND[kind.value], json);
  if (!valid.ok) return valid;

  const activity = json as unknown as ValidatedActivity;
  const audienceUrls = audience(activity.to)
    .map((url, index): [unknown, string] => [
      url,
      Array.isArray(activity.to) ? `/to/${index}` : "/to",
    ])
    .filter(([url]) => url !== PUBLIC_COLLECTION);
  const objectUrls =
    kind.value === "ArtifactPublished"
      ? artifactUrls(activity.object as unknown as ValidatedArtifact, "/object")
      : kind.value === "TaskGroupResolved"
        ? taskGroupUrls(activity.object as unknown as ValidatedTaskGroup, "/object")
        : taskUrls(activity.object as unknown as ValidatedTask, "/object");
  const badUrl = urlFailure([
    [activity.id, "/id"],
    [activity.actor, "/actor"],
    ...audienceUrls,
    ...objectUrls,
  ]);
  if (badUrl !== undefined) return { ok: false, reason: badUrl };

  const owner = ownerOf(activity.actor, "actor");
  const common: ActivityFields = {
    id: activity.id,
    actor: activity.actor,
    published: activity.published,
    to: audience(activity.to),
    raw: json,
  };
  const idFailure = originFailure(activity.id, "/id", owner);
  if (idFailure !== undefined) return { ok: false, reason: idFailure };
  if (kind.value === "ArtifactPublished") {
    const artifact = activity.object as unknown as ValidatedArtifact;
    const failure = artifactOriginFailure(artifact, "/object", owner);
    if (failure !== undefined) return { ok: false, reason: failure };
    return ok({ kind: "ArtifactPublished", ...common, artifact: artifactValue(artifact) });
  }
  if (kind.value === "TaskGroupResolved") {
    const group = activity.object as unknown as ValidatedTaskGroup;
    const failure = taskGroupFailure(group, "/object", owner);
    if (failure !== undefined) return { ok: false, reason: failure };
    // The schema requires `resolved` on the embedded group.
    const taskGroup = taskGroupValue(group) as TaskGroupResolvedActivity["taskGroup"];
    return ok({ kind: "TaskGroupResolved", ...common, taskGroup });
  }
  const task = activity.object as unknown as ValidatedTask;
  const failure = taskOriginFailure(task, "/object", owner);
  if (failure !== undefined) return { ok: false, reason: failure };
  const value = taskValue(task);
  // The schema of each kind pins taskState (and reasonResolved for TaskFailed).
  if (kind.value === "TaskCompleted") {
    return ok({ kind: "TaskCompleted", ...common, task: value as TaskCompletedActivity["task"] });
  }
  return ok({ kind: "TaskFailed", ...common, task: value as TaskFailedActivity["task"] });
}

/** Options for {@link parseTaskObject} and {@link parseArtifactObject}. */
export interface ObjectParseOptions {
  /**
   * The URL the document was fetched from, after redirects. When given, the document's id
   * must be on its origin: a server answers only for its own objects.
   */
  readonly fetchedFrom?: UrlInput;
}

function fetchedFromFailure(id: string, options: ObjectParseOptions): ParseFailure | undefined {
  if (options.fetchedFrom === undefined) return undefined;
  const fetched = parseHttpUrl(options.fetchedFrom);
  if (!fetched.ok) return fetched.reason;
  return originFailure(id, "/id", {
    href: fetched.value.href,
    origin: fetched.value.origin,
    label: "URL it was fetched from",
  });
}

/**
 * Parses a task document, as `GET` on a task's id returns it: with `@context`, typed
 * `["Object", "Task"]`, its id, task group and artifacts on the origin of `attributedTo`.
 *
 * @param json - The parsed JSON body.
 * @param options - See {@link ObjectParseOptions}.
 * @returns The task, or the first rule it breaks.
 */
export function parseTaskObject(
  json: unknown,
  options: ObjectParseOptions = {},
): ParseResult<TaskObject> {
  if (!isJsonObject(json)) return fail("schema", "a task must be a JSON object", "");
  const type = classifyType(json["type"], "/type", "Object", ["Task"]);
  if (!type.ok) return type;
  const contextFailure =
    checkTaskwebContext(json["@context"], requiredTerms("TaskCompleted", json)) ??
    artifactContexts(json);
  if (contextFailure !== undefined) return { ok: false, reason: contextFailure };
  const embeddedType = typeFailure(json, "", "Task");
  if (embeddedType !== undefined) return { ok: false, reason: embeddedType };
  const valid = validateAgainstSchema("task", json);
  if (!valid.ok) return valid;
  const task = json as unknown as ValidatedTask;
  const failure =
    urlFailure(taskUrls(task, "")) ??
    fetchedFromFailure(task.id, options) ??
    taskOriginFailure(task, "", ownerOf(task.attributedTo, "cluster in attributedTo"));
  if (failure !== undefined) return { ok: false, reason: failure };
  return ok(taskValue(task));
}

function artifactContexts(task: JsonObject): ParseFailure | undefined {
  const artifacts = task["artifacts"];
  if (!Array.isArray(artifacts)) return undefined;
  for (const [index, artifact] of artifacts.entries()) {
    const failure = embeddedContextFailure(artifact, `/artifacts/${index}`);
    if (failure !== undefined) return failure;
  }
  return undefined;
}

/**
 * Parses an artifact document, as `GET` on an artifact's id returns it: with `@context`,
 * typed `["Object", "Artifact"]`, its id and task on the origin of `attributedTo`. Its `url`
 * may be on any origin.
 *
 * @param json - The parsed JSON body.
 * @param options - See {@link ObjectParseOptions}.
 * @returns The artifact, or the first rule it breaks.
 */
export function parseArtifactObject(
  json: unknown,
  options: ObjectParseOptions = {},
): ParseResult<ArtifactObject> {
  if (!isJsonObject(json)) return fail("schema", "an artifact must be a JSON object", "");
  const type = classifyType(json["type"], "/type", "Object", ["Artifact"]);
  if (!type.ok) return type;
  const contextFailure = checkTaskwebContext(
    json["@context"],
    requiredTerms("ArtifactPublished", json),
  );
  if (contextFailure !== undefined) return { ok: false, reason: contextFailure };
  const valid = validateAgainstSchema("artifact", json);
  if (!valid.ok) return valid;
  const artifact = json as unknown as ValidatedArtifact;
  const failure =
    urlFailure(artifactUrls(artifact, "")) ??
    fetchedFromFailure(artifact.id, options) ??
    artifactOriginFailure(artifact, "", ownerOf(artifact.attributedTo, "cluster in attributedTo"));
  if (failure !== undefined) return { ok: false, reason: failure };
  return ok(artifactValue(artifact));
}

/**
 * Parses a task group document, as `GET` on a group's id returns it (since v1.1): with
 * `@context` defining the task group terms, typed `["Object", "TaskGroup"]`, its id on the
 * origin of `attributedTo`, and a tally that adds up.
 *
 * @param json - The parsed JSON body.
 * @param options - See {@link ObjectParseOptions}.
 * @returns The group, or the first rule it breaks.
 */
export function parseTaskGroupObject(
  json: unknown,
  options: ObjectParseOptions = {},
): ParseResult<TaskGroupObject> {
  if (!isJsonObject(json)) return fail("schema", "a task group must be a JSON object", "");
  const type = classifyType(json["type"], "/type", "Object", ["TaskGroup"]);
  if (!type.ok) return type;
  const contextFailure = checkTaskwebContext(json["@context"], requiredTerms("TaskGroup"));
  if (contextFailure !== undefined) return { ok: false, reason: contextFailure };
  const valid = validateAgainstSchema("task-group", json);
  if (!valid.ok) return valid;
  const group = json as unknown as ValidatedTaskGroup;
  const failure =
    urlFailure(taskGroupUrls(group, "")) ??
    fetchedFromFailure(group.id, options) ??
    taskGroupFailure(group, "", ownerOf(group.attributedTo, "cluster in attributedTo"));
  if (failure !== undefined) return { ok: false, reason: failure };
  return ok(taskGroupValue(group));
}
