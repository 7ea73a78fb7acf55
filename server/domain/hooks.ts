/**
 * Hooks: "whenever followed cluster A publishes an artifact (or completes a task) matching
 * this filter, submit this graph template with the matched artifact as input".
 *
 * A hook is a filter, a versioned template and the values of the template's parameters.
 * The template is checked when the hook is created or changed, by instantiating it with a
 * sample event and running the task graph validator that `POST /api/v1/task-groups` uses.
 *
 * Firing is part of the inbox's transaction: the fire row (unique per hook and activity)
 * commits together with the activity's dedupe record, so an activity delivered twice fires
 * once. A hook without coalescing creates its task group in that same transaction. A
 * coalescing hook records a `pending` fire and a timer job on the queue; when the window
 * closes, the newest pending fire of the same coalescing key is fired and the others are
 * `superseded`. The fire rows are the durable state: after a lost queue the timers are
 * enqueued again from them ({@link HookService.recover}).
 * @module
 */
import { createHash } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import { sql, type Kysely, type Transaction } from "kysely";
import type { TaskwebActivity } from "../../protocol/index.ts";
import type { ClusterUrls } from "../federation/cluster-urls.ts";
import type { JobQueue } from "../queue/job-queue.ts";
import type { DatabaseSchema, HookFiresTable } from "../store/schema.ts";
import { ApiError } from "./errors.ts";
import { globToRegExp, hasTags } from "./tag-match.ts";
import { TAG_NAME_PATTERN, TASK_LIMITS } from "./task-definition.ts";

export { globToRegExp, hasTags };
import { checkTaskGraph } from "./task-graph.ts";
import { emptyEffects, mergeEffects, type Effects, type TaskService } from "./task-service.ts";

type Db = Kysely<DatabaseSchema>;
type Trx = Transaction<DatabaseSchema>;

/** The queue whose delayed jobs close coalescing windows. */
export const HOOK_QUEUE = "hooks";

/** Activities a hook can match. */
export const HOOK_ACTIVITIES = ["ArtifactPublished", "TaskCompleted"] as const;

/** Bounds of a hook. */
export const HOOK_LIMITS = {
  /** Longest coalescing window, in seconds (one day). */
  maxWindowSeconds: 86_400,
  /** Longest task id in a template: the fire's id and a `-` are put in front of it. */
  maxTemplateTaskIdLength: 43,
  /** Declared parameters of a template. */
  maxParameters: 50,
  /** Characters of a parameter value. */
  maxParameterLength: 4096,
} as const;

/** Which activities a hook matches. Every field given must match. */
export interface HookFilter {
  /** The actor URL of the followed cluster. */
  readonly cluster: string;
  /** @defaultValue "ArtifactPublished" */
  readonly activity: (typeof HOOK_ACTIVITIES)[number];
  /**
   * A glob (`*` any characters, `?` one) on the artifact's name. For `TaskCompleted`, the
   * first artifact of the task whose name matches is the matched artifact, and a task with
   * none does not match.
   */
  readonly artifactName?: string;
  /** A glob on the task's name (`TaskCompleted` only: `ArtifactPublished` carries no name). */
  readonly taskName?: string;
  /**
   * Tags the task (or the artifact, which carries its task's) must carry, every one with
   * exactly this value, such as `{"project": "web", "branch": "main"}`; other tags may be
   * present. Activities from senders older than taskweb v1.3 carry no tags and never match.
   */
  readonly tags?: Readonly<Record<string, string>>;
}

/** How a burst of matching activities becomes one run. */
export interface HookCoalesce {
  /**
   * Seconds the first matching activity waits; every activity matching meanwhile (with the
   * same key) joins it, and when the window closes only the newest fires.
   */
  readonly windowSeconds: number;
  /**
   * A string with `{{…}}` placeholders, such as `"{{event.artifact.name}}"`: activities
   * coalesce only with activities of the same key. @defaultValue "" (all of the hook's)
   */
  readonly key?: string;
}

/** A declared parameter of a template. */
export interface HookParameter {
  readonly description?: string;
  /** Used when the hook gives no value; without it a value is required. */
  readonly default?: string;
}

/**
 * A graph template: the `tasks` of a task graph in which any string may hold `{{name}}`
 * placeholders, naming a declared parameter or an event parameter ({@link EVENT_PARAMETERS}).
 * Task ids are short names: each fire prefixes them with its id, and its task group is the
 * fire's id.
 */
export interface HookTemplate {
  readonly parameters: Readonly<Record<string, HookParameter>>;
  readonly tasks: readonly unknown[];
}

/** A hook as created by `PUT /api/v1/hooks/:hookId`. */
export interface HookDefinition {
  readonly hookId: string;
  readonly description: string;
  readonly filter: HookFilter;
  readonly coalesce: HookCoalesce | null;
  readonly template: HookTemplate;
  /** Values of the template's declared parameters. */
  readonly parameters: Readonly<Record<string, string>>;
}

