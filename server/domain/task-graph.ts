/**
 * Task graphs: a whole task group submitted at once, checked as a whole before anything is
 * written, then created in one transaction.
 *
 * {@link parseTaskGraphSource} and {@link checkTaskGraph} are the trust boundary: they never
 * throw on what a client sends and return every problem they find, each naming the task and
 * the field. {@link writeTaskGroup} adds what only the database knows (do the local tasks a
 * graph depends on exist, was this group created before) and inserts the rows in batches;
 * `TaskService.createTaskGroup` runs it inside the service's transaction.
 * @module
 */
import { isDeepStrictEqual } from "node:util";
import { Ajv2020, type ErrorObject, type ValidateFunction } from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import { sql, type Kysely, type Transaction } from "kysely";
import { parseDocument } from "yaml";
import { TASK_GRAPH_SCHEMA, isTaskId } from "../../protocol/index.ts";
import type { ClusterUrls } from "../federation/cluster-urls.ts";
import type { DatabaseSchema, TasksTable } from "../store/schema.ts";
import { ApiError } from "./errors.ts";
import { insertJoin, unfollowedClusters, unfollowedMessage, type JoinTimer } from "./task-joins.ts";
import {
  isDependencyRef,
  newTaskRow,
  storedDefinition,
  TASK_LIMITS,
  validateTaskDefinition,
  type DefinitionProblem,
  type TaskDefinition,
} from "./task-definition.ts";

type Trx = Transaction<DatabaseSchema>;
type TaskState = TasksTable["state"];
type ResolvedState = "completed" | "failed" | "exception";

/** Bounds of a task graph. */
export const TASK_GRAPH_LIMITS = {
  /** Tasks in one graph. */
  maxTasks: 10_000,
  /** Dependencies of one task, inputs' tasks included. */
  maxDependencies: TASK_LIMITS.maxDependencies,
  /** Bytes of a JSON or YAML document. */
  maxSourceBytes: 5 * 1024 * 1024,
  /**
   * How far YAML aliases may expand (the `yaml` package's `maxAliasCount`: aliases times the
   * nodes they repeat). Small, because an alias "bomb" of a few lines expands exponentially.
   */
  maxYamlAliasCount: 16,
  /** Problems reported for one graph; the rest are counted in a last problem. */
  maxProblems: 1000,
} as const;

/** Machine-readable reason of a {@link TaskGraphProblem}. */
export type TaskGraphProblemReason =
  /** The document is larger than {@link TASK_GRAPH_LIMITS}.maxSourceBytes. */
  | "too-large"
  /** Not JSON or YAML, or YAML aliases that expand too far. */
  | "not-parseable"
  /** The graph does not match `protocol/schemas/v1/task-graph.json`. */
  | "schema"
  | "too-many-tasks"
  | "too-many-dependencies"
  | "duplicate-task-id"
  /** A task names a task group other than the graph's. */
  | "task-group-mismatch"
  /** A rule of the task definition the schema cannot express, such as a deadline in the past. */
  | "definition"
  /** A dependency is neither in the graph nor on this cluster. */
  | "unknown-dependency"
  | "cycle"
  /** More problems than {@link TASK_GRAPH_LIMITS}.maxProblems; the last problem counts the rest. */
  | "too-many-problems";

/** One problem with a submitted graph. */
export interface TaskGraphProblem extends DefinitionProblem {
  readonly reason: TaskGraphProblemReason;
  /** Index of the task in `tasks`, when the problem is in one task. */
  readonly task?: number;
}

/** Result of {@link parseTaskGraphSource}. */
export type TaskGraphParseResult =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly problems: readonly TaskGraphProblem[] };

/** The notation a graph document is written in. */
export type TaskGraphSourceFormat = "json" | "yaml";

/** A dependency after local task URLs were turned into task ids. */
export interface TaskGraphRef {
  readonly dependency: string;
  readonly remote: boolean;
}

/** One task of a graph that passed every check the graph alone allows. */
export interface PlannedTask {
  readonly definition: TaskDefinition;
  /** Its index in the submitted `tasks`. */
  readonly index: number;
  /** Distinct dependencies, inputs' tasks included. */
  readonly refs: readonly TaskGraphRef[];
  /** The subset of `refs` that are tasks of this graph. */
  readonly inGraph: readonly string[];
}

/** Result of {@link checkTaskGraph}: the plan, and what is wrong with the graph on its own. */
export interface TaskGraphCheck {
  /** The graph's task group, when it is a valid id. */
  readonly taskGroupId: string | undefined;
  /** The tasks in topological order (dependencies first); complete only without problems. */
  readonly tasks: readonly PlannedTask[];
  readonly problems: readonly TaskGraphProblem[];
  /**
   * Task ids outside the graph that tasks depend on, with the fields naming them: they must
   * exist on the cluster, which only the database can say.
   */
  readonly localReferences: ReadonlyMap<string, readonly { task: number; field: string }[]>;
}

