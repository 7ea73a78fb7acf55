/**
 * The composition root: config → database → queue → task service → federation → HTTP app
 * and workers, for the process roles `start` (everything in one process), `web` (HTTP and
 * federation only) and `worker` (runs, publishing, delivery, catch-up). Nothing else wires
 * components together; tests start clusters through here.
 * @module
 */
import { importJwk } from "@fedify/fedify";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { TracerProvider } from "@opentelemetry/api";
import type { Express } from "express";
import { getLogger } from "@logtape/logtape";
import { Redis } from "ioredis";
import type { ClusterConfig } from "./config.ts";
import { ConfigError } from "./config.ts";
import {
  createSecretCipher,
  decodeSecretsKey,
  generateSecretsKey,
  type SecretCipher,
} from "./domain/secret-cipher.ts";
import { createHookService, HOOK_QUEUE, type HookService } from "./domain/hooks.ts";
import { JOIN_QUEUE } from "./domain/task-joins.ts";
import { createAuthService, type AuthService } from "./domain/auth.ts";
import { createFollowPolicy, type FollowPolicy } from "./federation/follow-policy.ts";
import { createSecretStore, type SecretStore } from "./domain/secrets.ts";
import { createTaskService, QUEUES, type TaskService } from "./domain/task-service.ts";
import { createClusterUrls, type ClusterUrls } from "./federation/cluster-urls.ts";
import { dereferenceRemoteTask } from "./federation/dereference.ts";
import { createDelivery, DELIVERY_QUEUE, type DeliveryJob } from "./federation/delivery.ts";
import {
  createClusterFederation,
  type ClusterFederation,
  type DeliveryAttempt,
} from "./federation/federation.ts";
import {
  createActivityApplier,
  createTaskwebInbox,
  pruneProcessedActivities,
  type InboxOutcome,
} from "./federation/inbox.ts";
import { CATCH_UP_QUEUE, catchUpOutbox } from "./federation/outbox-catch-up.ts";
import {
  createAdmittedBodies,
  createRelayService,
  type RelayService,
} from "./federation/relays.ts";
import {
  createOfferService,
  OFFER_ACCEPT_SCOPE,
  OFFER_CALLBACK_QUEUE,
  type OfferOutcome,
  type OfferService,
} from "./federation/offers.ts";
import { createApp } from "./http/app.ts";
import { createClusterMetrics, type ClusterMetrics } from "./http/metrics.ts";
import { createMemoryKeyCache, type InboxIgnoral, type InboxRefusal } from "./http/inbox-guard.ts";
import { parseAllowlist } from "./outbound/address-policy.ts";
import { createOutboundFetch, isPermittedUrl } from "./outbound/checked-fetch.ts";
import {
  createCheckedDocumentLoader,
  createRefetchLimiter,
  signerFor,
} from "./outbound/document-loader.ts";
import { createRateLimiter, type RateLimitStore } from "./http/rate-limit.ts";
import { createBullMqJobQueue } from "./queue/bullmq-job-queue.ts";
import { createEmbeddedJobQueue } from "./queue/embedded-job-queue.ts";
import { createFedifyMessageQueue } from "./queue/fedify-message-queue.ts";
import type { JobConsumer, JobQueue } from "./queue/job-queue.ts";
import { openDatabase, type Database } from "./store/database.ts";
import { createKyselyKvStore } from "./store/kysely-kv-store.ts";
import { migrateToLatest } from "./store/migrate.ts";
import { startWorker } from "./worker/worker.ts";
import { VERSION } from "./version.ts";

const logger = getLogger(["taskweb", "cluster"]);

/** Which parts of the cluster this process runs. */
export interface ClusterRoles {
  /** HTTP: federation endpoints, REST API, documents, UI. */
  readonly web: boolean;
  /** Runs tasks, publishes the outbox, delivers activities, catches up, reaps claims. */
  readonly worker: boolean;
}

