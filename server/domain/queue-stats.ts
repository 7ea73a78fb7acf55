/**
 * Queue data mining: what the task and run history says about a period. Answers questions
 * such as "what share of last month's tasks were for project X", "how often do runs fail on
 * this worker" and "how long do tasks wait before a worker takes them", from the database
 * (the source of truth), on PostgreSQL and PGlite alike.
 *
 * Tasks are counted by when they were created, runs by when they were scheduled; both within
 * `[since, until)`. Filters narrow both: a run counts when its task passes the task filters.
 * @module
 */
import { sql, type Kysely, type RawBuilder } from "kysely";
import type { DatabaseSchema } from "../store/schema.ts";
import type { TaskState } from "./task-service.ts";

/** What to count. */
export interface QueueStatsQuery {
  /** Start of the period, inclusive. */
  readonly since: Date;
  /** End of the period, exclusive. */
  readonly until: Date;
  /** Only tasks in this state now. */
  readonly state?: TaskState | undefined;
  /** Only runs taken by this worker, and tasks that had one. */
  readonly worker?: string | undefined;
  /**
   * Only tasks that depend on a task of this remote cluster origin (`https://ci.example`):
   * work this cluster did for, or after, another cluster.
   */
  readonly origin?: string | undefined;
  /** Only tasks of this task group. */
  readonly taskGroupId?: string | undefined;
  /** Only tasks carrying every one of these tags with these values. */
  readonly tags?: Readonly<Record<string, string>>;
  /** Break tasks down by the values of this tag (tasks without it count under `null`). */
  readonly byTag?: string | undefined;
}

/** Quantiles of a duration, in seconds; null when nothing was measured. */
export interface DurationStats {
  /** How many runs were measured. */
  readonly count: number;
  readonly p50: number | null;
  readonly p95: number | null;
  readonly max: number | null;
}

/** Counts by state, with the share of resolutions that were failures. */
export interface StateCounts {
  readonly total: number;
  readonly byState: Readonly<Record<string, number>>;
  /** Completed, failed or exception. */
  readonly resolved: number;
  /** (failed + exception) / resolved; null when nothing resolved. */
  readonly failureRate: number | null;
}

/** One value of the tag tasks were broken down by. */
export interface TagValueStats extends StateCounts {
  /** The tag's value; null for tasks without the tag. */
  readonly value: string | null;
  /** This value's tasks over all tasks of the period (0–1). */
  readonly share: number;
}

/** One worker's runs. */
export interface WorkerStats extends StateCounts {
  readonly workerId: string;
  /** From scheduled to taken by this worker. */
  readonly pendingSeconds: DurationStats;
  /** From taken to resolved. */
  readonly runningSeconds: DurationStats;
}

/** The answer to a {@link QueueStatsQuery}. */
export interface QueueStats {
  readonly since: string;
  readonly until: string;
  readonly tasks: StateCounts;
  /** Present when the query asked for `byTag`; values with the most tasks first. */
  readonly byTag?: { readonly tag: string; readonly values: readonly TagValueStats[] };
  readonly runs: StateCounts & {
    /** From scheduled (pending) to taken by a worker; breakpoint runs are left out. */
    readonly pendingSeconds: DurationStats;
    /** From taken by a worker to resolved. */
    readonly runningSeconds: DurationStats;
  };
  /** Workers with the most runs first. */
  readonly workers: readonly WorkerStats[];
  /** True when `byTag` values or workers were cut at {@link QUEUE_STATS_MAX_GROUPS}. */
  readonly truncated: boolean;
}

/** At most this many tag values and workers are listed. */
export const QUEUE_STATS_MAX_GROUPS = 100;

const RESOLVED = ["completed", "failed", "exception"];

function stateCounts(rows: readonly { state: string; n: number | string }[]): StateCounts {
  const byState: Record<string, number> = {};
  let total = 0;
  for (const r of rows) {
    const n = Number(r.n);
    byState[r.state] = (byState[r.state] ?? 0) + n;
    total += n;
  }
  const resolved = RESOLVED.reduce((sum, s) => sum + (byState[s] ?? 0), 0);
  const failures = (byState.failed ?? 0) + (byState.exception ?? 0);
  return { total, byState, resolved, failureRate: resolved === 0 ? null : failures / resolved };
}

function seconds(value: unknown): number | null {
  return value == null ? null : Math.round(Number(value) * 1000) / 1000;
}

function durations(row: { n: unknown; p50: unknown; p95: unknown; max: unknown } | undefined) {
  return {
    count: Number(row?.n ?? 0),
    p50: seconds(row?.p50),
    p95: seconds(row?.p95),
    max: seconds(row?.max),
  };
}

/** `percentile_cont` over an interval expression, in seconds. */
function quantiles(interval: RawBuilder<unknown>) {
  const epoch = sql`extract(epoch from ${interval})`;
  return sql`count(*)::int as n,
    percentile_cont(0.5) within group (order by ${epoch}) as p50,
    percentile_cont(0.95) within group (order by ${epoch}) as p95,
    max(${epoch}) as max`;
}

/** Escapes `%`, `_` and `\` for a LIKE pattern. */
function likePrefix(prefix: string): string {
  return `${prefix.replace(/[\\%_]/g, "\\$&")}/%`;
}