/** Options for {@link checkTaskGraph}. */
export interface CheckTaskGraphOptions {
  /** The local task id when a URL names a task of this cluster. @defaultValue none are local */
  readonly localTaskId?: (url: string) => string | undefined;
  /** The time deadlines are checked against. @defaultValue now */
  readonly now?: Date;
}

/** Result of `TaskService.createTaskGroup`. */
export interface CreateTaskGroupResult {
  readonly taskGroupId: string;
  /** Number of tasks in the graph. */
  readonly tasks: number;
  /** False when the same graph already existed (an idempotent repeat). */
  readonly created: boolean;
}

/** What {@link writeTaskGroup} needs from the task service, inside its transaction. */
export interface TaskGroupWriteContext {
  readonly urls: ClusterUrls;
  /** The service's evaluation: schedules the tasks, or resolves those that never can run. */
  evaluate(taskIds: readonly string[]): Promise<void>;
  /** Asks the remote cluster for a task's state after commit (it may have resolved already). */
  dereference(taskUrl: string): void;
  /** Sets a join's deadline after commit. */
  joinTimer(timer: JoinTimer): void;
}

/** A concurrent request inserted some of this graph's tasks first; retry to see its result. */
export class TaskGroupRaceError extends Error {
  override readonly name = "TaskGroupRaceError";
}

/** One task as `GET /api/v1/task-groups/:id` lists it. */
export interface TaskGroupTaskView {
  readonly taskId: string;
  readonly name: string;
  readonly state: TaskState;
  /** Why the latest run resolved, such as `dependency-failed`. */
  readonly reasonResolved: string | null;
  readonly resolvedAt: string | null;
  readonly updatedAt: string;
  readonly priority: string;
  /** Defined but not scheduled until activated. */
  readonly inactive: boolean;
  /** Waits (state `running`) for a person or an API call to resolve it. */
  readonly breakpoint: boolean;
}

/** A task group with its tasks' states. */
export interface TaskGroupView {
  readonly taskGroupId: string;
  readonly total: number;
  /** Tasks in `completed`, `failed` or `exception`. */
  readonly resolved: number;
  /** Tasks by state; every state is present, zero when none. */
  readonly counts: Readonly<Record<TaskState, number>>;
  /** Inactive tasks not yet activated; they do not hold the group open. */
  readonly inactive: number;
  /**
   * When the group resolved: every task not left inactive has. Null while it has not, or
   * after a rerun or an activation reopened it.
   */
  readonly resolvedAt: string | null;
  /** How many times the group has resolved. */
  readonly resolutions: number;
  readonly tasks: readonly TaskGroupTaskView[];
}

const TASK_STATES: readonly TaskState[] = [
  "unscheduled",
  "pending",
  "running",
  "completed",
  "failed",
  "exception",
];
const RESOLVED: readonly string[] = ["completed", "failed", "exception"];
/** Rows per multi-row insert and ids per `in (…)`: far below PostgreSQL's 65,535 parameters. */
const CHUNK = 1000;

/**
 * Parses a graph document written as JSON or YAML. YAML is read with bounded alias
 * expansion; both are refused above {@link TASK_GRAPH_LIMITS}.maxSourceBytes.
 */
