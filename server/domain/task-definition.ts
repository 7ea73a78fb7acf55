/**
 * The definition a client submits to create one task, validated before anything is
 * written. Errors name the field and say what to do.
 * @module
 */
import { isTaskId } from "../../protocol/index.ts";
import { TASK_PRIORITIES, type TaskPriority } from "../store/schema.ts";

export { TASK_PRIORITIES, type TaskPriority };
import { isSecretName, SECRET_LIMITS, SECRET_NAME_RULE } from "./secrets.ts";

/** One input: an artifact of another task (local id or remote task URL), saved at `path`. */
export interface TaskInputDefinition {
  readonly task: string;
  readonly artifact: string;
  readonly path: string;
}

/**
 * A join: the task waits for one matching artifact from each of `clusters` (followed
 * clusters, by actor URL), which become its inputs, and runs once all have arrived. At the
 * deadline, stragglers are given up: the task runs with what arrived (`run`, recording the
 * missing clusters) or resolves `exception` with reason `join-deadline-exceeded` (`fail`).
 */
export interface TaskJoinDefinition {
  /** Actor URLs of followed clusters, in the order their inputs are numbered. */
  readonly clusters: readonly string[];
  /** A glob (`*` any characters, `?` one) on the artifact's name. */
  readonly artifact?: string;
  /** Tags the artifact must carry (on the wire since v1.3), every one with this value. */
  readonly tags?: Readonly<Record<string, string>>;
  /**
   * As submitted: an ISO 8601 date-time, or a duration (`PT30M`, `P1DT2H`) counted from the
   * task's creation. The moment it stands for is stored with the join.
   */
  readonly deadline: string;
  /**
   * As submitted: an ISO 8601 date-time, or a duration (`P7D`) counted back from the task's
   * creation. Matching artifacts this cluster recorded at or after that moment, before the
   * task was created, count too (each cluster's earliest). Absent: only later arrivals count.
   */
  readonly since?: string;
  /** What happens to stragglers at the deadline. @defaultValue "fail" */
  readonly atDeadline: "run" | "fail";
}

/** What the worker runs. */
export interface TaskPayload {
  /** argv; the first element is the program. */
  readonly command: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  /**
   * Environment variables filled from the cluster's secrets at run time, by secret name.
   * Present only when the task names secrets; the values are never in the definition.
   */
  readonly secrets?: Readonly<Record<string, string>>;
  /** Seconds before the run is stopped and resolves `failed`. */
  readonly maxRunTime: number;
}

/** A validated task definition. */
export interface TaskDefinition {
  readonly taskId: string;
  readonly taskGroupId: string;
  readonly name: string;
  /** What a worker runs; null for a breakpoint task, which no worker runs. */
  readonly payload: TaskPayload | null;
  /** Local task ids or https URLs of remote tasks; inputs' tasks are added here. */
  readonly dependencies: readonly string[];
  readonly requires: "all-completed" | "all-resolved";
  readonly inputs: readonly TaskInputDefinition[];
  readonly deadline: string;
  readonly retries: number;
  /** Defined but not scheduled until activated (backfill). */
  readonly inactive: boolean;
  /** Among pending tasks, higher priorities are handed to workers first. */
  readonly priority: TaskPriority;
  /**
   * Runs nothing: once its dependencies allow, it waits (state `running`) until a person or
   * an API call resolves it `completed` or `failed`.
   */
  readonly breakpoint: boolean;
  /** Labels for reports and queries (`taskweb stats --tag project`); no effect on running. */
  readonly tags: Readonly<Record<string, string>>;
  /** Present when the task joins artifacts from several followed clusters. */
  readonly join?: TaskJoinDefinition;
}

/** One problem with a submitted definition. */
export interface DefinitionProblem {
  readonly field: string;
  readonly message: string;
}

/** Result of {@link validateTaskDefinition}. */
export type DefinitionResult =
  | { readonly ok: true; readonly value: TaskDefinition }
  | { readonly ok: false; readonly problems: readonly DefinitionProblem[] };

