/**
 * The cluster's HTTP surface: federation (through Fedify), the REST API, the public
 * documents of tasks, artifacts and activities, artifact bytes, health checks and the UI.
 * @module
 */
import { createHash, randomUUID } from "node:crypto";
import express, {
  type NextFunction,
  type Request as ERequest,
  type Response as EResponse,
} from "express";
import { getLogger, withContext } from "@logtape/logtape";
import type { Kysely } from "kysely";
import type { AuthService } from "../domain/auth.ts";
import { ApiError } from "../domain/errors.ts";
import { artifactDocument, taskDocument, taskGroupDocument } from "../domain/task-documents.ts";
import { consumedInputs } from "../domain/task-provenance.ts";
import type { HookService } from "../domain/hooks.ts";
import type { OfferService } from "../federation/offers.ts";
import type { RelayService } from "../federation/relays.ts";
import type { SecretStore } from "../domain/secrets.ts";
import type { TaskService, TaskState } from "../domain/task-service.ts";
import { storedDefinition } from "../domain/task-definition.ts";
import type { ClusterUrls } from "../federation/cluster-urls.ts";
import type { ClusterFederation } from "../federation/federation.ts";
import type { FollowPolicy } from "../federation/follow-policy.ts";
import type { JobQueue } from "../queue/job-queue.ts";
import type { DatabaseSchema } from "../store/schema.ts";
import { fedifyMiddleware } from "./fedify-adapter.ts";
import type { ClusterMetrics } from "./metrics.ts";
import { graphRoutes } from "./graph-routes.ts";
import { hookRoutes } from "./hook-routes.ts";
import { offerRoutes } from "./offer-routes.ts";
import { relayRoutes } from "./relay-routes.ts";
import { requireScopes, requestAuth, setRequestAuth } from "./scopes.ts";
import type { Delivery } from "../federation/delivery.ts";
import { deliveryRoutes } from "./delivery-routes.ts";
import { inboxGuard, type InboxGuardOptions } from "./inbox-guard.ts";
import { keyRoutes } from "./key-routes.ts";
import { secretRoutes } from "./secret-routes.ts";
import { authRoutes } from "./auth-routes.ts";
import {
  checkAuthorizedFetch,
  mayReadPrivateArtifact,
  verifySignedFetch,
} from "./authorized-fetch.ts";
import { federationRoutes } from "./federation-routes.ts";
import { privateArtifactRoutes } from "./private-artifact-routes.ts";
import { webappRoutes } from "./webapp-routes.ts";
import { webappStatic } from "./webapp-static.ts";
import { statsRoutes } from "./stats-routes.ts";
import { openApiRoutes } from "./openapi-routes.ts";

const logger = getLogger(["taskweb", "http"]);
const accessLogger = getLogger(["taskweb", "http", "access"]);

/** A request id a client or proxy may choose; anything else is replaced by a new one. */
const REQUEST_ID = /^[A-Za-z0-9._:@/+=-]{1,128}$/;

const AS_MEDIA_TYPE = "application/activity+json";

/** How often a followed log is read again. */
const LIVE_LOG_POLL_MS = 250;

/** Options for {@link createApp}. */
export interface AppOptions {
  readonly db: Kysely<DatabaseSchema>;
  readonly jobs: JobQueue;
  readonly tasks: TaskService;
  readonly secrets: SecretStore;
  readonly hooks: HookService;
  readonly offers: OfferService;
  readonly relays: RelayService;
  readonly urls: ClusterUrls;
  readonly name: string;
  readonly version: string;
  /** Authenticates API clients and checks their scopes. */
  readonly auth: AuthService;
  /** Who may follow this cluster, and who is blocked. */
  readonly followPolicy: FollowPolicy;
  readonly federation: ClusterFederation;
  /** Delivery health per peer, for `GET /api/v1/deliveries/peers`. */
  readonly delivery: Pick<Delivery, "peers">;
  readonly guard: Omit<InboxGuardOptions, "origin">;
  readonly databaseKind: string;
  /** Served at `GET /metrics` (Prometheus text), to clients with `taskweb:metrics:read`. */
  readonly metrics?: ClusterMetrics;
}

type Handler = (req: ERequest, res: EResponse) => Promise<void>;

/** Wraps an async route so that every rejection reaches the error handler. */
function route(handler: Handler) {
  return (req: ERequest, res: EResponse, next: NextFunction): void => {
    handler(req, res).catch(next);
  };
}

