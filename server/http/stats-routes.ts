/**
 * `GET /api/v1/stats`: queue data mining over the task and run history (see
 * server/domain/queue-stats.ts), mounted under `/api/v1` behind its authentication.
 *
 * Query parameters, all optional:
 * - `since`, `until`: the period, as RFC 3339 date-times or as a duration back from now
 *   (`30m`, `12h`, `7d`, `4w`); default the last 7 days.
 * - `tag`: repeatable; `name` breaks tasks down by that tag's values (one at most),
 *   `name=value` keeps only tasks with that tag value.
 * - `state`, `worker`, `origin` (a remote cluster's origin the tasks depend on), `taskGroupId`.
 * @module
 */
import express, {
  type NextFunction,
  type Request as ERequest,
  type Response as EResponse,
} from "express";
import type { Kysely } from "kysely";
import { ApiError } from "../domain/errors.ts";
import { queryQueueStats, type QueueStatsQuery } from "../domain/queue-stats.ts";
import { TAG_NAME_PATTERN } from "../domain/task-definition.ts";
import type { TaskState } from "../domain/task-service.ts";
import type { DatabaseSchema } from "../store/schema.ts";
import { requireScopes } from "./scopes.ts";

/** Options for {@link statsRoutes}. */
export interface StatsRoutesOptions {
  readonly db: Kysely<DatabaseSchema>;
}

/** The period when the query gives none. */
export const DEFAULT_STATS_PERIOD_MS = 7 * 24 * 3600_000;

const TASK_STATES: readonly string[] = [
  "unscheduled",
  "pending",
  "running",
  "completed",
  "failed",
  "exception",
];

const UNIT_MS: Readonly<Record<string, number>> = {
  s: 1000,
  m: 60_000,
  h: 3600_000,
  d: 24 * 3600_000,
  w: 7 * 24 * 3600_000,
};

type Handler = (req: ERequest, res: EResponse) => Promise<void>;

function route(handler: Handler) {
  return (req: ERequest, res: EResponse, next: NextFunction): void => {
    handler(req, res).catch(next);
  };
}

interface Problem {
  readonly field: string;
  readonly message: string;
}

/**
 * A point in time: an RFC 3339 date-time, or a duration such as `7d` counted back from `now`.
 * @returns undefined when `value` is neither.
 */
export function parseTimeBound(value: string, now: Date): Date | undefined {
  const relative = /^(\d{1,6})([smhdw])$/.exec(value);
  if (relative != null) {
    return new Date(now.getTime() - Number(relative[1]) * UNIT_MS[relative[2]!]!);
  }
  if (!/^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:\d{2}))?$/.test(value)) return undefined;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date;
}

/** Reads and checks the query string; every problem is reported at once. */
export function parseStatsQuery(
  query: Record<string, unknown>,
  now: Date = new Date(),
): QueueStatsQuery {
  const problems: Problem[] = [];
  const one = (name: string): string | undefined => {
    const value = query[name];
    if (value === undefined) return undefined;
    if (typeof value !== "string") {
      problems.push({ field: name, message: "Give it once." });
      return undefined;
    }
    return value;
  };
  const known = new Set(["since", "until", "tag", "state", "worker", "origin", "taskGroupId"]);
  for (const key of Object.keys(query)) {
    if (!known.has(key)) {
      problems.push({ field: key, message: `Unknown parameter; known: ${[...known].join(", ")}.` });
    }
  }
  const bound = (name: string): Date | undefined => {
    const raw = one(name);
    if (raw == null) return undefined;
    const date = parseTimeBound(raw, now);
    if (date == null) {
      problems.push({
        field: name,
        message:
          "Must be a date-time such as 2026-01-31T00:00:00Z or a duration back from now such as 7d, 12h, 30m.",
      });
    }
    return date;
  };
  const until = bound("until") ?? now;
  const since = bound("since") ?? new Date(until.getTime() - DEFAULT_STATS_PERIOD_MS);
  if (since.getTime() >= until.getTime()) {
    problems.push({ field: "since", message: "Must be before until." });
  }

  const state = one("state");
  if (state != null && !TASK_STATES.includes(state)) {
    problems.push({ field: "state", message: `Must be one of ${TASK_STATES.join(", ")}.` });
  }
  const origin = one("origin");
  let originValue: string | undefined;
  if (origin != null) {
    try {
      const url = new URL(origin);
      if (url.protocol !== "https:" && url.protocol !== "http:") throw new Error("scheme");
      originValue = url.origin;
    } catch {
      problems.push({
        field: "origin",
        message: "Must be a cluster's origin such as https://ci.example.",
      });
    }
  }

  const rawTags = query.tag === undefined ? [] : [query.tag].flat();
  const tags: Record<string, string> = {};
  let byTag: string | undefined;
  for (const raw of rawTags) {
    if (typeof raw !== "string") {
      problems.push({ field: "tag", message: "Must be name or name=value." });
      continue;
    }
    const eq = raw.indexOf("=");
    const name = eq < 0 ? raw : raw.slice(0, eq);
    if (!TAG_NAME_PATTERN.test(name)) {
      problems.push({ field: "tag", message: `${JSON.stringify(name)} is not a tag name.` });
    } else if (eq >= 0) {
      tags[name] = raw.slice(eq + 1);
    } else if (byTag != null && byTag !== name) {
      problems.push({ field: "tag", message: "Break down by one tag at a time." });
    } else {
      byTag = name;
    }
  }
  if (problems.length > 0) {
    throw new ApiError("InputError", "The statistics query is invalid; see details.", { problems });
  }
  return {
    since,
    until,
    state: state as TaskState | undefined,
    worker: one("worker"),
    origin: originValue,
    taskGroupId: one("taskGroupId"),
    tags,
    byTag,
  };
}

/** The statistics route. */
export function statsRoutes(options: StatsRoutesOptions): express.Router {
  const router = express.Router();
  router.get(
    "/stats",
    requireScopes("taskweb:stats:read"),
    route(async (req, res) => {
      const query = parseStatsQuery(req.query as Record<string, unknown>);
      res.json(await queryQueueStats(options.db, query));
    }),
  );
  return router;
}