/** Limits a definition must respect. */
export const TASK_LIMITS = {
  maxDependencies: 1000,
  maxInputs: 100,
  maxCommandArgs: 256,
  maxEnv: 100,
  maxSecrets: SECRET_LIMITS.maxPerTask,
  maxRunTimeSeconds: 86_400,
  defaultMaxRunTimeSeconds: 3600,
  maxDeadlineMs: 5 * 24 * 3600_000,
  defaultDeadlineMs: 24 * 3600_000,
  maxRetries: 49,
  defaultRetries: 5,
  maxTags: 32,
  maxTagValueLength: 256,
  maxJoinClusters: 100,
} as const;

const KNOWN = new Set([
  "taskId",
  "taskGroupId",
  "name",
  "payload",
  "dependencies",
  "requires",
  "inputs",
  "deadline",
  "retries",
  "inactive",
  "priority",
  "breakpoint",
  "tags",
  "join",
]);

/** A tag's name: what `/api/v1/stats?tag=` takes. */
export const TAG_NAME_PATTERN = /^[A-Za-z0-9_.:/-]{1,64}$/;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** An environment variable name, as `payload.env` and `payload.secrets` take them. */
function isEnvName(name: string): boolean {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(name);
}

/**
 * Checks `payload.secrets`: environment variable names mapped to secret names, none of them
 * also set by `payload.env`. Whether the secrets exist is only known when the task runs.
 */
function checkSecrets(
  secrets: unknown,
  env: unknown,
  bad: (field: string, message: string) => void,
): Record<string, string> | undefined {
  const shape = `Must map environment variable names to secret names (${TASK_LIMITS.maxSecrets} at most), such as {"NPM_TOKEN": "npm/publish-token"}.`;
  if (!isRecord(secrets) || Object.keys(secrets).length > TASK_LIMITS.maxSecrets) {
    bad("payload.secrets", shape);
    return undefined;
  }
  let ok = true;
  for (const [variable, name] of Object.entries(secrets)) {
    // Named as graph schema errors name fields, so that a graph reports each problem once.
    const field = /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(variable)
      ? `payload.secrets.${variable}`
      : `payload.secrets[${JSON.stringify(variable)}]`;
    if (!isEnvName(variable)) {
      bad(field, "Must be keyed by an environment variable name ([A-Za-z_][A-Za-z0-9_]*).");
      ok = false;
    } else if (!isSecretName(name)) {
      bad(field, `Must be a secret name: ${SECRET_NAME_RULE}.`);
      ok = false;
    } else if (isRecord(env) && Object.hasOwn(env, variable)) {
      bad(field, `${variable} is also set in payload.env; take it from one or the other.`);
      ok = false;
    }
  }
  return ok ? (secrets as Record<string, string>) : undefined;
}

function isSafeRelativePath(path: string): boolean {
  if (path === "" || path.length > 255 || path.startsWith("/") || path.includes("\\")) return false;
  return path.split("/").every((s) => s !== "" && s !== "." && s !== "..");
}

/** A dependency reference: a local task id, or an http(s) URL of a remote task. */
export function isDependencyRef(ref: string): boolean {
  if (isTaskId(ref)) return true;
  try {
    const url = new URL(ref);
    return (url.protocol === "https:" || url.protocol === "http:") && url.hash === "";
  } catch {
    return false;
  }
}

/** The input path of the artifact that cluster number `position` of a join delivered. */
export function joinInputPath(position: number, artifactName: string): string {
  return `join/${position}/${artifactName}`;
}