/** A stored hook. */
export interface HookView extends HookDefinition {
  readonly templateVersion: number;
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** One fire of a hook, as `GET /api/v1/hooks/:hookId/fires` lists it. */
export interface HookFireView {
  readonly fireId: string;
  readonly activityId: string;
  readonly cluster: string;
  readonly templateVersion: number;
  readonly coalesceKey: string;
  readonly state: HookFiresTable["state"];
  readonly taskGroupId: string | null;
  readonly supersededBy: string | null;
  readonly error: string | null;
  readonly receivedAt: string;
  readonly dueAt: string | null;
  readonly firedAt: string | null;
  readonly event: Readonly<Record<string, string>>;
}

/** The event parameters every template may use. */
export const EVENT_PARAMETERS = [
  "event.activity",
  "event.kind",
  "event.cluster",
  "event.published",
  "event.task",
  "event.taskName",
  "event.taskGroup",
  "event.artifact.id",
  "event.artifact.name",
  "event.artifact.url",
  "event.artifact.sha256",
  "event.artifact.size",
  "event.artifact.mediaType",
  "fire.id",
] as const;

/** A problem with a hook definition. */
export interface HookProblem {
  readonly field: string;
  readonly message: string;
}

const HOOK_ID = /^[A-Za-z0-9_-]{1,64}$/;
const PARAMETER_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
const PLACEHOLDER = /\{\{\s*([A-Za-z0-9_.]+)\s*\}\}/g;

/** The id of the fire of `hookId` for `activityId`: also its task group's id. */
export function fireIdOf(hookId: string, activityId: string): string {
  const digest = createHash("sha256").update(`${hookId}\n${activityId}`).digest("base64url");
  return `f${digest.slice(0, 19)}`;
}

/** Replaces the placeholders of every string in `value`; names without a value are kept. */
function substitute(value: unknown, params: Readonly<Record<string, string>>): unknown {
  if (typeof value === "string") {
    return value.replace(PLACEHOLDER, (whole, name: string) => params[name] ?? whole);
  }
  if (Array.isArray(value)) return value.map((v) => substitute(v, params));
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substitute(v, params)]));
  }
  return value;
}

/** Every placeholder name used in the strings of `value`. */
function placeholders(value: unknown, into = new Set<string>()): Set<string> {
  if (typeof value === "string") {
    for (const m of value.matchAll(PLACEHOLDER)) into.add(m[1]!);
  } else if (Array.isArray(value)) {
    for (const v of value) placeholders(v, into);
  } else if (typeof value === "object" && value !== null) {
    for (const v of Object.values(value)) placeholders(v, into);
  }
  return into;
}

/**
 * The task graph one fire submits: the template with its placeholders filled, each task id
 * prefixed with the fire's id (and references between the template's tasks with it).
 */
export function instantiateTemplate(
  template: HookTemplate,
  params: Readonly<Record<string, string>>,
  fireId: string,
): { taskGroupId: string; tasks: unknown[] } {
  const filled = substitute(template.tasks, params) as unknown[];
  const ids = new Set<string>();
  for (const t of filled) {
    const id = (t as { taskId?: unknown } | null)?.taskId;
    if (typeof id === "string") ids.add(id);
  }
  const rename = (ref: unknown) =>
    typeof ref === "string" && ids.has(ref) ? `${fireId}-${ref}` : ref;
  const tasks = filled.map((t) => {
    if (typeof t !== "object" || t === null || Array.isArray(t)) return t;
    const task = { ...(t as Record<string, unknown>) };
    task.taskId = rename(task.taskId);
    delete task.taskGroupId;
    if (Array.isArray(task.dependencies)) task.dependencies = task.dependencies.map(rename);
    if (Array.isArray(task.inputs)) {
      task.inputs = task.inputs.map((input: unknown) =>
        typeof input === "object" && input !== null
          ? {
              ...(input as Record<string, unknown>),
              task: rename((input as { task?: unknown }).task),
            }
          : input,
      );
    }
    return task;
  });
  return { taskGroupId: fireId, tasks };
}

/** Event parameters of a sample event, to check a template when the hook is created. */
function sampleEvent(filter: HookFilter): Record<string, string> {
  const cluster = filter.cluster;
  const task = `${new URL(cluster).origin}/clusters/sample/tasks/sample-task`;
  const name = (filter.artifactName ?? "public/sample.bin").replace(/[*?]/g, "x");
  return {
    "event.activity": `${cluster}#sample-activity`,
    "event.kind": filter.activity,
    "event.cluster": cluster,
    "event.published": new Date().toISOString(),
    "event.task": task,
    "event.taskName": (filter.taskName ?? "sample").replace(/[*?]/g, "x"),
    "event.taskGroup": `${new URL(cluster).origin}/clusters/sample/task-groups/sample-group`,
    "event.artifact.id": `${task}/artifacts/${name}`,
    "event.artifact.name": name,
    "event.artifact.url": `${task}/artifacts/${name}/content`,
    "event.artifact.sha256": "0".repeat(64),
    "event.artifact.size": "0",
    "event.artifact.mediaType": "application/octet-stream",
    "fire.id": fireIdOf("sample", "sample"),
  };
}