function bearerToken(req: ERequest): string {
  const header = req.headers.authorization ?? "";
  return header.startsWith("Bearer ") ? header.slice(7).trim() : "";
}

const AUTHENTICATION_FAILED: Record<string, string> = {
  missing: "Send an API token as 'Authorization: Bearer <token>'.",
  unknown:
    "The token in 'Authorization: Bearer <token>' is not valid: use the cluster's API token or a client's current token (taskweb client create, taskweb client rotate).",
  expired:
    "The token in 'Authorization: Bearer <token>' belongs to a client that has expired; ask an administrator for a new client.",
  disabled:
    "The token in 'Authorization: Bearer <token>' belongs to a disabled client; ask an administrator to enable it or create another.",
};

function param(req: ERequest, name: string): string {
  const value = (req.params as Record<string, string | string[] | undefined>)[name];
  return Array.isArray(value) ? value.join("/") : (value ?? "");
}

function sendActivityJson(res: EResponse, body: unknown): void {
  res.setHeader("Content-Type", `${AS_MEDIA_TYPE}; charset=utf-8`);
  res.setHeader("Vary", "Accept");
  res.send(JSON.stringify(body));
}

/** Builds the Express application. */
export function createApp(options: AppOptions): express.Express {
  const { db, tasks, urls, name } = options;
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);

  // Every request has an id: the caller's X-Request-Id (a proxy's, say) or a new one. It is
  // sent back, and every log line written while the request is handled carries it.
  app.use((req, res, next) => {
    const given = req.headers["x-request-id"];
    const requestId = typeof given === "string" && REQUEST_ID.test(given) ? given : randomUUID();
    res.setHeader("X-Request-Id", requestId);
    const started = performance.now();
    res.on("finish", () => {
      const quiet = req.path === "/healthz" || req.path === "/readyz" || req.path === "/metrics";
      const fields = {
        requestId,
        method: req.method,
        path: req.path,
        status: res.statusCode,
        durationMs: Math.round(performance.now() - started),
      };
      const message = "{method} {path} {status} {durationMs} ms";
      if (quiet) accessLogger.debug(message, fields);
      else accessLogger.info(message, fields);
    });
    withContext({ requestId }, () => next());
  });
  const { auth } = options;
  /** Sets `res.locals.auth` from the bearer token, or ends the request with 401. */
  const authenticate = (req: ERequest, res: EResponse, next: NextFunction): void => {
    auth.authenticate(bearerToken(req)).then((result) => {
      if (!result.ok) {
        next(new ApiError("AuthenticationFailed", AUTHENTICATION_FAILED[result.reason] ?? ""));
        return;
      }
      const { clientId, principal } = result.client;
      setRequestAuth(res, {
        clientId,
        principal,
        missingScopes: (required) => auth.missingScopes(principal, required),
      });
      next();
    }, next);
  };

  const metrics = options.metrics;
  if (metrics != null) {
    app.get(
      "/metrics",
      authenticate,
      requireScopes("taskweb:metrics:read"),
      route(async (_req, res) => {
        res.setHeader("Content-Type", metrics.registry.contentType);
        res.end(await metrics.registry.metrics());
      }),
    );
  }
  app.get("/healthz", (_req, res) => {
    res.json({ status: "ok" });
  });
  app.get(
    "/readyz",
    route(async (_req, res) => {
      const checks: Record<string, string> = {};
      let ready = true;
      try {
        // A database that accepts connections but does not answer is not ready either.
        await Promise.race([
          db.selectFrom("tasks").select("task_id").limit(1).execute(),
          new Promise((_resolve, reject) =>
            setTimeout(
              () => reject(new Error("The database did not answer within 3 s.")),
              3000,
            ).unref(),
          ),
        ]);
        checks.database = "ok";
      } catch (error) {
        ready = false;
        checks.database = String(error);
      }
      try {
        await options.jobs.ping();
        checks.queue = "ok";
      } catch (error) {
        ready = false;
        checks.queue = String(error);
      }
      res.status(ready ? 200 : 503).json({ status: ready ? "ready" : "unavailable", checks });
    }),
  );

  const guard = inboxGuard({ ...options.guard, origin: urls.origin });
  app.post(`/clusters/${name}/inbox`, guard);
  app.post("/inbox", guard);
  app.use(fedifyMiddleware(options.federation.federation, urls.origin));

  const authorizedFetch = {
    db,
    auth,
    origin: urls.origin,
    documentLoader: options.guard.documentLoader,
    contextLoader: options.guard.contextLoader,
    keyCache: options.guard.keyCache,
    isBlocked: (actorId: string) => options.followPolicy.isBlocked(actorId),
  };
  /** Answers 401/403 and returns false unless the GET may read this private artifact. */
  const fetchAllowed = async (
    req: ERequest,
    res: EResponse,
    taskId: string,
    artifactName: string,
  ): Promise<boolean> => {
    const result = await checkAuthorizedFetch(req, authorizedFetch, {
      taskId,
      name: artifactName,
    });
    if (result.ok) return true;
    if (result.status === 401) res.setHeader("WWW-Authenticate", 'Signature realm="taskweb"');
    res.setHeader("Vary", "Signature, Signature-Input");
    res.status(result.status).json({ code: result.reason, message: result.message });
    return false;
  };

  // Public documents: what ids dereference to.
  app.get(
    `/clusters/${name}/tasks/:taskId`,
    route(async (req, res) => {
      const found = await tasks.getTask(param(req, "taskId"));
      if (found == null) throw new ApiError("ResourceNotFound", "No such task on this cluster.");
      const last = found.runs.at(-1);
      // A private artifact is listed only to a signed GET by an actor that may fetch it: to
      // anyone else, its name, size and digest are as private as its bytes.
      let artifacts = found.artifacts.filter((a) => !a.private);
      if (artifacts.length < found.artifacts.length) {
        res.setHeader("Vary", "Signature, Signature-Input");
        const signed = req.headers.signature != null || req.headers["signature-input"] != null;
        const signer = signed ? await verifySignedFetch(req, authorizedFetch) : undefined;
        if (signer?.ok === true) {
          const readable = new Set<string>();
          for (const a of found.artifacts) {
            if (
              a.private &&
              (await mayReadPrivateArtifact(authorizedFetch, signer.actor, {
                taskId: found.task.task_id,
                name: a.name,
              }))
            ) {
              readable.add(a.name);
            }
          }
          if (readable.size > 0) {
            res.setHeader("Cache-Control", "private, no-store");
            artifacts = found.artifacts.filter((a) => !a.private || readable.has(a.name));
          }
        }
      }
      sendActivityJson(
        res,
        taskDocument(urls, {
          task: found.task,
          run: last,
          dependencies: found.dependencies.map((d) => d.dependency),
          artifacts,
          inputs:
            (await consumedInputs(db, urls, [found.task.task_id])).get(found.task.task_id) ?? [],
        }),
      );
    }),
  );
  app.get(
    `/clusters/${name}/task-groups/:taskGroupId`,
    route(async (req, res) => {
      const tally = await tasks.getTaskGroupTally(param(req, "taskGroupId"));
      if (tally == null) throw new ApiError("ResourceNotFound", "No such task group.");
      sendActivityJson(res, taskGroupDocument(urls, tally));
    }),
  );
  app.get(
    `/clusters/${name}/tasks/:taskId/artifacts/*artifact`,
    route(async (req, res) => {
      const taskId = param(req, "taskId");
      const row = await db
        .selectFrom("artifacts")
        .select(["name", "media_type", "size", "sha256", "expires_at", "private"])
        .where("task_id", "=", taskId)
        .where("name", "=", param(req, "artifact"))
        .executeTakeFirst();
      if (row == null) throw new ApiError("ResourceNotFound", "No such artifact.");
      if (row.private && !(await fetchAllowed(req, res, taskId, row.name))) return;
      const task = await db
        .selectFrom("tasks")
        .select("definition")
        .where("task_id", "=", taskId)
        .executeTakeFirst();
      const tags = task == null ? {} : storedDefinition(task.definition).tags;
      sendActivityJson(res, artifactDocument(urls, taskId, row, tags));
    }),
  );
  app.get(
    `/clusters/${name}/content/:taskId/*artifact`,
    route(async (req, res) => {
      const row = await db
        .selectFrom("artifacts")
        .select(["content", "media_type", "sha256", "private"])
        .where("task_id", "=", param(req, "taskId"))
        .where("name", "=", param(req, "artifact"))
        .executeTakeFirst();
      if (row == null) throw new ApiError("ResourceNotFound", "No such artifact.");
      if (row.private) {
        const allowed = await fetchAllowed(req, res, param(req, "taskId"), param(req, "artifact"));
        if (!allowed) return;
        res.setHeader("Cache-Control", "private, no-store");
      }
      const content = Buffer.from(row.content);
      res.setHeader("Content-Type", row.media_type);
      res.setHeader("ETag", `"${row.sha256}"`);
      res.setHeader("Accept-Ranges", "bytes");
      // RFC 9530: Repr-Digest is the whole artifact's; Content-Digest is of the bytes sent.
      const reprDigest = `sha-256=:${Buffer.from(row.sha256, "hex").toString("base64")}:`;
      res.setHeader("Repr-Digest", reprDigest);
      const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
      if (range != null) {
        const start = Number(range[1]);
        const end =
          range[2] === "" ? content.length - 1 : Math.min(Number(range[2]), content.length - 1);
        if (start >= content.length || start > end) {
          res.status(416).setHeader("Content-Range", `bytes */${content.length}`).end();
          return;
        }
        const slice = content.subarray(start, end + 1);
        res.status(206).setHeader("Content-Range", `bytes ${start}-${end}/${content.length}`);
        res.setHeader(
          "Content-Digest",
          `sha-256=:${createHash("sha256").update(slice).digest("base64")}:`,
        );
        res.end(slice);
        return;
      }
      res.setHeader("Content-Digest", reprDigest);
      res.end(content);
    }),
  );
  app.get(
    `/clusters/${name}/activities/:activityId`,
    route(async (req, res) => {
      const row = await db
        .selectFrom("outbox")
        .select("activity")
        .where("activity_id", "=", urls.activity(param(req, "activityId")))
        .executeTakeFirst();
      if (row == null) throw new ApiError("ResourceNotFound", "No such activity.");
      sendActivityJson(res, row.activity);
    }),
  );

  app.use(openApiRoutes());
  // The REST API, for API clients; every route declares the scopes it needs.
  const api = express.Router();
  api.use(authenticate);
  api.use(express.json({ limit: "1mb" }));
  api.get(
    "/whoami",
    requireScopes(),
    route(async (_req, res) => {
      const caller = requestAuth(res);
      if (caller == null)
        throw new ApiError("AuthenticationFailed", AUTHENTICATION_FAILED.missing ?? "");
      res.json({ clientId: caller.clientId, scopes: await auth.grantedScopes(caller.principal) });
    }),
  );
  api.post(
    "/whoami/satisfies",
    requireScopes(),
    route(async (req, res) => {
      const caller = requestAuth(res);
      if (caller == null)
        throw new ApiError("AuthenticationFailed", AUTHENTICATION_FAILED.missing ?? "");
      const checks = (req.body as { checks?: unknown } | undefined)?.checks;
      const usage =
        'Send {"checks": {"<name>": ["<scope>", …], …}} with at most 100 checks; the answer is {"<name>": true | false, …}.';
      if (typeof checks !== "object" || checks === null || Array.isArray(checks)) {
        throw new ApiError("InputError", usage);
      }
      const entries = Object.entries(checks as Record<string, unknown>);
      if (entries.length > 100) throw new ApiError("InputError", usage);
      const answer: Record<string, boolean> = {};
      for (const [name, scopes] of entries) {
        if (
          !Array.isArray(scopes) ||
          !scopes.every((s) => typeof s === "string") ||
          scopes.length > 100
        ) {
          throw new ApiError("InputError", `checks.${name}: ${usage}`);
        }
        answer[name] = (await caller.missingScopes(scopes as string[])).length === 0;
      }
      res.json(answer);
    }),
  );
  api.get(
    "/cluster",
    requireScopes("taskweb:cluster:read"),
    route(async (_req, res) => {
      res.json({
        name,
        actor: urls.actor,
        version: options.version,
        database: options.databaseKind,
        queue: options.jobs.kind,
        tasks: await tasks.countByState(),
      });
    }),
  );
  api.post(
    "/tasks",
    requireScopes("taskweb:task:create"),
    route(async (req, res) => {
      const result = await tasks.createTask(req.body);
      const view = await tasks.getTask(result.taskId);
      res.status(result.created ? 201 : 200).json({
        taskId: result.taskId,
        url: urls.task(result.taskId),
        state: view?.task.state,
        created: result.created,
      });
    }),
  );
  api.get(
    "/tasks",
    requireScopes("taskweb:task:list"),
    route(async (req, res) => {
      const state =
        typeof req.query.state === "string" ? (req.query.state as TaskState) : undefined;
      const limit = typeof req.query.limit === "string" ? Number(req.query.limit) : undefined;
      const rows = await tasks.listTasks({
        ...(state != null ? { state } : {}),
        ...(limit != null && Number.isInteger(limit) && limit > 0 ? { limit } : {}),
      });
      res.json({ tasks: rows.map((t) => ({ ...t, url: urls.task(t.task_id) })) });
    }),
  );
  api.get(
    "/tasks/:taskId",
    requireScopes("taskweb:task:read:<taskId>"),
    route(async (req, res) => {
      const found = await tasks.getTask(param(req, "taskId"));
      if (found == null) throw new ApiError("ResourceNotFound", "No such task on this cluster.");
      res.json({
        ...found.task,
        url: urls.task(found.task.task_id),
        runs: found.runs.map(({ log: _log, ...run }) => run),
        dependencies: found.dependencies,
        inputs: found.inputs,
        ...(found.join != null ? { join: found.join } : {}),
        artifacts: found.artifacts.map((a) => ({
          ...a,
          size: Number(a.size),
          url: urls.artifact(found.task.task_id, a.name),
          contentUrl: urls.artifactContent(found.task.task_id, a.name),
        })),
      });
    }),
  );
  api.post(
    "/tasks/:taskId/cancel",
    requireScopes("taskweb:task:cancel:<taskId>"),
    route(async (req, res) => {
      const taskId = param(req, "taskId");
      const result = await tasks.cancelTask(taskId);
      res.json({ taskId, ...result });
    }),
  );
  api.post(
    "/tasks/:taskId/activate",
    requireScopes("taskweb:task:activate:<taskId>"),
    route(async (req, res) => {
      const taskId = param(req, "taskId");
      res.json({ taskId, ...(await tasks.activateTask(taskId)) });
    }),
  );
  api.post(
    "/tasks/:taskId/resolve",
    requireScopes("taskweb:task:resolve:<taskId>"),
    route(async (req, res) => {
      const taskId = param(req, "taskId");
      const body: unknown = req.body;
      const { state, note } = (typeof body === "object" && body !== null ? body : {}) as {
        state?: unknown;
        note?: unknown;
      };
      const problems = [];
      if (state !== "completed" && state !== "failed") {
        problems.push({ field: "state", message: 'Must be "completed" or "failed".' });
      }
      if (note !== undefined && (typeof note !== "string" || note.length > 4096)) {
        problems.push({ field: "note", message: "Must be a string of at most 4096 characters." });
      }
      if (problems.length > 0 || (state !== "completed" && state !== "failed")) {
        throw new ApiError(
          "InputError",
          'Send {"state": "completed" | "failed", "note"?: "…"} to resolve a breakpoint task.',
          { problems },
        );
      }
      const result = await tasks.resolveBreakpoint(taskId, {
        state,
        note: typeof note === "string" ? note : undefined,
      });
      res.json({ taskId, ...result });
    }),
  );
  api.post(
    "/tasks/:taskId/rerun",
    requireScopes("taskweb:task:rerun:<taskId>"),
    route(async (req, res) => {
      const taskId = param(req, "taskId");
      const result = await tasks.rerunTask(taskId);
      res.status(202).json({ taskId, ...result, state: "pending" });
    }),
  );
  api.get(
    "/tasks/:taskId/runs/:runId/log",
    requireScopes("taskweb:task:read:<taskId>"),
    route(async (req, res) => {
      const taskId = param(req, "taskId");
      const runId = Number(param(req, "runId"));
      const read = () =>
        db
          .selectFrom("runs")
          .select(["log", "state"])
          .where("task_id", "=", taskId)
          .where("run_id", "=", runId)
          .executeTakeFirst();
      const first = await read();
      if (first == null) throw new ApiError("ResourceNotFound", "No such run.");
      res.type("text/plain; charset=utf-8");
      if (req.query.follow == null || first.state !== "running") {
        res.send(first.log ?? "");
        return;
      }
      // Follow: send the log as it grows until the run resolves or the client goes away.
      res.setHeader("Cache-Control", "no-store");
      res.setHeader("X-Content-Type-Options", "nosniff");
      res.flushHeaders();
      let sent = 0;
      let gone = false;
      req.on("close", () => {
        gone = true;
      });
      let current: { log: string | null; state: string } | undefined = first;
      while (!gone && current != null) {
        const log = current.log ?? "";
        // The final log may be shorter (start and end kept): start again after a marker.
        if (log.length < sent) {
          res.write("\n[taskweb] the log was shortened when the run ended; full log follows\n");
          sent = 0;
        }
        if (log.length > sent) {
          res.write(log.slice(sent));
          sent = log.length;
        }
        if (current.state !== "running") break;
        await new Promise((r) => setTimeout(r, LIVE_LOG_POLL_MS));
        current = await read();
      }
      res.end();
    }),
  );
  api.post(
    "/following",
    requireScopes("taskweb:follow:manage"),
    route(async (req, res) => {
      const actor = (req.body as { actor?: unknown } | undefined)?.actor;
      if (typeof actor !== "string") {
        throw new ApiError("InputError", 'Send {"actor": "<the cluster\'s actor URL>"}.');
      }
      try {
        new URL(actor);
      } catch {
        throw new ApiError("InputError", `${JSON.stringify(actor)} is not a URL.`);
      }
      try {
        res.status(202).json(await options.federation.follow(actor));
      } catch (error) {
        throw new ApiError(
          "RemoteUnavailable",
          `Could not follow ${actor}: ${String(error)}`,
          undefined,
          {
            cause: error,
          },
        );
      }
    }),
  );
  api.delete(
    "/following",
    requireScopes("taskweb:follow:manage"),
    route(async (req, res) => {
      const actor = typeof req.query.actor === "string" ? req.query.actor : "";
      const removed = await options.federation.unfollow(actor);
      if (!removed)
        throw new ApiError("ResourceNotFound", "This cluster does not follow that actor.");
      res.status(204).end();
    }),
  );
  api.get(
    "/following",
    requireScopes("taskweb:follow:read"),
    route(async (_req, res) => {
      res.json({
        following: await db.selectFrom("following").selectAll().orderBy("actor_id").execute(),
      });
    }),
  );
  api.get(
    "/followers",
    requireScopes("taskweb:follower:read"),
    route(async (req, res) => {
      const state = req.query.state;
      if (state !== undefined && state !== "pending" && state !== "accepted") {
        throw new ApiError("InputError", "state must be pending or accepted.");
      }
      let query = db.selectFrom("followers").selectAll().orderBy("actor_id");
      if (state !== undefined) query = query.where("state", "=", state);
      res.json({ followers: await query.execute() });
    }),
  );
  api.use(graphRoutes({ db, tasks, urls }));
  api.use(secretRoutes({ secrets: options.secrets }));
  api.use(authRoutes({ auth }));
  api.use(keyRoutes({ federation: options.federation }));
  api.use(deliveryRoutes({ delivery: options.delivery }));
  api.use(privateArtifactRoutes({ db }));
  api.use(federationRoutes({ db, federation: options.federation, policy: options.followPolicy }));
  api.use(webappRoutes({ db, urls }));
  api.use(statsRoutes({ db }));
  api.use(hookRoutes({ hooks: options.hooks }));
  api.use(offerRoutes({ offers: options.offers, urls }));
  api.use(relayRoutes({ relays: options.relays }));
  app.use("/api/v1", api);

  app.use(webappStatic());

  app.use((_req, _res, next) => {
    next(new ApiError("ResourceNotFound", "Nothing here. The API lives under /api/v1."));
  });
  app.use((error: unknown, req: ERequest, res: EResponse, _next: NextFunction) => {
    if (res.headersSent) return;
    let apiError: ApiError;
    if (error instanceof ApiError) {
      apiError = error;
    } else if (typeof error === "object" && error !== null && "type" in error) {
      const type = (error as { type: string }).type;
      apiError =
        type === "entity.too.large"
          ? new ApiError("PayloadTooLarge", "The request body is larger than 1 MiB.")
          : type === "entity.parse.failed"
            ? new ApiError("InputError", "The request body is not valid JSON.")
            : new ApiError("InputError", "The request body could not be read.");
    } else {
      logger.error("{method} {url} failed: {error}", {
        method: req.method,
        url: req.originalUrl,
        error: String(error),
      });
      apiError = new ApiError(
        "InternalServerError",
        "Something went wrong on the cluster; try again.",
      );
    }
    // RFC 9110: a 401 must carry a challenge.
    if (apiError.status === 401) res.setHeader("WWW-Authenticate", 'Bearer realm="taskweb"');
    res.status(apiError.status).json({
      code: apiError.code,
      message: apiError.message,
      ...(apiError.details != null ? { details: apiError.details } : {}),
    });
  });
  return app;
}