const DURATION = /^P(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$/;

/**
 * Milliseconds of an ISO 8601 duration of days, hours, minutes and seconds (`PT30M`,
 * `P1DT2H`, `PT1.5S`), or undefined when `text` is not one.
 */
export function parseDurationMs(text: string): number | undefined {
  const m = DURATION.exec(text);
  if (m == null || text === "P") return undefined;
  const [, d = "0", h = "0", min = "0", sec = "0"] = m;
  return ((Number(d) * 24 + Number(h)) * 60 + Number(min)) * 60_000 + Number(sec) * 1000;
}

/**
 * The moment a join's `deadline` stands for: a date-time as given, a duration from `createdAt`.
 * Undefined when it is neither.
 */
export function joinDeadlineOf(deadline: string, createdAt: Date): Date | undefined {
  const duration = parseDurationMs(deadline);
  if (duration != null) return new Date(createdAt.getTime() + duration);
  if (!/^\d{4}-\d{2}-\d{2}T/.test(deadline)) return undefined;
  const at = new Date(deadline);
  return Number.isNaN(at.getTime()) ? undefined : at;
}

/**
 * The moment a join's `since` stands for: a date-time as given, a duration back from
 * `createdAt`. Undefined when it is neither.
 */
export function joinSinceOf(since: string, createdAt: Date): Date | undefined {
  const duration = parseDurationMs(since);
  if (duration != null) return new Date(createdAt.getTime() - duration);
  return joinDeadlineOf(since, createdAt);
}

function isHttpUrl(value: unknown): value is string {
  if (typeof value !== "string" || value.length > 4096) return false;
  try {
    const url = new URL(value);
    return (url.protocol === "https:" || url.protocol === "http:") && url.hash === "";
  } catch {
    return false;
  }
}

/** Checks a `join` block; adds a problem for each thing wrong. */
function checkJoin(
  raw: unknown,
  taskDeadline: Date | undefined,
  now: Date,
  bad: (field: string, message: string) => void,
): TaskJoinDefinition | undefined {
  if (!isRecord(raw)) {
    bad(
      "join",
      'Must be an object such as {"clusters": ["https://a.example/clusters/a"], "artifact": "public/*.csv", "deadline": "PT1H"}.',
    );
    return undefined;
  }
  const before = { count: 0 };
  const problem = (field: string, message: string) => {
    before.count++;
    bad(field, message);
  };
  for (const key of Object.keys(raw)) {
    if (!["clusters", "artifact", "tags", "deadline", "since", "atDeadline"].includes(key)) {
      problem(
        `join.${key}`,
        "Unknown field; known: clusters, artifact, tags, deadline, since, atDeadline.",
      );
    }
  }
  const clusters: string[] = [];
  if (
    !Array.isArray(raw.clusters) ||
    raw.clusters.length === 0 ||
    raw.clusters.length > TASK_LIMITS.maxJoinClusters
  ) {
    problem(
      "join.clusters",
      `Must list 1 to ${TASK_LIMITS.maxJoinClusters} actor URLs of followed clusters.`,
    );
  } else {
    raw.clusters.forEach((c, i) => {
      if (!isHttpUrl(c)) {
        problem(
          `join.clusters[${i}]`,
          "Must be the actor URL of a followed cluster, such as https://a.example/clusters/a.",
        );
      } else if (clusters.includes(new URL(c).href)) {
        problem(`join.clusters[${i}]`, "Listed twice; each cluster delivers one input.");
      } else {
        clusters.push(new URL(c).href);
      }
    });
  }
  const artifact = raw.artifact;
  if (
    artifact !== undefined &&
    (typeof artifact !== "string" || artifact === "" || artifact.length > 255)
  ) {
    problem(
      "join.artifact",
      "Must be a glob of 1–255 characters on the artifact name, such as public/*.csv.",
    );
  }
  let tags: Record<string, string> | undefined;
  if (raw.tags !== undefined) {
    if (!isRecord(raw.tags) || Object.keys(raw.tags).length > TASK_LIMITS.maxTags) {
      problem(
        "join.tags",
        `Must be an object of at most ${TASK_LIMITS.maxTags} tags and the values they must have.`,
      );
    } else {
      tags = {};
      for (const [name, value] of Object.entries(raw.tags)) {
        if (!TAG_NAME_PATTERN.test(name)) {
          problem(
            `join.tags.${name}`,
            "A tag name is 1–64 letters, digits, '-', '_', '.', ':' or '/'.",
          );
        } else if (typeof value !== "string" || value.length > TASK_LIMITS.maxTagValueLength) {
          problem(
            `join.tags.${name}`,
            `Must be a string of at most ${TASK_LIMITS.maxTagValueLength} characters.`,
          );
        } else tags[name] = value;
      }
    }
  }
  if (artifact === undefined && (tags === undefined || Object.keys(tags).length === 0)) {
    problem("join", "Give artifact (a name glob), tags, or both: which artifacts count.");
  }
  const atDeadline = raw.atDeadline ?? "fail";
  if (atDeadline !== "run" && atDeadline !== "fail") {
    problem(
      "join.atDeadline",
      'Must be "run" (run with what arrived, recording the missing clusters) or "fail".',
    );
  }
  const deadline = raw.deadline;
  if (typeof deadline !== "string") {
    problem("join.deadline", "Required: an ISO 8601 date-time or a duration such as PT30M.");
  } else {
    const at = joinDeadlineOf(deadline, now);
    if (at == null) {
      problem(
        "join.deadline",
        "Must be an ISO 8601 date-time such as 2026-01-31T12:00:00Z or a duration such as PT30M.",
      );
    } else if (at.getTime() <= now.getTime()) {
      problem("join.deadline", "Must be in the future.");
    } else if (taskDeadline != null && at.getTime() >= taskDeadline.getTime()) {
      problem(
        "join.deadline",
        `Must come before the task's deadline (${taskDeadline.toISOString()}); move the task's deadline later or the join's earlier.`,
      );
    }
  }
  const since = raw.since;
  if (since !== undefined) {
    const at =
      typeof since === "string" && since.length <= 64 ? joinSinceOf(since, now) : undefined;
    if (at == null) {
      problem(
        "join.since",
        "Must be an ISO 8601 date-time such as 2026-01-01T00:00:00Z or a duration counted back from the task's creation such as P7D.",
      );
    } else if (at.getTime() > now.getTime()) {
      // Not in the future, so before the join's deadline, which must be.
      problem("join.since", "Must not be in the future: artifacts arriving later count anyway.");
    }
  }
  if (before.count > 0) return undefined;
  return {
    clusters,
    ...(artifact !== undefined ? { artifact: artifact as string } : {}),
    ...(tags !== undefined && Object.keys(tags).length > 0 ? { tags } : {}),
    deadline: deadline as string,
    ...(since !== undefined ? { since: since as string } : {}),
    atDeadline: atDeadline as "run" | "fail",
  };
}

/**
 * Validates `input` against the task definition format and fills defaults.
 * @param newId Supplies a task id when the client gave none.
 */
export function validateTaskDefinition(
  input: unknown,
  newId: () => string,
  now: Date = new Date(),
): DefinitionResult {
  const problems: DefinitionProblem[] = [];
  const bad = (field: string, message: string) => problems.push({ field, message });
  if (!isRecord(input)) {
    return {
      ok: false,
      problems: [{ field: "", message: "The task definition must be a JSON object." }],
    };
  }
  for (const key of Object.keys(input)) {
    if (!KNOWN.has(key)) bad(key, `Unknown field; known fields are ${[...KNOWN].join(", ")}.`);
  }
  const taskId = input.taskId ?? newId();
  if (typeof taskId !== "string" || !isTaskId(taskId)) {
    bad("taskId", "Must be 1–64 characters of A–Z, a–z, 0–9, '-' or '_'.");
  }
  const taskGroupId = input.taskGroupId ?? taskId;
  if (typeof taskGroupId !== "string" || !isTaskId(taskGroupId)) {
    bad("taskGroupId", "Must be 1–64 characters of A–Z, a–z, 0–9, '-' or '_'.");
  }
  const name = input.name ?? taskId;
  if (typeof name !== "string" || name.length === 0 || name.length > 255) {
    bad("name", "Must be a string of 1–255 characters.");
  }

  const breakpoint = input.breakpoint ?? false;
  if (typeof breakpoint !== "boolean") bad("breakpoint", "Must be true or false.");
  let payload: TaskPayload | null | undefined;
  if (breakpoint === true) {
    if (input.payload !== undefined) {
      bad("payload", "A breakpoint task runs nothing; leave out payload or breakpoint.");
    } else {
      payload = null;
    }
  } else if (!isRecord(input.payload)) {
    bad("payload", 'Required: an object such as {"command": ["sh", "-c", "make test"]}.');
  } else {
    const {
      command,
      env = {},
      secrets = {},
      maxRunTime = TASK_LIMITS.defaultMaxRunTimeSeconds,
    } = input.payload;
    const extra = Object.keys(input.payload).filter(
      (k) => !["command", "env", "secrets", "maxRunTime"].includes(k),
    );
    for (const k of extra)
      bad(`payload.${k}`, "Unknown field; known: command, env, secrets, maxRunTime.");
    const commandOk =
      Array.isArray(command) &&
      command.length > 0 &&
      command.length <= TASK_LIMITS.maxCommandArgs &&
      command.every((a) => typeof a === "string" && !a.includes("\0"));
    if (!commandOk) {
      bad(
        "payload.command",
        `Must be a non-empty array of at most ${TASK_LIMITS.maxCommandArgs} strings (argv).`,
      );
    }
    const envOk =
      isRecord(env) &&
      Object.keys(env).length <= TASK_LIMITS.maxEnv &&
      Object.entries(env).every(
        ([k, v]) => isEnvName(k) && typeof v === "string" && !v.includes("\0"),
      );
    if (!envOk) {
      bad("payload.env", "Must map environment variable names to string values (100 at most).");
    }
    const checkedSecrets = checkSecrets(secrets, env, bad);
    if (
      typeof maxRunTime !== "number" ||
      !Number.isInteger(maxRunTime) ||
      maxRunTime < 1 ||
      maxRunTime > TASK_LIMITS.maxRunTimeSeconds
    ) {
      bad(
        "payload.maxRunTime",
        `Must be whole seconds from 1 to ${TASK_LIMITS.maxRunTimeSeconds}.`,
      );
    }
    if (commandOk && envOk && checkedSecrets != null && typeof maxRunTime === "number") {
      payload = {
        command: command as string[],
        env: env as Record<string, string>,
        // Left out when empty, so that definitions stored before secrets existed compare
        // equal to the same definition submitted again.
        ...(Object.keys(checkedSecrets).length > 0 ? { secrets: checkedSecrets } : {}),
        maxRunTime,
      };
    }
  }

  const dependencies: string[] = [];
  const rawDeps = input.dependencies ?? [];
  if (!Array.isArray(rawDeps)) {
    bad("dependencies", "Must be an array of local task ids or remote task URLs.");
  } else {
    rawDeps.forEach((d, i) => {
      if (typeof d !== "string" || !isDependencyRef(d)) {
        bad(`dependencies[${i}]`, "Must be a local task id or an http(s) URL of a remote task.");
      } else if (d === taskId) {
        bad(`dependencies[${i}]`, "A task cannot depend on itself.");
      } else if (!dependencies.includes(d)) {
        dependencies.push(d);
      }
    });
  }

  const inputs: TaskInputDefinition[] = [];
  const rawInputs = input.inputs ?? [];
  if (!Array.isArray(rawInputs) || rawInputs.length > TASK_LIMITS.maxInputs) {
    bad("inputs", `Must be an array of at most ${TASK_LIMITS.maxInputs} inputs.`);
  } else {
    rawInputs.forEach((raw, i) => {
      if (!isRecord(raw)) {
        bad(`inputs[${i}]`, 'Must be an object like {"task": "<url>", "artifact": "public/x"}.');
        return;
      }
      const { task, artifact } = raw;
      const path =
        raw.path ?? (typeof artifact === "string" ? artifact.split("/").pop() : undefined);
      if (typeof task !== "string" || !isDependencyRef(task) || task === taskId) {
        bad(`inputs[${i}].task`, "Must be a local task id or an http(s) URL of a remote task.");
        return;
      }
      if (typeof artifact !== "string" || !isSafeRelativePath(artifact)) {
        bad(`inputs[${i}].artifact`, "Must be an artifact name such as public/build.tar.gz.");
        return;
      }
      if (typeof path !== "string" || !isSafeRelativePath(path)) {
        bad(`inputs[${i}].path`, "Must be a relative path without '..' segments.");
        return;
      }
      if (inputs.some((x) => x.path === path)) {
        bad(`inputs[${i}].path`, `Two inputs would both be saved at ${path}; give one a path.`);
        return;
      }
      if (breakpoint === true) {
        bad(
          `inputs[${i}]`,
          "A breakpoint task runs nothing, so it takes no inputs; list the task in dependencies.",
        );
        return;
      }
      inputs.push({ task, artifact, path });
      // Consuming an artifact means waiting for the task that produces it.
      if (!dependencies.includes(task)) dependencies.push(task);
    });
  }
  if (dependencies.length > TASK_LIMITS.maxDependencies) {
    bad("dependencies", `At most ${TASK_LIMITS.maxDependencies} dependencies are allowed.`);
  }

  const requires = input.requires ?? "all-completed";
  if (requires !== "all-completed" && requires !== "all-resolved") {
    bad("requires", 'Must be "all-completed" or "all-resolved".');
  }
  let deadline = new Date(now.getTime() + TASK_LIMITS.defaultDeadlineMs);
  if (input.deadline !== undefined) {
    const parsed = typeof input.deadline === "string" ? new Date(input.deadline) : undefined;
    if (parsed == null || Number.isNaN(parsed.getTime())) {
      bad("deadline", "Must be an ISO 8601 date-time such as 2026-01-31T12:00:00Z.");
    } else if (parsed.getTime() <= now.getTime()) {
      bad("deadline", "Must be in the future.");
    } else if (parsed.getTime() - now.getTime() > TASK_LIMITS.maxDeadlineMs) {
      bad("deadline", "Must be at most 5 days from now.");
    } else {
      deadline = parsed;
    }
  }
  const retries = input.retries ?? TASK_LIMITS.defaultRetries;
  if (
    typeof retries !== "number" ||
    !Number.isInteger(retries) ||
    retries < 0 ||
    retries > TASK_LIMITS.maxRetries
  ) {
    bad("retries", `Must be an integer from 0 to ${TASK_LIMITS.maxRetries}.`);
  }
  const inactive = input.inactive ?? false;
  if (typeof inactive !== "boolean") bad("inactive", "Must be true or false.");
  const priority = input.priority ?? "lowest";
  if (typeof priority !== "string" || !(TASK_PRIORITIES as readonly string[]).includes(priority)) {
    bad("priority", `Must be one of ${TASK_PRIORITIES.join(", ")}.`);
  }
  const tags: Record<string, string> = {};
  if (input.tags !== undefined) {
    if (!isRecord(input.tags) || Object.keys(input.tags).length > TASK_LIMITS.maxTags) {
      bad("tags", `Must be an object of at most ${TASK_LIMITS.maxTags} string values.`);
    } else {
      for (const [key, value] of Object.entries(input.tags)) {
        if (!TAG_NAME_PATTERN.test(key)) {
          bad(`tags.${key}`, "A tag name is 1–64 letters, digits, '-', '_', '.', ':' or '/'.");
        } else if (typeof value !== "string" || value.length > TASK_LIMITS.maxTagValueLength) {
          bad(
            `tags.${key}`,
            `Must be a string of at most ${TASK_LIMITS.maxTagValueLength} characters.`,
          );
        } else {
          tags[key] = value;
        }
      }
    }
  }
  let join: TaskJoinDefinition | undefined;
  if (input.join !== undefined) {
    const deadlineOk = !problems.some((p) => p.field === "deadline");
    join = checkJoin(input.join, deadlineOk ? deadline : undefined, now, bad);
    if (breakpoint === true) {
      bad("join", "A breakpoint task runs nothing, so it joins no inputs; leave out join.");
    }
    inputs.forEach((x, i) => {
      if (x.path === "join" || x.path.startsWith("join/")) {
        bad(`inputs[${i}].path`, "join/ holds the joined inputs; save this input elsewhere.");
      }
    });
  }
  if (problems.length > 0 || payload === undefined) return { ok: false, problems };
  return {
    ok: true,
    value: {
      taskId: taskId as string,
      taskGroupId: taskGroupId as string,
      name: name as string,
      payload,
      dependencies,
      requires: requires as TaskDefinition["requires"],
      inputs,
      deadline: deadline.toISOString(),
      retries: retries as number,
      inactive: inactive as boolean,
      priority: priority as TaskPriority,
      breakpoint: breakpoint as boolean,
      tags,
      ...(join != null ? { join } : {}),
    },
  };
}

/**
 * A definition as stored, with the defaults of fields added since it was written, so that
 * definitions compare equal whichever version of taskweb wrote them.
 */
export function storedDefinition(stored: unknown): TaskDefinition {
  return {
    inactive: false,
    priority: "lowest",
    breakpoint: false,
    tags: {},
    ...(stored as Partial<TaskDefinition>),
  } as TaskDefinition;
}

/** The `tasks` row of a newly created, unscheduled task. */
export function newTaskRow(def: TaskDefinition, now: Date) {
  return {
    task_id: def.taskId,
    task_group_id: def.taskGroupId,
    name: def.name,
    state: "unscheduled" as const,
    requires: def.requires,
    definition: JSON.stringify(def),
    retries: def.retries,
    retries_left: def.retries,
    deadline: def.deadline,
    resolved_at: null,
    updated_at: now,
    inactive: def.inactive,
    priority: def.priority,
    breakpoint: def.breakpoint,
  };
}