/** The parameters of one fire: the event's, then the hook's values, then the defaults. */
function fireParameters(
  template: HookTemplate,
  values: Readonly<Record<string, string>>,
  event: Readonly<Record<string, string>>,
): Record<string, string> {
  const params: Record<string, string> = {};
  for (const [name, p] of Object.entries(template.parameters)) {
    const value = values[name] ?? p.default;
    if (value != null) params[name] = value;
  }
  return { ...params, ...event };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Checks a filter's `tags`: tag names mapped to the values they must have. Adds a problem
 * for each thing wrong, under `field`.
 * @returns the tags, or undefined when absent or wrong.
 */
export function checkTagFilter(
  value: unknown,
  field: string,
  problems: { field: string; message: string }[],
): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  if (!isRecord(value) || Object.keys(value).length > TASK_LIMITS.maxTags) {
    problems.push({
      field,
      message: `An object of at most ${TASK_LIMITS.maxTags} tags and the values they must have, such as {"project": "web"}.`,
    });
    return undefined;
  }
  const tags: Record<string, string> = {};
  let ok = true;
  for (const [name, v] of Object.entries(value)) {
    if (!TAG_NAME_PATTERN.test(name)) {
      problems.push({
        field: `${field}.${name}`,
        message: "A tag name is 1–64 letters, digits, '-', '_', '.', ':' or '/'.",
      });
      ok = false;
    } else if (typeof v !== "string" || v.length > TASK_LIMITS.maxTagValueLength) {
      problems.push({
        field: `${field}.${name}`,
        message: `The value the tag must have: a string of at most ${TASK_LIMITS.maxTagValueLength} characters.`,
      });
      ok = false;
    } else tags[name] = v;
  }
  return ok ? tags : undefined;
}

/**
 * Checks a hook definition sent by a client, template included. Never throws.
 * @returns the definition, or every problem found.
 */
