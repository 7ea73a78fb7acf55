/**
 * What the web app reads beyond the task and task group routes, mounted under `/api/v1`
 * behind its authentication: the list of task groups, a task group as a graph (its tasks,
 * the edges between them and its remote dependencies with their last known state), the
 * activities sent and received for a task, and streams of task state changes as
 * server-sent events (`GET /events` for the whole cluster, `GET /task-groups/:id/events`
 * for one group; asked for with `Accept: text/event-stream`, otherwise the current states
 * once as JSON). The streams are read with `fetch` and the Authorization header, like every
 * other route: no token ever travels in a URL.
 *
 * The stream reads the database, not the process's own events: in a deployment split into
 * `web` and `worker` processes, the process serving the browser is not the one running the
 * tasks, and the database is the one place every state change reaches.
 * @module
 */
import express, {
  type NextFunction,
  type Request as ERequest,
  type Response as EResponse,
} from "express";
import { sql, type Kysely } from "kysely";
import { ApiError } from "../domain/errors.ts";
import type { ClusterUrls } from "../federation/cluster-urls.ts";
import type { DatabaseSchema } from "../store/schema.ts";
import { requireScopes } from "./scopes.ts";

/** Options for {@link webappRoutes}. */
export interface WebappRoutesOptions {
  readonly db: Kysely<DatabaseSchema>;
  readonly urls: ClusterUrls;
  /** How often the event stream reads the database, in ms. @defaultValue 300 */
  readonly pollMs?: number;
  /** How often the event stream sends a comment to keep proxies from closing it. @defaultValue 15000 */
  readonly heartbeatMs?: number;
  /**
   * How many event streams this process serves at once; one more is refused with 503 (each
   * reads the database every `pollMs`). @defaultValue 200
   */
  readonly maxStreams?: number;
}

/** The most tasks one graph or one stream poll returns. */
export const WEBAPP_LIMITS = {
  graphTasks: 5_000,
  taskGroups: 200,
  activities: 200,
} as const;

type Handler = (req: ERequest, res: EResponse) => Promise<void>;

/** Wraps an async route so that every rejection reaches the error handler. */
function route(handler: Handler) {
  return (req: ERequest, res: EResponse, next: NextFunction): void => {
    handler(req, res).catch(next);
  };
}

function iso(value: Date | string | null | undefined): string | null {
  return value == null ? null : new Date(value).toISOString();
}

/** One task as the stream and the graph describe it. */
interface TaskStateView {
  readonly taskId: string;
  readonly taskGroupId: string;
  readonly name: string;
  readonly state: string;
  readonly inactive: boolean;
  readonly breakpoint: boolean;
  readonly updatedAt: string;
}

/** A task as one poll of the event stream read it, with the stages of its latest run. */
interface PolledTask {
  readonly view: TaskStateView;
  readonly run: { readonly runId: number; readonly stages: readonly string[] } | undefined;
}

/** What the stream last told about a task. */
interface SeenTask {
  readonly runId: number | undefined;
  /** How many stages of that run were told. */
  readonly stage: number;
  /** The task's state and activation as last told. */
  readonly key: string;
}

/**
 * The states a run has passed through, in order: every run is pending first, running once
 * started, then its resolution.
 */
export function runStages(runState: string, started: boolean): string[] {
  const stages = ["pending"];
  if (started || runState === "running") stages.push("running");
  if (runState !== "pending" && runState !== "running") stages.push(runState);
  return stages;
}

/**
 * The task states to send for `now`, given what was told before. A run that went from
 * pending to completed between two polls is told as pending, running, completed: the
 * runs table keeps when each happened, so no state change is lost to the poll interval.
 * The first sight of a task tells only its current state.
 */
export function transitions(before: SeenTask | undefined, now: PolledTask): string[] {
  const key = `${now.view.state}|${now.view.inactive}`;
  if (before == null) return [now.view.state];
  const told: string[] = [];
  const run = now.run;
  if (run != null) {
    const from = before.runId === run.runId ? before.stage : 0;
    // The run's stages mirror the task's state only while the task follows this run.
    if (run.stages.includes(now.view.state)) told.push(...run.stages.slice(from));
  }
  if (told.at(-1) !== now.view.state && (told.length > 0 || key !== before.key)) {
    told.push(now.view.state);
  }
  return told;
}

/** Whether an outbox activity's object is the task `taskUrl` or one of its artifacts. */
function isAboutTask(activity: unknown, taskUrl: string): boolean {
  if (typeof activity !== "object" || activity === null) return false;
  const objects = [(activity as { object?: unknown }).object].flat();
  return objects.some((o) => {
    if (o === taskUrl) return true;
    if (typeof o !== "object" || o === null) return false;
    const { id, task } = o as { id?: unknown; task?: unknown };
    return id === taskUrl || task === taskUrl;
  });
}