/** Reads the statistics of a period. */
export async function queryQueueStats(
  db: Kysely<DatabaseSchema>,
  query: QueueStatsQuery,
): Promise<QueueStats> {
  // Conditions on the task `t`, shared by the task and the run queries.
  const taskFilters: RawBuilder<unknown>[] = [];
  if (query.state != null) taskFilters.push(sql`t.state = ${query.state}`);
  if (query.taskGroupId != null) taskFilters.push(sql`t.task_group_id = ${query.taskGroupId}`);
  const tags = query.tags ?? {};
  if (Object.keys(tags).length > 0) {
    // Containment, so that the tasks_tags index (migration 0008) serves it.
    taskFilters.push(sql`t.definition -> 'tags' @> ${JSON.stringify(tags)}::jsonb`);
  }
  if (query.origin != null) {
    taskFilters.push(sql`exists (
      select 1 from task_dependencies d
      where d.task_id = t.task_id and d.remote and d.dependency like ${likePrefix(query.origin)}
    )`);
  }
  const inPeriod = (column: RawBuilder<unknown>) =>
    sql`${column} >= ${query.since} and ${column} < ${query.until}`;

  const taskWhere = [inPeriod(sql.ref("t.created_at")), ...taskFilters];
  if (query.worker != null) {
    taskWhere.push(
      sql`exists (select 1 from runs w where w.task_id = t.task_id and w.worker_id = ${query.worker})`,
    );
  }
  const runWhere = [inPeriod(sql.ref("r.scheduled_at")), ...taskFilters];
  if (query.worker != null) runWhere.push(sql`r.worker_id = ${query.worker}`);
  const tw = sql.join(taskWhere, sql` and `);
  const rw = sql.join(runWhere, sql` and `);
  const runsFrom = sql`runs r join tasks t on t.task_id = r.task_id`;
  const pending = sql`r.started_at - r.scheduled_at`;
  const running = sql`r.resolved_at - r.started_at`;
  type Durations = { n: unknown; p50: unknown; p95: unknown; max: unknown };

  const taskStates = await sql<{ state: string; n: number }>`
    select t.state, count(*)::int as n from tasks t where ${tw} group by t.state
  `.execute(db);
  const tasks = stateCounts(taskStates.rows);

  let byTag: QueueStats["byTag"];
  let truncated = false;
  if (query.byTag != null) {
    const rows = await sql<{ value: string | null; state: string; n: number }>`
      select t.definition -> 'tags' ->> ${query.byTag} as value, t.state, count(*)::int as n
      from tasks t where ${tw} group by 1, 2
    `.execute(db);
    const groups = new Map<string | null, { state: string; n: number }[]>();
    for (const r of rows.rows) {
      const list = groups.get(r.value) ?? [];
      list.push(r);
      groups.set(r.value, list);
    }
    const values = [...groups].map(([value, list]) => {
      const counts = stateCounts(list);
      return { value, share: tasks.total === 0 ? 0 : counts.total / tasks.total, ...counts };
    });
    values.sort((a, b) => b.total - a.total || String(a.value).localeCompare(String(b.value)));
    truncated ||= values.length > QUEUE_STATS_MAX_GROUPS;
    byTag = { tag: query.byTag, values: values.slice(0, QUEUE_STATS_MAX_GROUPS) };
  }

  const runStates = await sql<{ state: string; n: number }>`
    select r.state, count(*)::int as n from ${runsFrom} where ${rw} group by r.state
  `.execute(db);
  const pendingAll = await sql<Durations>`
    select ${quantiles(pending)} from ${runsFrom}
    where ${rw} and r.started_at is not null and r.worker_id is not null
  `.execute(db);
  const runningAll = await sql<Durations>`
    select ${quantiles(running)} from ${runsFrom}
    where ${rw} and r.started_at is not null and r.resolved_at is not null
      and r.worker_id is not null
  `.execute(db);

  const workerStates = await sql<{ worker_id: string; state: string; n: number }>`
    select r.worker_id, r.state, count(*)::int as n from ${runsFrom}
    where ${rw} and r.worker_id is not null group by 1, 2
  `.execute(db);
  const workerPending = await sql<Durations & { worker_id: string }>`
    select r.worker_id, ${quantiles(pending)} from ${runsFrom}
    where ${rw} and r.started_at is not null and r.worker_id is not null group by 1
  `.execute(db);
  const workerRunning = await sql<Durations & { worker_id: string }>`
    select r.worker_id, ${quantiles(running)} from ${runsFrom}
    where ${rw} and r.started_at is not null and r.resolved_at is not null
      and r.worker_id is not null
    group by 1
  `.execute(db);
  const byWorker = new Map<string, { state: string; n: number }[]>();
  for (const r of workerStates.rows) {
    const list = byWorker.get(r.worker_id) ?? [];
    list.push(r);
    byWorker.set(r.worker_id, list);
  }
  const workers = [...byWorker].map(([workerId, list]) => ({
    workerId,
    ...stateCounts(list),
    pendingSeconds: durations(workerPending.rows.find((r) => r.worker_id === workerId)),
    runningSeconds: durations(workerRunning.rows.find((r) => r.worker_id === workerId)),
  }));
  workers.sort((a, b) => b.total - a.total || a.workerId.localeCompare(b.workerId));
  truncated ||= workers.length > QUEUE_STATS_MAX_GROUPS;

  return {
    since: query.since.toISOString(),
    until: query.until.toISOString(),
    tasks,
    ...(byTag != null ? { byTag } : {}),
    runs: {
      ...stateCounts(runStates.rows),
      pendingSeconds: durations(pendingAll.rows[0]),
      runningSeconds: durations(runningAll.rows[0]),
    },
    workers: workers.slice(0, QUEUE_STATS_MAX_GROUPS),
    truncated,
  };
}