/** Events a running cluster reports (narration, tests, metrics). */
export type ClusterEvent =
  | {
      readonly type: "run";
      readonly taskId: string;
      readonly runId: number;
      readonly event: "started" | "resolved";
      readonly state?: string;
    }
  | { readonly type: "inbox"; readonly outcome: InboxOutcome }
  | { readonly type: "inbox-refused"; readonly reason: InboxRefusal }
  | { readonly type: "inbox-ignored"; readonly reason: InboxIgnoral }
  | { readonly type: "published"; readonly activityId: string }
  /** Every active task of the group has resolved; a `TaskGroupResolved` is in the outbox. */
  | { readonly type: "task-group-resolved"; readonly taskGroupId: string }
  /** What became of an `Offer` of a task graph this cluster received. */
  | { readonly type: "offer"; readonly outcome: OfferOutcome }
  /** A hook fire created its task group. */
  | {
      readonly type: "hook-fired";
      readonly hookId: string;
      readonly fireId: string;
      readonly taskGroupId: string;
    };

/** Refusals that are a failed verification (the others come before any verification). */
const VERIFICATION_REFUSALS: ReadonlySet<InboxRefusal> = new Set([
  "no-signature",
  "invalid-signature",
  "key-fetch-failed",
  "key-not-owned-by-actor",
  "body-not-covered",
]);

/** How long a stopping web process lets requests in flight finish, in ms. */
const SERVER_DRAIN_MS = 3000;

/** When this process's runs started, to time them when they resolve. */
const runStarts = new WeakMap<ClusterMetrics, Map<string, number>>();

/** Feeds a cluster event to the process's counters. */
function observe(metrics: ClusterMetrics, event: ClusterEvent): void {
  if (event.type === "inbox") {
    metrics.inbox(
      event.outcome.outcome === "applied" ? "accepted" : `ignored:${event.outcome.reason}`,
    );
  } else if (event.type === "inbox-refused") {
    metrics.inbox(`refused:${event.reason}`);
    if (VERIFICATION_REFUSALS.has(event.reason)) metrics.inboxVerification(event.reason);
  } else if (event.type === "inbox-ignored") {
    metrics.inbox(`ignored:${event.reason}`);
  } else if (event.type === "run") {
    let starts = runStarts.get(metrics);
    if (starts == null) runStarts.set(metrics, (starts = new Map()));
    const key = `${event.taskId}/${event.runId}`;
    if (event.event === "started") {
      starts.set(key, performance.now());
    } else {
      const started = starts.get(key);
      starts.delete(key);
      if (started != null) {
        metrics.runFinished(event.state ?? "unknown", (performance.now() - started) / 1000);
      }
    }
  }
}

/** Options for {@link startCluster}. */
export interface StartClusterOptions {
  readonly roles: ClusterRoles;
  readonly onEvent?: (event: ClusterEvent) => void;
  /** Delivery retry schedule (tests shorten it). */
  readonly deliveryRetry?: { maxAttempts: number; initialDelayMs: number; maxDelayMs: number };
  /** Told of every job this process enqueues (tests prove that refused input queues nothing). */
  readonly onJobEnqueued?: (queue: string, jobId: string) => void;
  /** Told of every outbound request this process sends (tests count fetches with it). */
  readonly onOutboundRequest?: (url: URL) => void;
  /** How often claims and deadlines are checked, in ms. @defaultValue 5000 */
  readonly maintenanceIntervalMs?: number;
  /**
   * Receives Fedify's OpenTelemetry spans (inbox, outbox, signatures, fetches).
   * @defaultValue the process's global provider: a no-op unless an OpenTelemetry SDK was
   * registered, e.g. with `node --import ./otel.mjs` (see README.md, Observability)
   */
  readonly tracerProvider?: TracerProvider;
}

/** A running cluster process. */
export interface RunningCluster {
  readonly config: ClusterConfig;
  readonly urls: ClusterUrls;
  readonly adminToken: string;
  readonly database: Database;
  readonly jobs: JobQueue;
  readonly tasks: TaskService;
  readonly secrets: SecretStore;
  readonly hooks: HookService;
  readonly offers: OfferService;
  readonly relays: RelayService;
  /** API clients, roles, grants to remote clusters, deny rules. */
  readonly auth: AuthService;
  /** Who may follow this cluster, and who is blocked. */
  readonly followPolicy: FollowPolicy;
  /** The HTTP application (undefined without the `web` role), for route listings. */
  readonly app: Express | undefined;
  readonly federation: ClusterFederation;
  /** The HTTP server's port (0 for a worker-only process). */
  readonly port: number;
  /** Where a process without the web role serves `/metrics` (`TASKWEB_METRICS_PORT`). */
  readonly metricsPort: number | undefined;
  /** Runs the start-up reconciliation again (what a timer does periodically). */
  reconcile(): Promise<void>;
  /** Stops accepting work, lets running jobs finish, closes everything. Safe to call twice. */
  stop(): Promise<void>;
}