export function validateHookDefinition(
  hookId: string,
  input: unknown,
  options: { localTaskId?: (url: string) => string | undefined } = {},
):
  | { readonly ok: true; readonly value: HookDefinition }
  | { readonly ok: false; readonly problems: readonly HookProblem[] } {
  const problems: HookProblem[] = [];
  const fail = () => ({ ok: false as const, problems });
  if (!HOOK_ID.test(hookId)) {
    problems.push({ field: "hookId", message: "Use 1–64 characters of A–Z, a–z, 0–9, - or _." });
  }
  if (!isRecord(input)) {
    problems.push({ field: "", message: "Send a JSON object with filter and template." });
    return fail();
  }
  const known = ["description", "filter", "coalesce", "template", "parameters"];
  for (const key of Object.keys(input)) {
    if (!known.includes(key)) problems.push({ field: key, message: "Unknown field." });
  }
  const description = input.description ?? "";
  if (typeof description !== "string" || description.length > 1000) {
    problems.push({ field: "description", message: "A string of at most 1000 characters." });
  }

  // Filter.
  const f = input.filter;
  let filter: HookFilter | undefined;
  if (!isRecord(f)) {
    problems.push({ field: "filter", message: "Give an object with at least `cluster`." });
  } else {
    for (const key of Object.keys(f)) {
      if (!["cluster", "activity", "artifactName", "taskName", "tags"].includes(key))
        problems.push({ field: `filter.${key}`, message: "Unknown field." });
    }
    let clusterOk = false;
    if (typeof f.cluster === "string") {
      try {
        const u = new URL(f.cluster);
        clusterOk = u.protocol === "https:" || u.protocol === "http:";
      } catch {
        clusterOk = false;
      }
    }
    if (!clusterOk) {
      problems.push({
        field: "filter.cluster",
        message:
          "The actor URL of a cluster this one follows, such as https://ci.example/clusters/ci.",
      });
    }
    const activity = f.activity ?? "ArtifactPublished";
    if (!HOOK_ACTIVITIES.includes(activity as never)) {
      problems.push({ field: "filter.activity", message: `One of ${HOOK_ACTIVITIES.join(", ")}.` });
    }
    for (const key of ["artifactName", "taskName"] as const) {
      const v = f[key];
      if (v !== undefined && (typeof v !== "string" || v === "" || v.length > 255)) {
        problems.push({ field: `filter.${key}`, message: "A glob of 1–255 characters." });
      }
    }
    if (f.taskName !== undefined && activity === "ArtifactPublished") {
      problems.push({
        field: "filter.taskName",
        message: "ArtifactPublished carries no task name; filter on TaskCompleted to use taskName.",
      });
    }
    const tags = checkTagFilter(f.tags, "filter.tags", problems);
    if (problems.length === 0) {
      filter = {
        cluster: f.cluster as string,
        activity: activity as HookFilter["activity"],
        ...(f.artifactName !== undefined ? { artifactName: f.artifactName as string } : {}),
        ...(f.taskName !== undefined ? { taskName: f.taskName as string } : {}),
        ...(tags != null && Object.keys(tags).length > 0 ? { tags } : {}),
      };
    }
  }

  // Coalescing.
  let coalesce: HookCoalesce | null = null;
  const c = input.coalesce;
  if (c != null) {
    if (!isRecord(c)) {
      problems.push({ field: "coalesce", message: "An object {windowSeconds, key?} or null." });
    } else {
      const w = c.windowSeconds;
      if (
        typeof w !== "number" ||
        !Number.isFinite(w) ||
        w < 0 ||
        w > HOOK_LIMITS.maxWindowSeconds
      ) {
        problems.push({
          field: "coalesce.windowSeconds",
          message: `Seconds from 0 to ${HOOK_LIMITS.maxWindowSeconds}.`,
        });
      }
      if (c.key !== undefined && (typeof c.key !== "string" || c.key.length > 1000)) {
        problems.push({ field: "coalesce.key", message: "A string of at most 1000 characters." });
      }
      for (const key of Object.keys(c)) {
        if (!["windowSeconds", "key"].includes(key))
          problems.push({ field: `coalesce.${key}`, message: "Unknown field." });
      }
      if (typeof w === "number") {
        coalesce = {
          windowSeconds: w,
          ...(typeof c.key === "string" ? { key: c.key } : {}),
        };
      }
    }
  }

  // Template and parameter values.
  const t = input.template;
  let template: HookTemplate | undefined;
  if (!isRecord(t) || !Array.isArray(t.tasks)) {
    problems.push({
      field: "template",
      message:
        "Give {parameters?, tasks: [...]}: the tasks of a task graph with {{…}} placeholders.",
    });
  } else {
    const declared = t.parameters ?? {};
    const parameters: Record<string, HookParameter> = {};
    if (!isRecord(declared) || Object.keys(declared).length > HOOK_LIMITS.maxParameters) {
      problems.push({
        field: "template.parameters",
        message: `An object of at most ${HOOK_LIMITS.maxParameters} parameters.`,
      });
    } else {
      for (const [name, p] of Object.entries(declared)) {
        const field = `template.parameters.${name}`;
        if (!PARAMETER_NAME.test(name)) {
          problems.push({ field, message: "Names match [A-Za-z_][A-Za-z0-9_]{0,63}." });
          continue;
        }
        if (
          !isRecord(p) ||
          (p.default !== undefined && typeof p.default !== "string") ||
          (p.description !== undefined && typeof p.description !== "string")
        ) {
          problems.push({ field, message: "An object {description?, default?} of strings." });
          continue;
        }
        parameters[name] = {
          ...(p.description !== undefined ? { description: p.description as string } : {}),
          ...(p.default !== undefined ? { default: p.default as string } : {}),
        };
      }
    }
    for (const key of Object.keys(t)) {
      if (!["parameters", "tasks"].includes(key))
        problems.push({ field: `template.${key}`, message: "Unknown field." });
    }
    t.tasks.forEach((task, i) => {
      const id = isRecord(task) ? task.taskId : undefined;
      if (typeof id === "string" && id.length > HOOK_LIMITS.maxTemplateTaskIdLength) {
        problems.push({
          field: `template.tasks[${i}].taskId`,
          message: `At most ${HOOK_LIMITS.maxTemplateTaskIdLength} characters in a template: each fire puts its id in front.`,
        });
      }
      if (isRecord(task) && task.taskGroupId !== undefined) {
        problems.push({
          field: `template.tasks[${i}].taskGroupId`,
          message: "Leave it out: each fire makes its own task group.",
        });
      }
    });
    template = { parameters, tasks: t.tasks };
  }
  const values: Record<string, string> = {};
  const v = input.parameters ?? {};
  if (!isRecord(v)) {
    problems.push({ field: "parameters", message: "An object of parameter values (strings)." });
  } else {
    for (const [name, value] of Object.entries(v)) {
      if (typeof value !== "string" || value.length > HOOK_LIMITS.maxParameterLength) {
        problems.push({
          field: `parameters.${name}`,
          message: `A string of at most ${HOOK_LIMITS.maxParameterLength} characters.`,
        });
      } else if (template != null && !(name in template.parameters)) {
        problems.push({
          field: `parameters.${name}`,
          message: "The template declares no such parameter; declare it in template.parameters.",
        });
      } else values[name] = value;
    }
  }
  if (template != null) {
    for (const [name, p] of Object.entries(template.parameters)) {
      if (values[name] == null && p.default == null) {
        problems.push({
          field: `parameters.${name}`,
          message: "The template requires this parameter and declares no default; give a value.",
        });
      }
    }
    const usable = new Set<string>([...Object.keys(template.parameters), ...EVENT_PARAMETERS]);
    const used = placeholders(template.tasks);
    if (coalesce?.key != null) placeholders(coalesce.key, used);
    for (const name of used) {
      if (!usable.has(name)) {
        problems.push({
          field: "template",
          message: `Unknown placeholder {{${name}}}: declare it in template.parameters or use one of ${EVENT_PARAMETERS.join(", ")}.`,
        });
      }
    }
  }
  if (problems.length > 0 || filter == null || template == null) return fail();

  // The template must make a valid graph: the same checks as a submitted graph.
  const graph = instantiateTemplate(
    template,
    fireParameters(template, values, sampleEvent(filter)),
    fireIdOf(hookId, "sample"),
  );
  const check = checkTaskGraph(
    graph,
    options.localTaskId ? { localTaskId: options.localTaskId } : {},
  );
  for (const p of check.problems) {
    problems.push({
      field:
        p.task != null
          ? `template.tasks[${p.task}]${p.field ? `.${p.field}` : ""}`
          : `template${p.field ? `.${p.field}` : ""}`,
      message: p.message,
    });
  }
  if (problems.length > 0) return fail();
  return {
    ok: true,
    value: {
      hookId,
      description: description as string,
      filter,
      coalesce,
      template,
      parameters: values,
    },
  };
}