export function parseTaskGraphSource(
  text: string,
  format: TaskGraphSourceFormat,
): TaskGraphParseResult {
  const fail = (reason: TaskGraphProblemReason, message: string): TaskGraphParseResult => ({
    ok: false,
    problems: [{ reason, field: "", message }],
  });
  if (Buffer.byteLength(text, "utf8") > TASK_GRAPH_LIMITS.maxSourceBytes) {
    return fail(
      "too-large",
      "The task graph is larger than 5 MiB; split it into several task groups.",
    );
  }
  if (format === "json") {
    try {
      return { ok: true, value: JSON.parse(text) as unknown };
    } catch (error) {
      return fail("not-parseable", `Not JSON: ${errorMessage(error)}.`);
    }
  }
  try {
    const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
    const found = [...doc.errors, ...doc.warnings];
    if (found.length > 0) {
      // One mistake often cascades into many errors (one per nesting level): the first
      // few say where to look.
      return {
        ok: false,
        problems: found
          .filter((e, i) => found.findIndex((f) => f.code === e.code) === i)
          .slice(0, 5)
          .map((e) => ({
            reason: "not-parseable",
            field: "",
            message:
              e.code === "MULTIPLE_DOCS"
                ? "A task graph is one YAML document; remove the '---' separators after the first."
                : `Not valid YAML: ${(e.message.split("\n")[0] ?? e.code).replace(/:$/, "")}.`,
          })),
      };
    }
    return { ok: true, value: doc.toJS({ maxAliasCount: TASK_GRAPH_LIMITS.maxYamlAliasCount }) };
  } catch (error) {
    // toJS throws when aliases expand past maxAliasCount; a nesting deep enough to exhaust
    // the stack throws RangeError. Either way the client sent something we will not read.
    return fail(
      "not-parseable",
      /alias/i.test(errorMessage(error))
        ? "YAML aliases expand too far; write the repeated values out instead of using anchors."
        : `Not valid YAML: ${errorMessage(error)}.`,
    );
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// ajv-formats is CommonJS with `exports.default`; under NodeNext the default import is the
// whole module object, whose `default` is the plugin at runtime as well.
const addFormats = addFormatsModule.default;
let compiledSchema: ValidateFunction | undefined;

function graphSchema(): ValidateFunction {
  if (compiledSchema === undefined) {
    // allErrors: a graph's author gets every problem in one round trip. verbose: messages
    // quote the failing subschema's description.
    const ajv = new Ajv2020({ allErrors: true, verbose: true, strict: true });
    addFormats(ajv, ["date-time"]);
    compiledSchema = ajv.compile(TASK_GRAPH_SCHEMA);
  }
  return compiledSchema;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** `tasks[3] (taskId "lint")`: how problems name a task. */
function taskLabel(tasks: readonly unknown[], index: number): string {
  const raw = tasks[index];
  const id = isRecord(raw) ? raw.taskId : undefined;
  return typeof id === "string" && id.length <= 64
    ? `tasks[${index}] (taskId ${JSON.stringify(id)})`
    : `tasks[${index}]`;
}

function appendSegment(path: string, segment: string): string {
  if (/^\d+$/.test(segment)) return `${path}[${segment}]`;
  if (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(segment))
    return path === "" ? segment : `${path}.${segment}`;
  return `${path}[${JSON.stringify(segment)}]`;
}

/** Whether two fields of one task are the same or one contains the other. */
function related(a: string, b: string): boolean {
  const within = (x: string, y: string) =>
    x === y || x.startsWith(`${y}.`) || x.startsWith(`${y}[`);
  return within(a, b) || within(b, a);
}

function lowerFirst(text: string): string {
  // "The argv…" reads on after a colon as "the argv…"; a leading identifier keeps its case.
  return /^[A-Z](?![A-Z])/.test(text) ? `${text[0]?.toLowerCase() ?? ""}${text.slice(1)}` : text;
}

function article(type: string): string {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

interface RawProblem {
  readonly reason: TaskGraphProblemReason;
  readonly task: number | undefined;
  /** Relative to the task when `task` is set. */
  readonly path: string;
  readonly message: string;
  /** The whole field, when it is not in the task itself (a cycle closes in another task). */
  readonly field?: string;
}

/** Turns one Ajv error into a problem at a field, in the words of the schema's descriptions. */
function schemaProblem(error: ErrorObject): RawProblem {
  const segments = error.instancePath
    .split("/")
    .slice(1)
    .map((s) => s.replaceAll("~1", "/").replaceAll("~0", "~"));
  let task: number | undefined;
  let rest = segments;
  if (segments[0] === "tasks" && segments[1] !== undefined && /^\d+$/.test(segments[1])) {
    task = Number(segments[1]);
    rest = segments.slice(2);
  }
  let path = rest.reduce(appendSegment, "");
  const params = error.params as Record<string, unknown>;
  const parent = (error.parentSchema ?? {}) as {
    description?: string;
    properties?: Record<string, { description?: string }>;
  };
  const hint = parent.description != null ? ` ${parent.description}` : "";
  const limit = Number(params.limit);
  let reason: TaskGraphProblemReason = "schema";
  let message: string;
  switch (error.keyword) {
    case "required": {
      const missing = String(params.missingProperty);
      path = appendSegment(path, missing);
      const about = parent.properties?.[missing]?.description;
      message = `Required${about != null ? `: ${lowerFirst(about)}` : "."}`;
      break;
    }
    case "additionalProperties": {
      path = appendSegment(path, String(params.additionalProperty));
      const known = Object.keys(parent.properties ?? {});
      message =
        known.length > 0
          ? `Unknown field; known fields are ${known.join(", ")}.`
          : "Unknown field.";
      break;
    }
    case "propertyNames":
      // The inner pattern error names the value; this one names the property.
      path = appendSegment(path, String(params.propertyName));
      message = `Invalid name.${hint}`;
      break;
    case "type":
      message =
        path === "" && task === undefined
          ? "A task graph must be an object such as {taskGroupId: …, tasks: […]}."
          : `Must be ${article(String(params.type))}.${hint}`;
      break;
    case "minItems":
      message = `Must have at least ${limit} item${limit === 1 ? "" : "s"}.${hint}`;
      break;
    case "minimum":
      message = `Must be at least ${limit}.${hint}`;
      break;
    case "maximum":
      message = `Must be at most ${limit}.${hint}`;
      break;
    case "maxProperties":
      message = `Must have at most ${limit} entries.${hint}`;
      break;
    case "maxItems":
      if (path === "tasks") {
        reason = "too-many-tasks";
        message = `A task graph holds at most ${TASK_GRAPH_LIMITS.maxTasks} tasks; split it into several task groups.`;
      } else if (path === "dependencies") {
        reason = "too-many-dependencies";
        message = `At most ${TASK_GRAPH_LIMITS.maxDependencies} dependencies are allowed.`;
      } else {
        message = `Must have at most ${String(params.limit)} items.${hint}`;
      }
      break;
    case "format":
      message = `Must be an ISO 8601 date-time such as 2026-01-31T12:00:00Z.${hint}`;
      break;
    case "enum":
      message = `Must be one of ${(params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(", ")}.`;
      break;
    default:
      // pattern, anyOf, minLength, maxLength: the description says what is expected.
      message =
        parent.description != null
          ? `Invalid: expected ${lowerFirst(parent.description)}`
          : `Invalid: ${error.message ?? "does not match the schema"}.`;
  }
  return { reason, task, path, message };
}

/** The schema's problems, one per field: a field failing several keywords is reported once. */
function schemaProblems(value: unknown): RawProblem[] {
  const validate = graphSchema();
  if (validate(value)) return [];
  const errors = (validate.errors ?? []).filter(
    // The branches of `anyOf` say why each alternative failed; the `anyOf` error says it well.
    (e) => !/\/anyOf\/\d+\//.test(e.schemaPath) && !e.schemaPath.includes("/propertyNames/"),
  );
  const seen = new Set<string>();
  const problems: RawProblem[] = [];
  for (const error of errors) {
    const problem = schemaProblem(error);
    const key = `${problem.task ?? ""}|${problem.path}`;
    if (seen.has(key)) continue;
    seen.add(key);
    problems.push(problem);
  }
  return problems;
}

/**
 * Checks a task graph as far as the graph alone allows: the schema, every task's definition
 * (payload, deadline, retries…), duplicate task ids, the tasks' group, the number of
 * dependencies and cycles. Never throws on what a client sent.
 * @param input A parsed JSON or YAML document.
 */
export function checkTaskGraph(
  input: unknown,
  options: CheckTaskGraphOptions = {},
): TaskGraphCheck {
  const now = options.now ?? new Date();
  const localTaskId = options.localTaskId ?? (() => undefined);
  const raw: RawProblem[] = schemaProblems(input);
  const schemaFailed = new Set(raw.map((p) => p.task));
  const localReferences = new Map<string, { task: number; field: string }[]>();
  const graph = isRecord(input) ? input : {};
  const taskGroupId = isTaskId(graph.taskGroupId) ? graph.taskGroupId : undefined;
  const rawTasks = Array.isArray(graph.tasks) ? (graph.tasks as unknown[]) : [];
  const label = (index: number) => taskLabel(rawTasks, index);

  // Every task is checked on its own first; the graph-wide rules need valid ids.
  const firstIndex = new Map<string, number>();
  const candidates: { index: number; definition: TaskDefinition }[] = [];
  rawTasks.forEach((task, index) => {
    if (!isRecord(task)) return;
    if (isTaskId(task.taskId)) {
      const first = firstIndex.get(task.taskId);
      if (first !== undefined) {
        raw.push({
          reason: "duplicate-task-id",
          task: index,
          path: "taskId",
          message: `${label(first)} has the same taskId; task ids must be unique in a graph.`,
        });
        return;
      }
      firstIndex.set(task.taskId, index);
    }
    if (
      taskGroupId !== undefined &&
      task.taskGroupId !== undefined &&
      task.taskGroupId !== taskGroupId
    ) {
      raw.push({
        reason: "task-group-mismatch",
        task: index,
        path: "taskGroupId",
        message: `Must be the graph's taskGroupId ${JSON.stringify(taskGroupId)}, or left out.`,
      });
    }
    const count = countDependencies(task, localTaskId);
    if (
      count > TASK_GRAPH_LIMITS.maxDependencies &&
      !raw.some((p) => p.task === index && p.path === "dependencies")
    ) {
      raw.push({
        reason: "too-many-dependencies",
        task: index,
        path: "dependencies",
        message: `At most ${TASK_GRAPH_LIMITS.maxDependencies} dependencies are allowed, inputs' tasks included; this task has ${count}.`,
      });
    }
    const result = validateTaskDefinition(
      { ...task, ...(taskGroupId !== undefined ? { taskGroupId } : {}) },
      // The schema reports a missing taskId; a placeholder keeps the name's default valid.
      () => "_",
      now,
    );
    if (!result.ok) {
      for (const p of result.problems) {
        raw.push({ reason: "definition", task: index, path: p.field, message: p.message });
      }
    } else if (!schemaFailed.has(index)) {
      candidates.push({ index, definition: result.value });
    }
  });

  // A reference to a task of the graph that is itself invalid is not an unknown dependency:
  // that task's own problems are reported, and the reference is left out of the plan.
  const inGraphIds = new Set(firstIndex.keys());
  const ids = new Set(candidates.map((c) => c.definition.taskId));
  const planned = new Map<string, PlannedTask>();
  /** For each in-graph edge, the field that declares it: cycles are reported there. */
  const edgeField = new Map<string, string>();
  // References are checked on every task, valid or not, so that an unknown dependency is
  // reported together with the task's other problems.
  const candidateAt = new Map(candidates.map((c) => [c.index, c.definition]));
  rawTasks.forEach((task, index) => {
    if (!isRecord(task)) return;
    const definition = candidateAt.get(index);
    const refs = new Map<string, TaskGraphRef>();
    const declared: { ref: unknown; path: string }[] = [];
    if (Array.isArray(task.dependencies)) {
      task.dependencies.forEach((d, i) => declared.push({ ref: d, path: `dependencies[${i}]` }));
    }
    if (Array.isArray(task.inputs)) {
      task.inputs.forEach((input, i) => {
        if (isRecord(input)) declared.push({ ref: input.task, path: `inputs[${i}].task` });
      });
    }
    const inGraph: string[] = [];
    for (const { ref, path } of declared) {
      // A malformed reference is already a problem of its own.
      if (typeof ref !== "string" || !isDependencyRef(ref)) continue;
      const normalised = normaliseRef(ref, localTaskId);
      if (refs.has(normalised.dependency)) continue;
      refs.set(normalised.dependency, normalised);
      if (normalised.remote) continue;
      if (ids.has(normalised.dependency)) {
        if (definition === undefined) continue;
        inGraph.push(normalised.dependency);
        edgeField.set(
          `${definition.taskId}\u0000${normalised.dependency}`,
          `${label(index)}.${path}`,
        );
      } else if (!inGraphIds.has(normalised.dependency)) {
        const list = localReferences.get(normalised.dependency) ?? [];
        list.push({ task: index, field: `${label(index)}.${path}` });
        localReferences.set(normalised.dependency, list);
      }
    }
    if (definition !== undefined) {
      planned.set(definition.taskId, { definition, index, refs: [...refs.values()], inGraph });
    }
  });

  const order = topologicalOrder(planned);
  if (order.cycle !== undefined) {
    const cycle = order.cycle;
    const [from, to] = [cycle[0] ?? "", cycle[1] ?? ""];
    const owner = planned.get(from);
    const field = edgeField.get(`${from}\u0000${to}`) ?? "";
    raw.push({
      reason: "cycle",
      task: owner?.index,
      path: "",
      field,
      message: `Dependency cycle ${describeCycle(cycle)} (each task waits for the next); remove one of these dependencies.`,
    });
  }

  return {
    taskGroupId,
    tasks: order.tasks,
    problems: finishProblems(raw, label),
    localReferences,
  };
}

/** Distinct tasks a task waits for: its dependencies and its inputs' tasks. */
function countDependencies(
  task: Record<string, unknown>,
  localTaskId: (url: string) => string | undefined,
): number {
  const refs = [
    ...(Array.isArray(task.dependencies) ? task.dependencies : []),
    ...(Array.isArray(task.inputs)
      ? task.inputs.map((i) => (isRecord(i) ? i.task : undefined))
      : []),
  ].filter((r): r is string => typeof r === "string");
  return new Set(refs.map((r) => normaliseRef(r, localTaskId).dependency)).size;
}

/** `"a" → "b" → "a"`; a long cycle shows its start and end, so the message stays short. */
function describeCycle(cycle: readonly string[]): string {
  const ids = cycle.map((id) => JSON.stringify(id));
  if (ids.length <= 12) return ids.join(" → ");
  return `of ${ids.length - 1} tasks ${[...ids.slice(0, 10), "…", ...ids.slice(-2)].join(" → ")}`;
}

function normaliseRef(ref: string, localTaskId: (url: string) => string | undefined): TaskGraphRef {
  if (isTaskId(ref)) return { dependency: ref, remote: false };
  const local = localTaskId(ref);
  return local != null ? { dependency: local, remote: false } : { dependency: ref, remote: true };
}

/**
 * Kahn's algorithm, stable in the submitted order; when tasks are left over they all wait on
 * one another, and following any of their in-graph dependencies must come back to a task
 * already seen: that loop is the cycle reported.
 */
function topologicalOrder(planned: ReadonlyMap<string, PlannedTask>): {
  tasks: PlannedTask[];
  cycle: string[] | undefined;
} {
  const waiting = new Map<string, number>();
  const dependents = new Map<string, string[]>();
  for (const [id, task] of planned) {
    waiting.set(id, task.inGraph.length);
    for (const dep of task.inGraph) {
      const list = dependents.get(dep) ?? [];
      list.push(id);
      dependents.set(dep, list);
    }
  }
  const ready = [...planned.values()]
    .filter((t) => t.inGraph.length === 0)
    .sort((a, b) => a.index - b.index)
    .map((t) => t.definition.taskId);
  const tasks: PlannedTask[] = [];
  for (let i = 0; i < ready.length; i++) {
    const id = ready[i] as string;
    tasks.push(planned.get(id) as PlannedTask);
    for (const next of dependents.get(id) ?? []) {
      const left = (waiting.get(next) ?? 0) - 1;
      waiting.set(next, left);
      if (left === 0) ready.push(next);
    }
  }
  if (tasks.length === planned.size) return { tasks, cycle: undefined };
  const left = new Set([...waiting].filter(([, n]) => n > 0).map(([id]) => id));
  const seen = new Map<string, number>();
  const path: string[] = [];
  let current = [...planned.values()]
    .filter((t) => left.has(t.definition.taskId))
    .sort((a, b) => a.index - b.index)[0]?.definition.taskId;
  while (current !== undefined && !seen.has(current)) {
    seen.set(current, path.length);
    path.push(current);
    current = planned.get(current)?.inGraph.find((d) => left.has(d));
  }
  const start = current === undefined ? 0 : (seen.get(current) ?? 0);
  const loop = path.slice(start);
  return { tasks, cycle: [...loop, loop[0] ?? ""] };
}

/** Drops what repeats a more precise problem, orders problems by task, and caps them. */
function finishProblems(
  raw: readonly RawProblem[],
  label: (index: number) => string,
): TaskGraphProblem[] {
  // A definition problem on a field the schema already reported says the same thing twice.
  const precise = raw.filter((p) => p.reason !== "definition");
  const kept = raw.filter(
    (p) =>
      p.reason !== "definition" ||
      !precise.some((q) => q.task === p.task && related(q.path, p.path)),
  );
  const problems = kept
    .map((p, order) => ({ p, order }))
    .sort((a, b) => (a.p.task ?? -1) - (b.p.task ?? -1) || a.order - b.order)
    .map(({ p }) => toProblem(p, label));
  return capProblems(problems);
}

function toProblem(p: RawProblem, label: (index: number) => string): TaskGraphProblem {
  let field: string;
  if (p.field !== undefined) field = p.field;
  else if (p.task === undefined) field = p.path;
  else field = p.path === "" ? label(p.task) : `${label(p.task)}.${p.path}`;
  return {
    reason: p.reason,
    field,
    message: p.message,
    ...(p.task !== undefined ? { task: p.task } : {}),
  };
}

function capProblems(problems: TaskGraphProblem[]): TaskGraphProblem[] {
  const max = TASK_GRAPH_LIMITS.maxProblems;
  if (problems.length <= max) return problems;
  return [
    ...problems.slice(0, max),
    {
      reason: "too-many-problems",
      field: "",
      message: `…and ${problems.length - max} more problems; fix these first.`,
    },
  ];
}

function chunks<T>(items: readonly T[], size = CHUNK): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** The refusal of a graph: every problem, ordered by task. */
function invalidGraph(problems: readonly TaskGraphProblem[]): ApiError {
  const sorted = [...problems]
    .map((p, order) => ({ p, order }))
    .sort((a, b) => (a.p.task ?? -1) - (b.p.task ?? -1) || a.order - b.order)
    .map(({ p }) => p);
  const capped = capProblems(sorted);
  return new ApiError(
    "InputError",
    `The task graph is invalid (${problems.length} problem${problems.length === 1 ? "" : "s"}); nothing was created.`,
    { problems: capped },
  );
}

/**
 * Inside the caller's transaction: checks what only the database knows, then creates the
 * whole group, or recognises an identical repeat. Tasks, dependencies and inputs go in with
 * multi-row inserts; then only the tasks that may already be decided are evaluated, in
 * topological order (the others wait on tasks of this graph, which are all unresolved).
 * @throws {ApiError} `InputError` with `details.problems`; `RequestConflict`.
 * @throws {TaskGroupRaceError} when a concurrent request inserted some of these tasks first.
 */
export async function writeTaskGroup(
  trx: Trx,
  check: TaskGraphCheck,
  context: TaskGroupWriteContext,
): Promise<CreateTaskGroupResult> {
  const problems = [...check.problems];
  // Locked until commit, in a fixed order: a dependency that resolves meanwhile either
  // commits first (we read its resolution) or waits for us (and then sees our rows).
  const external = [...check.localReferences.keys()].sort();
  const localStates = new Map<string, TaskState>();
  for (const ids of chunks(external)) {
    const rows = await trx
      .selectFrom("tasks")
      .select(["task_id", "state"])
      .where("task_id", "in", ids)
      .orderBy("task_id")
      .forShare()
      .execute();
    for (const row of rows) localStates.set(row.task_id, row.state);
  }
  for (const id of external) {
    if (localStates.has(id)) continue;
    for (const { task, field } of check.localReferences.get(id) ?? []) {
      problems.push({
        reason: "unknown-dependency",
        task,
        field,
        message: `No task ${JSON.stringify(id)} in this graph or on this cluster; add it to the graph, create it first, or give the URL of a task on another cluster.`,
      });
    }
  }
  for (const { definition, index } of check.tasks) {
    if (definition.join == null) continue;
    // Named as checkTaskGraph names fields; the task ids of a checked graph are valid.
    const unfollowed = new Set(await unfollowedClusters(trx, definition.join.clusters));
    definition.join.clusters.forEach((cluster, i) => {
      if (unfollowed.has(cluster)) {
        problems.push({
          reason: "definition",
          task: index,
          field: `tasks[${index}] (taskId ${JSON.stringify(definition.taskId)}).join.clusters[${i}]`,
          message: unfollowedMessage(cluster),
        });
      }
    });
  }
  if (problems.length > 0 || check.taskGroupId === undefined) throw invalidGraph(problems);
  const taskGroupId = check.taskGroupId;

  const repeated = await compareWithExisting(trx, taskGroupId, check.tasks);
  if (repeated) return { taskGroupId, tasks: check.tasks.length, created: false };

  await openTaskGroup(trx, taskGroupId);
  const now = new Date();
  for (const batch of chunks(check.tasks)) {
    const inserted = await trx
      .insertInto("tasks")
      .values(batch.map(({ definition }) => newTaskRow(definition, now)))
      .onConflict((oc) => oc.column("task_id").doNothing())
      .returning("task_id")
      .execute();
    if (inserted.length !== batch.length) throw new TaskGroupRaceError();
  }

  const remoteUrls = [
    ...new Set(check.tasks.flatMap((t) => t.refs.filter((r) => r.remote).map((r) => r.dependency))),
  ];
  const remoteStates = new Map<string, string>();
  for (const urls of chunks(remoteUrls)) {
    const rows = await trx
      .selectFrom("remote_tasks")
      .select(["task_url", "state"])
      .where("task_url", "in", urls)
      .execute();
    for (const row of rows) remoteStates.set(row.task_url, row.state);
  }
  for (const url of remoteUrls) {
    // Unknown or unresolved: it may have resolved before we knew we cared; ask its cluster.
    if (!RESOLVED.includes(remoteStates.get(url) ?? "")) context.dereference(url);
  }

  const resolutionOf = (ref: TaskGraphRef): ResolvedState | null => {
    const state = ref.remote ? remoteStates.get(ref.dependency) : localStates.get(ref.dependency);
    return state !== undefined && RESOLVED.includes(state) ? (state as ResolvedState) : null;
  };
  const toEvaluate: string[] = [];
  const dependencyRows = check.tasks.flatMap((t) => {
    const rows = t.refs.map((ref) => ({
      task_id: t.definition.taskId,
      dependency: ref.dependency,
      remote: ref.remote,
      resolution: resolutionOf(ref),
    }));
    const failedAlready =
      t.definition.requires === "all-completed" &&
      rows.some((r) => r.resolution !== null && r.resolution !== "completed");
    if (t.inGraph.length === 0 || failedAlready) toEvaluate.push(t.definition.taskId);
    return rows;
  });
  for (const batch of chunks(dependencyRows)) {
    await trx.insertInto("task_dependencies").values(batch).execute();
  }

  const inputRows = check.tasks.flatMap((t) =>
    t.definition.inputs.map((input) => {
      const ref = normaliseRef(input.task, (url) => context.urls.localTaskId(url));
      const taskUrl = ref.remote ? ref.dependency : context.urls.task(ref.dependency);
      const artifactUrl = ref.remote
        ? `${taskUrl}/artifacts/${input.artifact.split("/").map(encodeURIComponent).join("/")}`
        : context.urls.artifact(ref.dependency, input.artifact);
      return {
        task_id: t.definition.taskId,
        path: input.path,
        artifact_url: artifactUrl,
        task_url: taskUrl,
      };
    }),
  );
  for (const batch of chunks(inputRows)) {
    await trx.insertInto("task_inputs").values(batch).execute();
  }

  for (const { definition } of check.tasks) {
    if (definition.join == null) continue;
    const timer = await insertJoin(trx, { ...definition, join: definition.join }, now);
    if (timer != null) context.joinTimer(timer);
  }

  await context.evaluate(toEvaluate);
  return { taskGroupId, tasks: check.tasks.length, created: true };
}

/**
 * Records the task group, or reopens it when it had resolved: tasks are joining it, so it
 * resolves again once they have.
 *
 * The update locks the group's row until commit, whatever its state, as the transaction
 * that resolves a group does (`settleGroups` in task-service.ts): a resolution of the group's
 * last other task either commits first and is undone here, or waits and then sees the new
 * tasks busy. The row is locked after the dependencies' task rows and before the new tasks'
 * rows, which no other transaction can see yet.
 */
export async function openTaskGroup(trx: Trx, taskGroupId: string): Promise<void> {
  await trx
    .insertInto("task_groups")
    .values({ task_group_id: taskGroupId, resolved_at: null })
    .onConflict((oc) => oc.column("task_group_id").doUpdateSet({ resolved_at: null }))
    .execute();
}

/**
 * True when exactly this graph exists already. Throws a conflict when any of its tasks
 * exists differently, in another group, or when the group holds other tasks.
 */
async function compareWithExisting(
  trx: Trx,
  taskGroupId: string,
  tasks: readonly PlannedTask[],
): Promise<boolean> {
  const existing = new Map<string, { task_group_id: string; definition: unknown }>();
  for (const ids of chunks(tasks.map((t) => t.definition.taskId))) {
    const rows = await trx
      .selectFrom("tasks")
      .select(["task_id", "task_group_id", "definition"])
      .where("task_id", "in", ids)
      .execute();
    for (const row of rows) existing.set(row.task_id, row);
  }
  const group = await trx
    .selectFrom("tasks")
    .select(sql<string>`count(*)`.as("n"))
    .where("task_group_id", "=", taskGroupId)
    .executeTakeFirstOrThrow();
  const inGroup = Number(group.n);
  if (existing.size === 0 && inGroup === 0) return false;

  const list = (ids: string[]) =>
    `${ids
      .slice(0, 5)
      .map((id) => JSON.stringify(id))
      .join(", ")}${ids.length > 5 ? ` and ${ids.length - 5} more` : ""}`;
  const elsewhere = [...existing]
    .filter(([, row]) => row.task_group_id !== taskGroupId)
    .map(
      ([id, row]) => `${JSON.stringify(id)} (in task group ${JSON.stringify(row.task_group_id)})`,
    );
  if (elsewhere.length > 0) {
    throw new ApiError(
      "RequestConflict",
      `Task ${elsewhere.slice(0, 5).join(", ")}${elsewhere.length > 5 ? ` and ${elsewhere.length - 5} more` : ""} already exist${elsewhere.length === 1 ? "s" : ""} in another task group; choose other taskIds.`,
      {
        taskIds: [...existing].filter(([, r]) => r.task_group_id !== taskGroupId).map(([id]) => id),
      },
    );
  }
  const changed = tasks
    .filter((t) => {
      const row = existing.get(t.definition.taskId);
      if (row === undefined) return true;
      // As for single tasks: the deadline defaults to "24 h from now" and is not compared;
      // jsonb keeps no key order, so values are compared as the database returns them.
      const { deadline: _a, ...before } = storedDefinition(row.definition);
      const { deadline: _b, ...after } = t.definition;
      return !isDeepStrictEqual(before, JSON.parse(JSON.stringify(after)));
    })
    .map((t) => t.definition.taskId);
  if (changed.length > 0 || inGroup !== tasks.length) {
    throw new ApiError(
      "RequestConflict",
      changed.length > 0
        ? `Task group ${JSON.stringify(taskGroupId)} already exists, and this graph differs in task ${list(changed)}; submit it under another taskGroupId.`
        : `Task group ${JSON.stringify(taskGroupId)} already exists with ${inGroup} tasks, this graph has ${tasks.length}; submit it under another taskGroupId.`,
      { taskGroupId, taskIds: changed },
    );
  }
  return true;
}

/** A task group's tasks with their states and counts, or undefined when it has none. */
export async function readTaskGroup(
  db: Kysely<DatabaseSchema>,
  taskGroupId: string,
): Promise<TaskGroupView | undefined> {
  // One snapshot: the group's resolution and its tasks' states must describe the same moment.
  return await db
    .transaction()
    .setIsolationLevel("repeatable read")
    .execute((trx) => readTaskGroupIn(trx, taskGroupId));
}

async function readTaskGroupIn(db: Trx, taskGroupId: string): Promise<TaskGroupView | undefined> {
  const rows = await db
    .selectFrom("tasks as t")
    .select((eb) => [
      "t.task_id",
      "t.name",
      "t.state",
      "t.resolved_at",
      "t.updated_at",
      "t.priority",
      "t.inactive",
      "t.breakpoint",
      eb
        .selectFrom("runs as r")
        .select("r.reason_resolved")
        .whereRef("r.task_id", "=", "t.task_id")
        .orderBy("r.run_id", "desc")
        .limit(1)
        .as("reason_resolved"),
    ])
    .where("t.task_group_id", "=", taskGroupId)
    .orderBy("t.task_id")
    .execute();
  if (rows.length === 0) return undefined;
  const group = await db
    .selectFrom("task_groups")
    .select(["resolved_at", "resolutions"])
    .where("task_group_id", "=", taskGroupId)
    .executeTakeFirst();
  const counts = Object.fromEntries(TASK_STATES.map((s) => [s, 0])) as Record<TaskState, number>;
  for (const row of rows) counts[row.state] += 1;
  const iso = (value: Date | string | null) =>
    value == null ? null : new Date(value).toISOString();
  return {
    taskGroupId,
    total: rows.length,
    resolved: counts.completed + counts.failed + counts.exception,
    counts,
    inactive: rows.filter((row) => row.inactive && row.state === "unscheduled").length,
    resolvedAt: iso(group?.resolved_at ?? null),
    resolutions: group?.resolutions ?? 0,
    tasks: rows.map((row) => ({
      taskId: row.task_id,
      name: row.name,
      state: row.state,
      reasonResolved: row.reason_resolved ?? null,
      resolvedAt: iso(row.resolved_at),
      updatedAt: iso(row.updated_at) ?? "",
      priority: row.priority,
      inactive: row.inactive,
      breakpoint: row.breakpoint,
    })),
  };
}