async function resolveAdminToken(config: ClusterConfig): Promise<string> {
  if (config.adminToken != null && config.adminToken !== "") {
    if (config.adminToken.length < 16)
      throw new ConfigError("TASKWEB_ADMIN_TOKEN must be at least 16 characters.");
    return config.adminToken;
  }
  if (config.dataDir == null) {
    throw new ConfigError(
      "Set TASKWEB_ADMIN_TOKEN: on PostgreSQL every process must share one API token.",
    );
  }
  const file = join(config.dataDir, "admin-token");
  try {
    return (await readFile(file, "utf8")).trim();
  } catch {
    const token = randomBytes(24).toString("base64url");
    await writeFile(file, `${token}\n`, { mode: 0o600 });
    return token;
  }
}

/**
 * The cipher for secrets: from `TASKWEB_SECRETS_KEY`, or with the embedded engine from
 * `<dataDir>/secrets.key` (created on first start, readable by its owner only). Undefined on
 * PostgreSQL without the variable: the cluster runs, and secrets are unavailable.
 */
async function resolveSecretsCipher(config: ClusterConfig): Promise<SecretCipher | undefined> {
  const decode = (text: string, source: string) => {
    const key = decodeSecretsKey(text);
    if (typeof key === "string") {
      throw new ConfigError(`${source} must hold the base64 of 32 random bytes, but ${key}.`);
    }
    return createSecretCipher(key);
  };
  if (config.secretsKey != null) return decode(config.secretsKey, "TASKWEB_SECRETS_KEY");
  if (config.dataDir == null) return undefined;
  const file = join(config.dataDir, "secrets.key");
  try {
    await writeFile(file, `${generateSecretsKey()}\n`, { mode: 0o600, flag: "wx" });
  } catch (error) {
    // Created on an earlier start (or by a process starting beside this one): use it.
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  }
  return decode(await readFile(file, "utf8"), file);
}

/** Warns when stored secrets were sealed by another key than this process's. */
async function checkSecretsKey(secrets: SecretStore): Promise<void> {
  const foreign = await secrets.foreignKeys();
  if (foreign.length === 0) return;
  const count = foreign.reduce((n, k) => n + k.count, 0);
  logger.warn(
    secrets.keyId == null
      ? "{count} secrets are stored, but this process has no secrets key: runs that need them will fail. Set TASKWEB_SECRETS_KEY."
      : "{count} secrets were stored with another key ({keys}) than this process's ({keyId}): runs that need them will fail. Set TASKWEB_SECRETS_KEY to the key they were stored with, or set them again.",
    { count, keys: foreign.map((k) => k.keyId).join(", "), keyId: secrets.keyId },
  );
}