/**
 * The event parameters of `activity` for a hook with `filter`, or undefined when the
 * activity does not match.
 */
export function matchActivity(
  filter: HookFilter,
  activity: TaskwebActivity,
): Record<string, string> | undefined {
  if (activity.actor !== filter.cluster || activity.kind !== filter.activity) return undefined;
  const artifactGlob = filter.artifactName == null ? undefined : globToRegExp(filter.artifactName);
  const base = {
    "event.activity": activity.id,
    "event.kind": activity.kind,
    "event.cluster": activity.actor,
    "event.published": activity.published,
  };
  const artifactParams = (a: {
    id: string;
    name: string;
    url: string;
    sha256: string;
    size: number;
    mediaType: string;
  }) => ({
    "event.artifact.id": a.id,
    "event.artifact.name": a.name,
    "event.artifact.url": a.url,
    "event.artifact.sha256": a.sha256,
    "event.artifact.size": String(a.size),
    "event.artifact.mediaType": a.mediaType,
  });
  if (activity.kind === "ArtifactPublished") {
    const a = activity.artifact;
    if (artifactGlob != null && !artifactGlob.test(a.name)) return undefined;
    if (!hasTags(a.tags, filter.tags)) return undefined;
    return {
      ...base,
      "event.task": a.task,
      "event.taskName": "",
      "event.taskGroup": "",
      ...artifactParams(a),
    };
  }
  if (activity.kind === "TaskCompleted") {
    const task = activity.task;
    if (filter.taskName != null && !globToRegExp(filter.taskName).test(task.name)) return undefined;
    if (!hasTags(task.tags, filter.tags)) return undefined;
    const artifact =
      artifactGlob == null ? undefined : task.artifacts.find((a) => artifactGlob.test(a.name));
    if (artifactGlob != null && artifact == null) return undefined;
    return {
      ...base,
      "event.task": task.id,
      "event.taskName": task.name,
      "event.taskGroup": task.taskGroup,
      ...(artifact != null
        ? artifactParams(artifact)
        : {
            "event.artifact.id": "",
            "event.artifact.name": "",
            "event.artifact.url": "",
            "event.artifact.sha256": "",
            "event.artifact.size": "",
            "event.artifact.mediaType": "",
          }),
    };
  }
  return undefined;
}

/** A coalescing window to close later, returned by {@link HookService.matchInTransaction}. */
export interface HookTimer {
  readonly hookId: string;
  readonly coalesceKey: string;
  readonly fireId: string;
  readonly delayMs: number;
}

/** What matching one activity caused, to run after commit. */
export interface HookWork {
  readonly effects: Effects;
  readonly timers: HookTimer[];
  /** Fires made now (task groups created). */
  readonly fired: string[];
}

/** Options for {@link createHookService}. */
export interface HookServiceOptions {
  readonly db: Db;
  readonly jobs: JobQueue;
  readonly tasks: TaskService;
  readonly urls: ClusterUrls;
  /** Told after commit that a fire created its task group. */
  readonly onFired?: (fire: { hookId: string; fireId: string; taskGroupId: string }) => void;
}

/** Hooks of one cluster. */
export type HookService = ReturnType<typeof createHookService>;