/** The web app's routes. */
export function webappRoutes(options: WebappRoutesOptions): express.Router {
  const { db, urls } = options;
  const pollMs = options.pollMs ?? 300;
  const heartbeatMs = options.heartbeatMs ?? 15_000;
  const maxStreams = options.maxStreams ?? 200;
  let streams = 0;
  const router = express.Router();

  router.get(
    "/task-groups",
    requireScopes("taskweb:task-group:list"),
    route(async (req, res) => {
      const asked = Number(req.query.limit ?? 50);
      const limit =
        Number.isInteger(asked) && asked > 0 ? Math.min(asked, WEBAPP_LIMITS.taskGroups) : 50;
      const groups = await db
        .selectFrom("task_groups")
        .select(["task_group_id", "created_at", "resolved_at", "resolutions"])
        .orderBy("created_at", "desc")
        .orderBy("task_group_id")
        .limit(limit)
        .execute();
      const ids = groups.map((g) => g.task_group_id);
      const counts =
        ids.length === 0
          ? []
          : await db
              .selectFrom("tasks")
              .select(["task_group_id", "state", (eb) => eb.fn.countAll().as("n")])
              .where("task_group_id", "in", ids)
              .groupBy(["task_group_id", "state"])
              .execute();
      res.json({
        taskGroups: groups.map((g) => {
          const mine = counts.filter((c) => c.task_group_id === g.task_group_id);
          const byState = Object.fromEntries(mine.map((c) => [c.state, Number(c.n)]));
          return {
            taskGroupId: g.task_group_id,
            createdAt: iso(g.created_at),
            resolvedAt: iso(g.resolved_at),
            resolutions: g.resolutions,
            total: mine.reduce((n, c) => n + Number(c.n), 0),
            counts: byState,
          };
        }),
      });
    }),
  );

  router.get(
    "/task-groups/:taskGroupId/graph",
    requireScopes("taskweb:task-group:read:<taskGroupId>"),
    route(async (req, res) => {
      const taskGroupId = String(req.params.taskGroupId);
      const tasks = await db
        .selectFrom("tasks")
        .select(["task_id", "name", "state", "inactive", "breakpoint", "priority", "updated_at"])
        .where("task_group_id", "=", taskGroupId)
        .orderBy("task_id")
        .limit(WEBAPP_LIMITS.graphTasks + 1)
        .execute();
      if (tasks.length === 0) {
        throw new ApiError(
          "ResourceNotFound",
          `No task group ${JSON.stringify(taskGroupId)} on this cluster.`,
        );
      }
      if (tasks.length > WEBAPP_LIMITS.graphTasks) {
        throw new ApiError(
          "InputError",
          `Task group ${taskGroupId} has more than ${WEBAPP_LIMITS.graphTasks} tasks, too many to draw; list them with GET /api/v1/task-groups/${taskGroupId}.`,
        );
      }
      const deps = await db
        .selectFrom("task_dependencies as d")
        .innerJoin("tasks as t", "t.task_id", "d.task_id")
        .leftJoin("remote_tasks as r", "r.task_url", "d.dependency")
        .select([
          "d.task_id",
          "d.dependency",
          "d.remote",
          "d.resolution",
          "r.state as remote_state",
          "r.actor_id as remote_actor",
          "r.updated_at as remote_updated_at",
        ])
        .where("t.task_group_id", "=", taskGroupId)
        .execute();
      const inGroup = new Set(tasks.map((t) => t.task_id));
      const remote = new Map<string, Record<string, unknown>>();
      const edges: { from: string; to: string }[] = [];
      for (const d of deps) {
        if (d.remote) {
          // A remote dependency's node is its URL; its last known state is what an
          // activity or a dereference reported, else the resolution recorded on the edge.
          const url = new URL(d.dependency);
          remote.set(d.dependency, {
            url: d.dependency,
            cluster: d.remote_actor ?? `${url.origin}`,
            origin: url.origin,
            label: decodeURIComponent(url.pathname.split("/").at(-1) ?? d.dependency),
            state: d.remote_state ?? d.resolution ?? null,
            updatedAt: iso(d.remote_updated_at),
          });
          edges.push({ from: d.dependency, to: d.task_id });
        } else {
          // A local dependency outside the group is drawn as a plain link to that task.
          edges.push({ from: d.dependency, to: d.task_id });
        }
      }
      const outside = [
        ...new Set(
          deps.filter((d) => !d.remote && !inGroup.has(d.dependency)).map((d) => d.dependency),
        ),
      ];
      const outsideRows =
        outside.length === 0
          ? []
          : await db
              .selectFrom("tasks")
              .select(["task_id", "name", "state", "task_group_id"])
              .where("task_id", "in", outside)
              .execute();
      res.json({
        taskGroupId,
        tasks: tasks.map((t) => ({
          taskId: t.task_id,
          name: t.name,
          state: t.state,
          inactive: t.inactive,
          breakpoint: t.breakpoint,
          priority: t.priority,
          updatedAt: iso(t.updated_at),
          url: urls.task(t.task_id),
        })),
        otherGroups: outsideRows.map((t) => ({
          taskId: t.task_id,
          name: t.name,
          state: t.state,
          taskGroupId: t.task_group_id,
        })),
        remote: [...remote.values()],
        edges,
      });
    }),
  );

  router.get(
    "/tasks/:taskId/activities",
    requireScopes("taskweb:task:read:<taskId>"),
    route(async (req, res) => {
      const taskId = String(req.params.taskId);
      const task = await db
        .selectFrom("tasks")
        .select(["task_id", "task_group_id"])
        .where("task_id", "=", taskId)
        .executeTakeFirst();
      if (task == null) throw new ApiError("ResourceNotFound", "No such task on this cluster.");
      const taskUrl = urls.task(taskId);
      // Candidates: the task's id appears in the activity (cheap in SQL); kept: the task is
      // its object, or the task its artifact belongs to (not a dependent that names it).
      const needle = JSON.stringify(taskUrl);
      const sent = await db
        .selectFrom("outbox")
        .select(["activity_id", "types", "activity", "published_at", "fanned_out_at"])
        .where(sql<number>`strpos(cast(activity as text), ${needle})`, ">", 0)
        .orderBy("seq")
        .limit(WEBAPP_LIMITS.activities)
        .execute();
      const remoteDeps = await db
        .selectFrom("task_dependencies")
        .select("dependency")
        .where("task_id", "=", taskId)
        .where("remote", "=", true)
        .execute();
      const depUrls = remoteDeps.map((d) => d.dependency);
      // The received activities about this task: those that reported on a remote task it
      // depends on (an input's task is a dependency too), as the inbox recorded them when it
      // applied them, and the one that fired the hook which created its task group.
      const fires = await db
        .selectFrom("hook_fires")
        .select("activity_id")
        .where("task_group_id", "=", task.task_group_id)
        .execute();
      const firedBy = new Set(fires.map((f) => f.activity_id));
      const received =
        depUrls.length === 0 && firedBy.size === 0
          ? []
          : await db
              .selectFrom("inbox_processed as p")
              .leftJoin("relayed_activities as r", "r.activity_id", "p.activity_id")
              .select([
                "p.activity_id",
                "p.actor_id",
                "p.types",
                "p.received_at",
                "p.object_id",
                "r.relayed_by",
              ])
              .where((eb) =>
                eb.or([
                  ...(depUrls.length === 0 ? [] : [eb("p.object_id", "in", depUrls)]),
                  ...(firedBy.size === 0 ? [] : [eb("p.activity_id", "in", [...firedBy])]),
                ]),
              )
              .orderBy("p.received_at")
              .orderBy("p.activity_id")
              .limit(WEBAPP_LIMITS.activities)
              .execute();
      const receivedTasks =
        depUrls.length === 0
          ? []
          : await db
              .selectFrom("remote_tasks")
              .selectAll()
              .where("task_url", "in", depUrls)
              .orderBy("updated_at")
              .execute();
      const receivedArtifacts =
        depUrls.length === 0
          ? []
          : await db
              .selectFrom("remote_artifacts")
              .select([
                "artifact_url",
                "task_url",
                "actor_id",
                "name",
                "sha256",
                "size",
                "updated_at",
              ])
              .where("task_url", "in", depUrls)
              .orderBy("updated_at")
              .execute();
      res.json({
        taskId,
        sent: sent
          .filter((a) => isAboutTask(a.activity, taskUrl))
          .map((a) => ({
            activityId: a.activity_id,
            types: a.types,
            publishedAt: iso(a.published_at),
            fannedOutAt: iso(a.fanned_out_at),
          })),
        received: received.map((r) => ({
          activityId: r.activity_id,
          types: r.types,
          actor: r.actor_id,
          receivedAt: iso(r.received_at),
          object: r.object_id,
          // Why it is listed: it fired the hook that created the task's group, or it
          // reported on a remote task the task depends on.
          about: firedBy.has(r.activity_id) ? ("hook" as const) : ("dependency" as const),
          relayedBy: r.relayed_by ?? null,
        })),
        remote: [
          ...receivedTasks.map((r) => ({
            kind: "task-state" as const,
            taskUrl: r.task_url,
            actor: r.actor_id,
            state: r.state,
            source: r.source,
            updatedAt: iso(r.updated_at),
          })),
          ...receivedArtifacts.map((a) => ({
            kind: "artifact" as const,
            taskUrl: a.task_url,
            actor: a.actor_id,
            artifactUrl: a.artifact_url,
            name: a.name,
            sha256: a.sha256,
            size: Number(a.size),
            updatedAt: iso(a.updated_at),
          })),
        ],
      });
    }),
  );

  const events = (scope: "all" | "group") =>
    route(async (req, res) => {
      const taskGroupId = scope === "group" ? String(req.params.taskGroupId) : undefined;
      const read = async (since: Date | undefined): Promise<PolledTask[]> => {
        let query = db
          .selectFrom("tasks as t")
          .leftJoin("runs as r", (join) =>
            join.onRef("r.task_id", "=", "t.task_id").on("r.run_id", "=", (eb) =>
              eb
                .selectFrom("runs as l")
                .select((l) => l.fn.max("l.run_id").as("m"))
                .whereRef("l.task_id", "=", "t.task_id"),
            ),
          )
          .select([
            "t.task_id",
            "t.task_group_id",
            "t.name",
            "t.state",
            "t.inactive",
            "t.breakpoint",
            "t.updated_at",
            "r.run_id",
            "r.state as run_state",
            "r.started_at",
          ]);
        if (taskGroupId != null) query = query.where("t.task_group_id", "=", taskGroupId);
        // Without a group: only what moved lately (a window rather than "after the last
        // seen", since the writing processes' clocks and commit order may disagree).
        if (since != null) query = query.where("t.updated_at", ">=", since);
        // The latest changes when there are more than the limit, told oldest first.
        const rows = (
          await query.orderBy("t.updated_at", "desc").limit(WEBAPP_LIMITS.graphTasks).execute()
        ).reverse();
        return rows.map((r) => ({
          view: {
            taskId: r.task_id,
            taskGroupId: r.task_group_id,
            name: r.name,
            state: r.state,
            inactive: r.inactive,
            breakpoint: r.breakpoint,
            updatedAt: iso(r.updated_at) ?? "",
          },
          run:
            r.run_id == null || r.run_state == null
              ? undefined
              : { runId: r.run_id, stages: runStages(r.run_state, r.started_at != null) },
        }));
      };

      // Content negotiation: a client asking for `text/event-stream` gets the stream; any
      // other gets the current states once, as JSON (what the stream would send first).
      if (!(req.headers.accept ?? "").includes("text/event-stream")) {
        const rows = await read(taskGroupId != null ? undefined : new Date(Date.now() - 60_000));
        res.setHeader("Cache-Control", "no-store");
        res.json({ tasks: rows.map((r) => r.view) });
        return;
      }
      if (streams >= maxStreams) {
        res.setHeader("Retry-After", "5");
        throw new ApiError(
          "ServiceUnavailable",
          `This process already serves ${maxStreams} event streams; try again shortly or ask for the current states as JSON.`,
        );
      }
      streams += 1;
      res.on("close", () => {
        streams -= 1;
      });
      res.status(200);
      res.setHeader("Content-Type", "text/event-stream; charset=utf-8");
      res.setHeader("Cache-Control", "no-store");
      res.setHeader("X-Accel-Buffering", "no");
      res.flushHeaders();
      let gone = false;
      // The response closes when the client goes away (or the server stops).
      res.on("close", () => {
        gone = true;
      });
      const send = (event: string, data: unknown) => {
        res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      };
      const seen = new Map<string, SeenTask>();
      let greeted = false;
      let lastBeat = Date.now();
      let windowStart = new Date(Date.now() - 60_000);
      while (!gone) {
        const started = new Date();
        let rows: PolledTask[] = [];
        try {
          rows = await read(taskGroupId != null ? undefined : windowStart);
        } catch {
          send("problem", { message: "The cluster could not read its tasks; retrying." });
        }
        for (const row of rows) {
          for (const state of transitions(seen.get(row.view.taskId), row)) {
            send("task", { ...row.view, state });
          }
          seen.set(row.view.taskId, {
            runId: row.run?.runId,
            stage: row.run?.stages.length ?? 0,
            key: `${row.view.state}|${row.view.inactive}`,
          });
        }
        // `hello` follows the first read: from then on every change is told in full.
        if (!greeted) {
          send("hello", { taskGroupId: taskGroupId ?? null, pollMs });
          greeted = true;
        }
        if (taskGroupId == null) {
          windowStart = new Date(started.getTime() - 10_000);
          if (seen.size > 20_000) seen.clear();
        }
        if (Date.now() - lastBeat >= heartbeatMs) {
          res.write(": keep-alive\n\n");
          lastBeat = Date.now();
        }
        await new Promise((r) => setTimeout(r, pollMs));
      }
      res.end();
    });
  // Every task of the cluster, for the task group list and a task's page.
  router.get("/events", requireScopes("taskweb:task:list"), events("all"));
  // The tasks of one group, for its graph.
  router.get(
    "/task-groups/:taskGroupId/events",
    requireScopes("taskweb:task-group:read:<taskGroupId>"),
    events("group"),
  );
  return router;
}