function listen(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Starts a cluster process with the given roles. */
export async function startCluster(
  config: ClusterConfig,
  options: StartClusterOptions,
): Promise<RunningCluster> {
  const { roles } = options;
  let metrics: ClusterMetrics | undefined;
  const emit = (event: ClusterEvent) => {
    if (metrics != null) observe(metrics, event);
    options.onEvent?.(event);
  };
  const cleanups: (() => Promise<void>)[] = [];
  // The HTTP server stops first, whenever it was started: a request must not arrive, nor one
  // in flight go on, once the queue and the database are closing.
  let stopServer: (() => Promise<void>) | undefined;
  const cleanup = async () => {
    const first = stopServer;
    stopServer = undefined;
    for (const fn of [...(first != null ? [first] : []), ...cleanups.reverse()]) {
      try {
        await fn();
      } catch (error) {
        logger.warn("Error while stopping: {error}", { error: String(error) });
      }
    }
    cleanups.length = 0;
  };

  try {
    let server: Server | undefined;
    let port = 0;
    if (roles.web) {
      server = createServer();
      port = await listen(server, config.host, config.port);
      const s = server;
      stopServer = () =>
        new Promise<void>((resolve) => {
          // Requests in flight get a moment to finish; idle and long-lived ones (event
          // streams) are cut.
          const cut = setTimeout(() => s.closeAllConnections(), SERVER_DRAIN_MS);
          s.close(() => {
            clearTimeout(cut);
            resolve();
          });
          s.closeIdleConnections();
        });
    }
    if (!roles.web && config.publicUrl == null) {
      throw new ConfigError(
        "A worker process must know the cluster's public origin: set TASKWEB_PUBLIC_URL (the same on every process).",
      );
    }
    const origin =
      config.publicUrl ??
      `http://${config.host.includes(":") ? `[${config.host}]` : config.host}:${port || config.port}`;
    const urls = createClusterUrls(origin, config.name);

    if (config.dataDir != null) await mkdir(config.dataDir, { recursive: true });
    const database = await openDatabase({
      url: config.databaseUrl,
      dataDir: config.databaseUrl == null ? join(config.dataDir ?? ".data", "pglite") : undefined,
      schema: config.databaseSchema,
    });
    cleanups.push(() => database.close());
    await migrateToLatest(database.db);
    const adminToken = await resolveAdminToken(config);
    const auth = createAuthService({ db: database.db, adminToken });
    const followPolicy = createFollowPolicy({
      db: database.db,
      acceptance: config.followerAcceptance,
      allowlist: config.followerAllowlist,
      blocklist: config.blockedActors,
    });

    const queue =
      config.redisUrl != null
        ? createBullMqJobQueue({ url: config.redisUrl, prefix: config.redisPrefix })
        : createEmbeddedJobQueue(database.db);
    const observeJob = options.onJobEnqueued;
    const jobs: JobQueue =
      observeJob == null
        ? queue
        : {
            kind: queue.kind,
            enqueue: async (name, jobId, data, enqueueOptions) => {
              observeJob(name, jobId);
              await queue.enqueue(name, jobId, data, enqueueOptions);
            },
            process: (name, handler, processOptions) =>
              queue.process(name, handler, processOptions),
            depth: (name) => queue.depth(name),
            ping: () => queue.ping(),
            close: () => queue.close(),
          };
    cleanups.push(() => jobs.close());
    metrics = createClusterMetrics({ db: database.db, jobs });
    let metricsPort: number | undefined;
    if (!roles.web && config.metricsPort != null) {
      const registry = metrics.registry;
      const expected = createHash("sha256").update(adminToken).digest();
      const metricsServer = createServer((req, res) => {
        const header = req.headers.authorization ?? "";
        const given = createHash("sha256")
          .update(header.startsWith("Bearer ") ? header.slice(7) : "")
          .digest();
        if (req.method !== "GET" || req.url?.split("?")[0] !== "/metrics") {
          res.writeHead(404, { "content-type": "text/plain" }).end("Only GET /metrics here.\n");
        } else if (!timingSafeEqual(given, expected)) {
          res
            .writeHead(401, { "www-authenticate": 'Bearer realm="taskweb"' })
            .end("Send the cluster's API token as 'Authorization: Bearer <token>'.\n");
        } else {
          registry.metrics().then(
            (text) => res.writeHead(200, { "content-type": registry.contentType }).end(text),
            () => res.writeHead(500).end(),
          );
        }
      });
      metricsPort = await listen(metricsServer, config.host, config.metricsPort);
      cleanups.push(
        () =>
          new Promise<void>((resolve) => {
            metricsServer.close(() => resolve());
            metricsServer.closeAllConnections();
          }),
      );
    }
    const tasks = createTaskService({
      db: database.db,
      jobs,
      urls,
      onTaskGroupResolved: (taskGroupId) => {
        logger.info("Task group {taskGroupId} resolved.", { taskGroupId });
        emit({ type: "task-group-resolved", taskGroupId });
        offers.groupResolved(taskGroupId).catch((error: unknown) =>
          logger.warn("Offer callback of {taskGroupId} not queued: {error}", {
            taskGroupId,
            error: String(error),
          }),
        );
      },
    });
    const secrets = createSecretStore({
      db: database.db,
      cipher: await resolveSecretsCipher(config),
    });
    await checkSecretsKey(secrets);

    const hooks = createHookService({
      db: database.db,
      jobs,
      tasks,
      urls,
      onFired: (fire) => {
        logger.info("Hook {hookId} fired: task group {taskGroupId}.", fire);
        emit({ type: "hook-fired", ...fire });
      },
    });
    const offers = createOfferService({
      db: database.db,
      tasks,
      jobs,
      urls,
      context: () => fed.context(),
      commit: (change) => fed.commit(change),
      policy: (actorId) => auth.satisfies(`actor:${actorId}`, [OFFER_ACCEPT_SCOPE]),
      onOutcome: (outcome) => emit({ type: "offer", outcome }),
    });
    const relays = createRelayService({ db: database.db, urls });
    const admitted = createAdmittedBodies();
    // The inbox and catch-up paging apply activities the same way: hooks fire, relays
    // re-publish, offered groups' resolutions count, whichever way an activity came.
    const inboxOptions = {
      db: database.db,
      tasks,
      hooks,
      offers,
      relays,
      relayLoaders: () => loaders(),
      admittedBody: (id: string) => admitted.take(id),
      onOutcome: (outcome: InboxOutcome) => emit({ type: "inbox", outcome }),
    };
    const inbox = createTaskwebInbox(inboxOptions);
    // Every outbound request of this process goes through this one checked fetch.
    const allowlist = parseAllowlist(config.privateAddressAllowlist);
    const outbound = createOutboundFetch({
      allowlist,
      userAgent: `taskweb/${VERSION} (+${urls.actor})`,
      ...(options.onOutboundRequest != null ? { onRequest: options.onOutboundRequest } : {}),
    });
    const documentLoader = createCheckedDocumentLoader(outbound);
    const contextLoader = createCheckedDocumentLoader(outbound, { acceptPlainJson: true });
    const loaders = async () => {
      const ctx = fed.context();
      return {
        documentLoader: await ctx.getDocumentLoader({ identifier: config.name }),
        contextLoader: ctx.contextLoader,
      };
    };
    const applyActivity = createActivityApplier(inboxOptions);
    const catchUpOrigin = async (actorId: string) => {
      await jobs.enqueue(CATCH_UP_QUEUE, actorId, { actorId }, { attempts: 1 });
      const pending = await tasks.unresolvedRemoteDependencies(new URL(actorId).origin);
      for (const url of pending) await jobs.enqueue(QUEUES.dereference, url, { url });
    };
    const delivery = createDelivery({
      db: database.db,
      jobs,
      policy: config.delivery,
      send: async (activity, inbox, source) => {
        const outcome = await fed.deliver(activity, inbox, source);
        let peer: string;
        try {
          peer = new URL(inbox).host;
        } catch {
          peer = "invalid";
        }
        metrics?.delivery(
          peer,
          outcome.ok
            ? "delivered"
            : outcome.status === 404 || outcome.status === 410
              ? "gone"
              : outcome.status != null
                ? "http-error"
                : outcome.refused === true
                  ? "refused"
                  : "unreachable",
        );
        return outcome;
      },
    });
    // Deliveries are POSTed through a checked fetch of their own: the same address policy,
    // not counted among the fetches `onOutboundRequest` reports.
    const deliveryFetch = createOutboundFetch({
      allowlist,
      userAgent: `taskweb/${VERSION} (+${urls.actor})`,
    });
    // Assigned below; the Follow handler only runs once requests or the queue are started.
    let onFollowed = (_inbox: string): Promise<void> => Promise.resolve();
    const fed: ClusterFederation = createClusterFederation({
      db: database.db,
      kv: createKyselyKvStore(database.db),
      // Every activity is now sent from the delivery table; this queue only drains messages
      // an earlier version left in it.
      queue: createFedifyMessageQueue(jobs, "fedify-outbox", {
        // A delivery is signed with the keys current when it is sent: one queued before a
        // key rotation still verifies after the replaced key's grace period has ended.
        prepare: async (message) => {
          const m = message as { type?: unknown; keys?: { keyId?: unknown }[] };
          if (
            m.type !== "outbox" ||
            !Array.isArray(m.keys) ||
            !m.keys.every((k) => typeof k.keyId === "string" && k.keyId.startsWith(urls.actor))
          ) {
            return message;
          }
          return { ...m, keys: await fed.signingKeys() };
        },
      }),
      keyGraceMs: config.keyGraceMs,
      urls,
      name: config.name,
      version: VERSION,
      loaders: {
        documentLoader,
        contextLoader,
        authenticated: (identity) =>
          createCheckedDocumentLoader(outbound, { sign: signerFor(identity) }),
      },
      isDeliverable: (url) => isPermittedUrl(url, allowlist),
      deliveries: delivery,
      deliveryFetch,
      manuallyStartQueue: true,
      onActivity: inbox,
      onFollowAccepted: catchUpOrigin,
      onFollowed: (inbox) => onFollowed(inbox),
      followPolicy,
      onAnswer: async (kind, actorId, objectId, detail) => {
        await offers.answered(kind, actorId, objectId, detail);
      },
      ...(options.deliveryRetry != null ? { deliveryRetry: options.deliveryRetry } : {}),
      ...(options.tracerProvider != null ? { tracerProvider: options.tracerProvider } : {}),
      // Counted, not emitted as events: deliveries are per process and frequent.
      onDelivery: (attempt: DeliveryAttempt) => {
        metrics?.delivery(attempt.peer, attempt.outcome);
        if (attempt.outcome !== "delivered") {
          logger.info("Delivery to {peer} failed ({outcome}{status}), attempt {attempt}.", {
            peer: attempt.peer,
            outcome: attempt.outcome,
            status: attempt.status != null ? ` ${attempt.status}` : "",
            attempt: attempt.attempt,
          });
        }
      },
    });

    onFollowed = (inbox) => delivery.clearGone(inbox);

    let app: Express | undefined;
    if (server != null) {
      const keyCache = createMemoryKeyCache();
      // Budgets shared by every web process of the cluster: on Redis when the cluster has it.
      let limits: RateLimitStore = { kind: "memory" };
      if (config.redisUrl != null) {
        const client = new Redis(config.redisUrl, { enableOfflineQueue: false });
        client.on("error", () => {}); // the budgets fall back to memory until it answers
        cleanups.push(() => {
          client.disconnect();
          return Promise.resolve();
        });
        limits = { kind: "redis", client, prefix: config.redisPrefix };
      }
      // The guard's key fetches: a key that fails to verify is fetched again at most once
      // per interval, however many requests (to however many processes) name it.
      const keyLoader = createRefetchLimiter(documentLoader, {
        intervalMs: config.keyRefetchIntervalMs,
        store: limits,
      });
      const ctx = fed.context();
      app = createApp({
        db: database.db,
        jobs,
        tasks,
        secrets,
        hooks,
        offers,
        relays,
        urls,
        name: config.name,
        version: VERSION,
        auth,
        followPolicy,
        federation: fed,
        delivery,
        databaseKind: database.kind,
        metrics,
        guard: {
          documentLoader: () => keyLoader,
          contextLoader: ctx.contextLoader,
          keyCache,
          isBlocked: (actorId) => followPolicy.isBlocked(actorId),
          onRefused: (reason) => emit({ type: "inbox-refused", reason }),
          onIgnored: (reason) => emit({ type: "inbox-ignored", reason }),
          originLimiter: createRateLimiter({
            name: "inbox-origin",
            ...config.inboxRateLimit,
            store: limits,
          }),
          refusedLimiter: createRateLimiter({
            name: "inbox-refused",
            ...config.inboxRefusedRateLimit,
            store: limits,
          }),
          fetchBudget: config.inboxFetchBudget,
          onVerified: () => metrics?.inboxVerification("verified"),
          onAdmitted: (json) => admitted.remember(json),
        },
      });
      server.on("request", app);
    }

    const reconcile = async () => {
      await tasks.runEffects(await tasks.recoverEffects());
      await delivery.recover();
      const followees = await database.db
        .selectFrom("following")
        .select("actor_id")
        .where("state", "=", "accepted")
        .execute();
      for (const f of followees) {
        // One try: the timer tries again, and a followee that is down would fill the log.
        await jobs.enqueue(CATCH_UP_QUEUE, f.actor_id, { actorId: f.actor_id }, { attempts: 1 });
      }
      await hooks.recover();
      await offers.recover();
    };

    if (roles.worker) {
      const consumers: JobConsumer[] = [];
      cleanups.push(async () => {
        await Promise.all(consumers.map((c) => c.close()));
      });
      consumers.push(
        await startWorker({
          db: database.db,
          jobs,
          tasks,
          secrets,
          urls,
          concurrency: config.workerConcurrency,
          claimLeaseMs: config.claimLeaseMs,
          shutdownGraceMs: config.shutdownGraceMs,
          fetch: outbound,
          signer: async () => {
            const rsa = (await fed.signingKeys()).find((k) => k.privateKey.kty === "RSA");
            if (rsa == null) throw new Error(`${urls.actor} has no RSA key to sign fetches with.`);
            const privateKey = await importJwk(rsa.privateKey, "private");
            return signerFor({ keyId: new URL(rsa.keyId), privateKey }, "rfc9421");
          },
          workDir: config.workDir,
          loaders,
          onRunEvent: (e) => emit({ type: "run", ...e }),
        }),
      );
      consumers.push(
        await jobs.process<{ activityId: string }>(
          QUEUES.publish,
          async (job) => {
            await delivery.fanOut(job.data.activityId);
            emit({ type: "published", activityId: job.data.activityId });
          },
          { concurrency: 4 },
        ),
      );
      consumers.push(
        await jobs.process<DeliveryJob>(DELIVERY_QUEUE, (job) => delivery.handle(job.data), {
          concurrency: 8,
        }),
      );
      consumers.push(
        await jobs.process<{ url: string }>(
          QUEUES.dereference,
          async (job) => {
            const result = await dereferenceRemoteTask(job.data.url, await loaders(), tasks);
            // A task that does not exist yet, or a cluster that is down, is tried again by the
            // periodic reconcile and after the next Accept; the activity usually arrives first.
            if (!result.ok)
              logger.info("Dereference of {url} did not apply: {detail}", {
                url: job.data.url,
                detail: result.detail,
              });
          },
          { concurrency: 4 },
        ),
      );
      consumers.push(
        await jobs.process<{ actorId: string }>(
          CATCH_UP_QUEUE,
          async (job) => {
            await catchUpOutbox(job.data.actorId, {
              db: database.db,
              loaders: await loaders(),
              apply: applyActivity,
            });
          },
          {
            concurrency: 2,
            onFailed: (job, error) =>
              logger.info("Catch-up on {job} failed: {error}", {
                job: job.id,
                error: String(error),
              }),
          },
        ),
      );
      consumers.push(
        await jobs.process<{ hookId: string; coalesceKey: string }>(
          HOOK_QUEUE,
          async (job) => {
            await hooks.closeWindow(job.data.hookId, job.data.coalesceKey);
          },
          { concurrency: 2 },
        ),
      );
      consumers.push(
        await jobs.process<{ taskId: string }>(
          JOIN_QUEUE,
          async (job) => {
            await tasks.closeJoin(job.data.taskId);
          },
          { concurrency: 2 },
        ),
      );
      consumers.push(
        await jobs.process<{ taskGroupId: string }>(
          OFFER_CALLBACK_QUEUE,
          async (job) => {
            await offers.sendCallback(job.data.taskGroupId);
          },
          { concurrency: 2 },
        ),
      );
      const deliveries = new AbortController();
      const delivering = fed.federation.startQueue(null, {
        signal: deliveries.signal,
        queue: "outbox",
      });
      cleanups.push(async () => {
        deliveries.abort();
        await delivering.catch(() => {});
      });

      const maintenance = setInterval(() => {
        void (async () => {
          await tasks.reapExpiredClaims();
          await tasks.resolveDeadlines();
        })().catch((error: unknown) =>
          logger.warn("Maintenance failed: {error}", { error: String(error) }),
        );
      }, options.maintenanceIntervalMs ?? 5000);
      // Dedupe records older than the retention go once an hour (and once at start).
      const pruneDedupe = () => {
        pruneProcessedActivities(database.db, config.dedupeRetentionDays)
          .then((n) => {
            if (n > 0) logger.info("Pruned {n} processed-activity ids past retention.", { n });
          })
          .catch((error: unknown) =>
            logger.warn("Dedupe pruning failed: {error}", { error: String(error) }),
          );
      };
      pruneDedupe();
      const pruner = setInterval(pruneDedupe, 3600_000);
      const reconciler = setInterval(() => {
        reconcile().catch((error: unknown) =>
          logger.warn("Reconcile failed: {error}", { error: String(error) }),
        );
      }, config.reconcileIntervalMs);
      cleanups.push(() => {
        clearInterval(maintenance);
        clearInterval(reconciler);
        clearInterval(pruner);
        return Promise.resolve();
      });
      await reconcile();
    }

    logger.info("Cluster {name} started at {actor} (roles: {roles}).", {
      name: config.name,
      actor: urls.actor,
      roles: Object.entries(roles)
        .filter(([, on]) => on)
        .map(([r]) => r)
        .join(", "),
    });

    let stopped: Promise<void> | undefined;
    return {
      config,
      urls,
      adminToken,
      database,
      jobs,
      tasks,
      secrets,
      hooks,
      offers,
      relays,
      auth,
      followPolicy,
      app,
      federation: fed,
      port,
      metricsPort,
      reconcile,
      stop: () => (stopped ??= cleanup()),
    };
  } catch (error) {
    await cleanup();
    throw error;
  }
}