function toView(
  row: {
    hook_id: string;
    description: string;
    filter: Record<string, unknown>;
    coalesce: Record<string, unknown> | null;
    parameters: Record<string, string>;
    template_version: number;
    created_at: Date;
    updated_at: Date;
  },
  template: Record<string, unknown>,
): HookView {
  return {
    hookId: row.hook_id,
    description: row.description,
    filter: row.filter as unknown as HookFilter,
    coalesce: row.coalesce as unknown as HookCoalesce | null,
    template: template as unknown as HookTemplate,
    parameters: row.parameters,
    templateVersion: row.template_version,
    createdAt: new Date(row.created_at).toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
  };
}

/** Creates the hook service. */
export function createHookService(options: HookServiceOptions) {
  const { db, jobs, tasks, urls } = options;

  /**
   * Creates the fire's task group inside `trx`, behind a savepoint: a template that does not
   * fit this event (say a deadline already past) fails the fire, not the transaction.
   */
  async function fireNow(
    trx: Trx,
    fire: {
      fire_id: string;
      hook_id: string;
      template_version: number;
      event: Record<string, string>;
    },
    work: HookWork,
  ): Promise<void> {
    const hook = await trx
      .selectFrom("hooks")
      .select("parameters")
      .where("hook_id", "=", fire.hook_id)
      .executeTakeFirstOrThrow();
    const row = await trx
      .selectFrom("hook_templates")
      .select("template")
      .where("hook_id", "=", fire.hook_id)
      .where("version", "=", fire.template_version)
      .executeTakeFirstOrThrow();
    const template = row.template as unknown as HookTemplate;
    const graph = instantiateTemplate(
      template,
      fireParameters(template, hook.parameters, { ...fire.event, "fire.id": fire.fire_id }),
      fire.fire_id,
    );
    await sql`savepoint hook_fire`.execute(trx);
    try {
      const { result, effects } = await tasks.createTaskGroupInTransaction(trx, graph);
      await sql`release savepoint hook_fire`.execute(trx);
      mergeEffects(work.effects, effects);
      work.fired.push(fire.fire_id);
      await trx
        .updateTable("hook_fires")
        .set({ state: "fired", task_group_id: result.taskGroupId, fired_at: new Date() })
        .where("fire_id", "=", fire.fire_id)
        .execute();
    } catch (error) {
      await sql`rollback to savepoint hook_fire`.execute(trx);
      const problems =
        error instanceof ApiError ? (error.details as { problems?: unknown })?.problems : undefined;
      await trx
        .updateTable("hook_fires")
        .set({
          state: "failed",
          error:
            `${String(error instanceof Error ? error.message : error)}${problems != null ? ` ${JSON.stringify(problems)}` : ""}`.slice(
              0,
              4000,
            ),
          fired_at: new Date(),
        })
        .where("fire_id", "=", fire.fire_id)
        .execute();
    }
  }

  /** Runs what fires caused, after their transaction committed. */
  async function afterCommit(work: HookWork): Promise<void> {
    await tasks.runEffects(work.effects);
    for (const t of work.timers) {
      await jobs.enqueue(
        HOOK_QUEUE,
        `${t.hookId}/${t.fireId}`,
        { hookId: t.hookId, coalesceKey: t.coalesceKey },
        { delayMs: t.delayMs, attempts: 10 },
      );
    }
    if (options.onFired != null && work.fired.length > 0) {
      const rows = await db
        .selectFrom("hook_fires")
        .select(["hook_id", "fire_id", "task_group_id"])
        .where("fire_id", "in", work.fired)
        .execute();
      for (const r of rows) {
        if (r.task_group_id != null)
          options.onFired({ hookId: r.hook_id, fireId: r.fire_id, taskGroupId: r.task_group_id });
      }
    }
  }

  return {
    /**
     * Creates a hook, or gives an existing one a new template version when its template
     * changed. Repeating the same definition changes nothing.
     * @throws {ApiError} `InputError` with `details.problems`.
     */
    async put(
      hookId: string,
      input: unknown,
    ): Promise<{ hook: HookView; created: boolean; changed: boolean }> {
      const checked = validateHookDefinition(hookId, input, {
        localTaskId: (url) => urls.localTaskId(url),
      });
      if (!checked.ok) {
        throw new ApiError("InputError", "The hook is invalid; nothing was changed. See details.", {
          problems: checked.problems,
        });
      }
      const def = checked.value;
      return await db.transaction().execute(async (trx) => {
        const existing = await trx
          .selectFrom("hooks")
          .selectAll()
          .where("hook_id", "=", hookId)
          .forUpdate()
          .executeTakeFirst();
        const now = new Date();
        const templateJson = JSON.stringify(def.template);
        if (existing == null) {
          await trx
            .insertInto("hooks")
            .values({
              hook_id: hookId,
              description: def.description,
              filter: JSON.stringify(def.filter),
              coalesce: JSON.stringify(def.coalesce),
              parameters: JSON.stringify(def.parameters),
              template_version: 1,
              updated_at: now,
            })
            .execute();
          await trx
            .insertInto("hook_templates")
            .values({ hook_id: hookId, version: 1, template: templateJson })
            .execute();
        } else {
          const current = await trx
            .selectFrom("hook_templates")
            .select("template")
            .where("hook_id", "=", hookId)
            .where("version", "=", existing.template_version)
            .executeTakeFirstOrThrow();
          const sameTemplate = isDeepStrictEqual(current.template, JSON.parse(templateJson));
          const same =
            sameTemplate &&
            existing.description === def.description &&
            isDeepStrictEqual(existing.filter, JSON.parse(JSON.stringify(def.filter))) &&
            isDeepStrictEqual(existing.coalesce, JSON.parse(JSON.stringify(def.coalesce))) &&
            isDeepStrictEqual(existing.parameters, def.parameters);
          if (same) {
            return { hook: toView(existing, current.template), created: false, changed: false };
          }
          const version = sameTemplate ? existing.template_version : existing.template_version + 1;
          if (!sameTemplate) {
            await trx
              .insertInto("hook_templates")
              .values({ hook_id: hookId, version, template: templateJson })
              .execute();
          }
          await trx
            .updateTable("hooks")
            .set({
              description: def.description,
              filter: JSON.stringify(def.filter),
              coalesce: JSON.stringify(def.coalesce),
              parameters: JSON.stringify(def.parameters),
              template_version: version,
              updated_at: now,
            })
            .where("hook_id", "=", hookId)
            .execute();
        }
        const row = await trx
          .selectFrom("hooks")
          .selectAll()
          .where("hook_id", "=", hookId)
          .executeTakeFirstOrThrow();
        return {
          hook: toView(row, def.template as unknown as Record<string, unknown>),
          created: existing == null,
          changed: true,
        };
      });
    },

    /** One hook with its current template; undefined when there is none. */
    async get(hookId: string): Promise<HookView | undefined> {
      const row = await db
        .selectFrom("hooks")
        .selectAll()
        .where("hook_id", "=", hookId)
        .executeTakeFirst();
      if (row == null) return undefined;
      const t = await db
        .selectFrom("hook_templates")
        .select("template")
        .where("hook_id", "=", hookId)
        .where("version", "=", row.template_version)
        .executeTakeFirstOrThrow();
      return toView(row, t.template);
    },

    /** Every hook, by id. */
    async list(): Promise<HookView[]> {
      const rows = await db
        .selectFrom("hooks")
        .innerJoin("hook_templates", (j) =>
          j
            .onRef("hook_templates.hook_id", "=", "hooks.hook_id")
            .onRef("hook_templates.version", "=", "hooks.template_version"),
        )
        .selectAll("hooks")
        .select("hook_templates.template")
        .orderBy("hooks.hook_id")
        .execute();
      return rows.map((r) => toView(r, r.template));
    },

    /** Deletes a hook, its templates and its fires (task groups it created stay). */
    async remove(hookId: string): Promise<boolean> {
      const result = await db.deleteFrom("hooks").where("hook_id", "=", hookId).executeTakeFirst();
      return Number(result.numDeletedRows) > 0;
    },

    /** What a hook fired, newest first; undefined when there is no such hook. */
    async fires(hookId: string, limit = 100): Promise<HookFireView[] | undefined> {
      const hook = await db
        .selectFrom("hooks")
        .select("hook_id")
        .where("hook_id", "=", hookId)
        .executeTakeFirst();
      if (hook == null) return undefined;
      const rows = await db
        .selectFrom("hook_fires")
        .selectAll()
        .where("hook_id", "=", hookId)
        .orderBy("seq", "desc")
        .limit(Math.min(Math.max(limit, 1), 1000))
        .execute();
      const iso = (d: Date | null) => (d == null ? null : new Date(d).toISOString());
      return rows.map((r) => ({
        fireId: r.fire_id,
        activityId: r.activity_id,
        cluster: r.actor_id,
        templateVersion: r.template_version,
        coalesceKey: r.coalesce_key,
        state: r.state,
        taskGroupId: r.task_group_id,
        supersededBy: r.superseded_by,
        error: r.error,
        receivedAt: new Date(r.received_at).toISOString(),
        dueAt: iso(r.due_at),
        firedAt: iso(r.fired_at),
        event: r.event,
      }));
    },

    /**
     * Matches an activity the inbox is applying, inside the inbox's transaction (after its
     * dedupe record): records one fire per matching hook and fires the hooks that do not
     * coalesce. Hand the result to {@link afterCommit} once the transaction committed.
     */
    async matchInTransaction(trx: Trx, activity: TaskwebActivity): Promise<HookWork> {
      const work: HookWork = { effects: emptyEffects(), timers: [], fired: [] };
      if (activity.kind !== "ArtifactPublished" && activity.kind !== "TaskCompleted") return work;
      const hooks = await trx
        .selectFrom("hooks")
        .selectAll()
        .where(sql<boolean>`filter->>'cluster' = ${activity.actor}`)
        .where(sql<boolean>`filter->>'activity' = ${activity.kind}`)
        .orderBy("hook_id")
        .execute();
      for (const hook of hooks) {
        const event = matchActivity(hook.filter as unknown as HookFilter, activity);
        if (event == null) continue;
        const fireId = fireIdOf(hook.hook_id, activity.id);
        const coalesce = hook.coalesce as unknown as HookCoalesce | null;
        const template = await trx
          .selectFrom("hook_templates")
          .select("template")
          .where("hook_id", "=", hook.hook_id)
          .where("version", "=", hook.template_version)
          .executeTakeFirstOrThrow();
        const params = fireParameters(
          template.template as unknown as HookTemplate,
          hook.parameters,
          { ...event, "fire.id": fireId },
        );
        const coalesceKey =
          coalesce == null ? "" : (substitute(coalesce.key ?? "", params) as string);
        let dueAt: Date | null = null;
        let timer: HookTimer | undefined;
        if (coalesce != null) {
          // Serialises with the window's closing job and other deliveries for this hook.
          await trx
            .selectFrom("hooks")
            .select("hook_id")
            .where("hook_id", "=", hook.hook_id)
            .forUpdate()
            .execute();
          const open = await trx
            .selectFrom("hook_fires")
            .select("due_at")
            .where("hook_id", "=", hook.hook_id)
            .where("coalesce_key", "=", coalesceKey)
            .where("state", "=", "pending")
            .orderBy("seq")
            .executeTakeFirst();
          if (open?.due_at != null) {
            dueAt = new Date(open.due_at);
          } else {
            const delayMs = Math.round(coalesce.windowSeconds * 1000);
            dueAt = new Date(Date.now() + delayMs);
            timer = { hookId: hook.hook_id, coalesceKey, fireId, delayMs };
          }
        }
        const inserted = await trx
          .insertInto("hook_fires")
          .values({
            fire_id: fireId,
            hook_id: hook.hook_id,
            activity_id: activity.id,
            actor_id: activity.actor,
            template_version: hook.template_version,
            coalesce_key: coalesceKey,
            state: "pending",
            event: JSON.stringify(event),
            due_at: dueAt,
          })
          .onConflict((oc) => oc.columns(["hook_id", "activity_id"]).doNothing())
          .returning("fire_id")
          .executeTakeFirst();
        // Recorded before: the inbox dedupes too; this guards a second path to the same fire.
        if (inserted == null) continue;
        if (timer != null) work.timers.push(timer);
        if (coalesce == null) {
          await fireNow(
            trx,
            {
              fire_id: fireId,
              hook_id: hook.hook_id,
              template_version: hook.template_version,
              event,
            },
            work,
          );
        }
      }
      return work;
    },

    afterCommit,

    /**
     * Closes a coalescing window: fires the newest pending fire of the hook and key, and
     * marks the others superseded by it. Safe to run twice.
     */
    async closeWindow(hookId: string, coalesceKey: string): Promise<void> {
      const work: HookWork = { effects: emptyEffects(), timers: [], fired: [] };
      await db.transaction().execute(async (trx) => {
        const hook = await trx
          .selectFrom("hooks")
          .select("hook_id")
          .where("hook_id", "=", hookId)
          .forUpdate()
          .executeTakeFirst();
        if (hook == null) return;
        const pending = await trx
          .selectFrom("hook_fires")
          .select(["fire_id", "hook_id", "template_version", "event"])
          .where("hook_id", "=", hookId)
          .where("coalesce_key", "=", coalesceKey)
          .where("state", "=", "pending")
          .orderBy("seq")
          .execute();
        const newest = pending.at(-1);
        if (newest == null) return;
        const older = pending.slice(0, -1).map((p) => p.fire_id);
        if (older.length > 0) {
          await trx
            .updateTable("hook_fires")
            .set({ state: "superseded", superseded_by: newest.fire_id, fired_at: new Date() })
            .where("fire_id", "in", older)
            .execute();
        }
        await fireNow(trx, newest, work);
      });
      await afterCommit(work);
    },

    /** Enqueues again the timers of pending fires (after a start or a lost queue). */
    async recover(): Promise<void> {
      const rows = await db
        .selectFrom("hook_fires")
        .select(["hook_id", "coalesce_key", "fire_id", "due_at", "seq"])
        .where("state", "=", "pending")
        .orderBy("seq")
        .execute();
      const seen = new Set<string>();
      const timers: HookTimer[] = [];
      for (const r of rows) {
        const key = `${r.hook_id}\n${r.coalesce_key}`;
        if (seen.has(key)) continue;
        seen.add(key);
        timers.push({
          hookId: r.hook_id,
          coalesceKey: r.coalesce_key,
          fireId: r.fire_id,
          delayMs: Math.max(0, (r.due_at == null ? 0 : new Date(r.due_at).getTime()) - Date.now()),
        });
      }
      await afterCommit({ effects: emptyEffects(), timers, fired: [] });
    },
  };
}
