/**
 * The worker: takes dispatched runs from the queue, claims each in the database (so a run
 * never executes twice at once), decrypts the secrets it names, fetches its inputs and
 * verifies their digests, runs the command with the secrets in its environment and
 * redacted from its log, uploads what it left in its artifacts folder, and resolves the run.
 * @module
 */
import type { OutboundFetch } from "../outbound/checked-fetch.ts";
import { createCheckedDocumentLoader } from "../outbound/document-loader.ts";
import { createHash, randomUUID } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir, hostname } from "node:os";
import { join, relative, sep } from "node:path";
import type { DocumentLoader } from "@fedify/fedify";
import { getLogger, withContext } from "@logtape/logtape";
import type { Kysely } from "kysely";
import { parseArtifactObject } from "../../protocol/index.ts";
import type { ClusterUrls } from "../federation/cluster-urls.ts";
import { artifactReport, compactWithTaskwebContext } from "../federation/inbox.ts";
import type { JobConsumer, JobQueue } from "../queue/job-queue.ts";
import type { DatabaseSchema } from "../store/schema.ts";
import type { SecretStore } from "../domain/secrets.ts";
import {
  QUEUES,
  type NewArtifact,
  type RunOutcome,
  type TaskService,
} from "../domain/task-service.ts";
import { DigestMismatchError, downloadVerified, NotAuthorizedError } from "./download.ts";
import { runCommand } from "./run-command.ts";

const logger = getLogger(["taskweb", "worker"]);

/** Limits on what one run may upload. */
export const ARTIFACT_LIMITS = { maxFiles: 1000, maxTotalBytes: 256 * 1024 * 1024 } as const;

const MEDIA_TYPES: Record<string, string> = {
  ".txt": "text/plain",
  ".log": "text/plain",
  ".json": "application/json",
  ".html": "text/html",
  ".csv": "text/csv",
  ".xml": "application/xml",
  ".gz": "application/gzip",
  ".tgz": "application/gzip",
  ".zip": "application/zip",
  ".tar": "application/x-tar",
};

function mediaTypeOf(name: string): string {
  const dot = name.lastIndexOf(".");
  return (
    (dot >= 0 ? MEDIA_TYPES[name.slice(dot).toLowerCase()] : undefined) ??
    "application/octet-stream"
  );
}

/** Options for {@link startWorker}. */
export interface WorkerOptions {
  readonly db: Kysely<DatabaseSchema>;
  readonly jobs: JobQueue;
  readonly tasks: TaskService;
  /** Where the secrets that tasks name in `payload.secrets` are decrypted from. */
  readonly secrets: SecretStore;
  readonly urls: ClusterUrls;
  readonly concurrency: number;
  readonly claimLeaseMs: number;
  /**
   * On shutdown, how long running tasks may go on before they are stopped and handed back
   * to be retried by another worker.
   */
  readonly shutdownGraceMs: number;
  /** The cluster's checked fetch; artifact downloads go through it. */
  readonly fetch: OutboundFetch;
  /**
   * The cluster's request signer (its RSA key, RFC 9421): remote inputs (the artifact
   * document and its content, resumes included) are fetched signed, towards the artifact's
   * own origin only, so that a private artifact of a cluster this one follows is served.
   * Without it, inputs are fetched unsigned.
   */
  readonly signer?: () => Promise<(request: Request) => Promise<Request>>;
  readonly workDir: string | undefined;
  readonly loaders: () => Promise<{
    documentLoader: DocumentLoader;
    contextLoader: DocumentLoader;
  }>;
  /** Called as runs start and end (progress, tests, demo narration). */
  readonly onRunEvent?: (event: {
    taskId: string;
    runId: number;
    event: "started" | "resolved";
    state?: string;
  }) => void;
}

/** `fetch`, with a 401 or 403 answer thrown as {@link NotAuthorizedError}. */
function refusingUnauthorized(fetch: OutboundFetch): OutboundFetch {
  return async (url, init) => {
    const response = await fetch(url, init);
    if (response.status === 401 || response.status === 403) {
      const detail = (await response.text().catch(() => "")).slice(0, 300);
      throw new NotAuthorizedError(String(url), response.status, detail);
    }
    return response;
  };
}

/** Collects a run's artifacts folder. */
async function collectArtifacts(dir: string): Promise<NewArtifact[] | string> {
  const out: NewArtifact[] = [];
  let total = 0;
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  for (const entry of entries) {
    if (!entry.isFile()) continue;
    const full = join(entry.parentPath, entry.name);
    const name = relative(dir, full).split(sep).join("/");
    const info = await stat(full);
    total += info.size;
    if (out.length >= ARTIFACT_LIMITS.maxFiles || total > ARTIFACT_LIMITS.maxTotalBytes) {
      return `The artifacts folder exceeds ${ARTIFACT_LIMITS.maxFiles} files or ${ARTIFACT_LIMITS.maxTotalBytes} bytes.`;
    }
    const content = await readFile(full);
    out.push({
      name,
      mediaType: mediaTypeOf(name),
      content,
      sha256: createHash("sha256").update(content).digest("hex"),
    });
  }
  return out;
}

/** How often a running task's log is written to the database for live readers. */
export const LIVE_LOG_FLUSH_MS = 300;

/**
 * Keeps a running task's log in its run row while it runs, so that any web process can
 * stream it. Only the first {@link LIVE_LOG_MAX_CHARS} characters are shown live; the run's
 * final log (start and end kept) replaces it when the run resolves.
 */
function createLiveLog(
  db: Kysely<DatabaseSchema>,
  taskId: string,
  runId: number,
  workerId: string,
) {
  let text = "";
  let dirty = false;
  let writing: Promise<void> = Promise.resolve();
  const flush = () => {
    if (!dirty) return;
    dirty = false;
    const snapshot = text;
    writing = writing
      .then(async () => {
        await db
          .updateTable("runs")
          .set({ log: snapshot })
          .where("task_id", "=", taskId)
          .where("run_id", "=", runId)
          .where("worker_id", "=", workerId)
          .where("state", "=", "running")
          .execute();
      })
      .catch((error: unknown) =>
        logger.warn("Could not save the live log: {error}", { error: String(error) }),
      );
  };
  const timer = setInterval(flush, LIVE_LOG_FLUSH_MS);
  return {
    append(chunk: string): void {
      if (text.length >= LIVE_LOG_MAX_CHARS) return;
      text += chunk.slice(0, LIVE_LOG_MAX_CHARS - text.length);
      dirty = true;
    },
    async close(): Promise<void> {
      clearInterval(timer);
      await writing;
    },
  };
}

/** Characters of a running task's log shown live. */
export const LIVE_LOG_MAX_CHARS = 512 * 1024;

/** Why a running task was stopped. */
const SHUTDOWN = "worker-shutdown";
const CLAIM_LOST = "claim-lost";

/** Starts consuming dispatched runs. */
export async function startWorker(options: WorkerOptions): Promise<JobConsumer> {
  const { db, tasks, urls } = options;
  const workerId = `${hostname()}/${process.pid}/${randomUUID().slice(0, 8)}`;
  /** Runs in progress in this process, by `taskId/runId`. */
  const active = new Map<string, AbortController>();

  async function fetchInputs(taskId: string, inputsDir: string): Promise<void> {
    const inputs = await db
      .selectFrom("task_inputs")
      .selectAll()
      .where("task_id", "=", taskId)
      .execute();
    const sign = inputs.length > 0 ? await options.signer?.() : undefined;
    for (const input of inputs) {
      const dest = join(inputsDir, ...input.path.split("/"));
      const localTask = urls.localTaskId(input.task_url);
      if (localTask != null) {
        const name = decodeURIComponent(
          input.artifact_url.slice(`${input.task_url}/artifacts/`.length),
        );
        const row = await db
          .selectFrom("artifacts")
          .select(["content", "sha256"])
          .where("task_id", "=", localTask)
          .where("name", "=", name)
          .executeTakeFirst();
        if (row == null) throw new Error(`Input ${input.artifact_url} does not exist.`);
        await mkdir(join(dest, ".."), { recursive: true });
        await writeFile(dest, row.content);
        await consumed(input, row.sha256);
        continue;
      }
      let meta = await db
        .selectFrom("remote_artifacts")
        .selectAll()
        .where("artifact_url", "=", input.artifact_url)
        .executeTakeFirst();
      if (meta == null) {
        // Not announced to us (we missed it): ask the artifact's own cluster.
        const loaders = await options.loaders();
        const documentLoader =
          sign != null
            ? createCheckedDocumentLoader(refusingUnauthorized(options.fetch), { sign })
            : loaders.documentLoader;
        const { document } = await documentLoader(input.artifact_url);
        const parsed = parseArtifactObject(
          await compactWithTaskwebContext(document, loaders.contextLoader),
        );
        if (!parsed.ok || parsed.value.id !== input.artifact_url) {
          throw new Error(`${input.artifact_url} did not dereference to that artifact.`);
        }
        const report = artifactReport(parsed.value.attributedTo, parsed.value);
        await db.transaction().execute((trx) => tasks.applyRemoteArtifact(report, trx));
        meta = await db
          .selectFrom("remote_artifacts")
          .selectAll()
          .where("artifact_url", "=", input.artifact_url)
          .executeTakeFirstOrThrow();
      }
      await downloadVerified(meta.content_url, dest, {
        expected: { sha256: meta.sha256, size: Number(meta.size) },
        fetch: options.fetch,
        ...(sign != null ? { sign } : {}),
      });
      await consumed(input, meta.sha256);
    }
  }

  /** Records the digest an input's bytes were verified against, for the task's `inputs`. */
  async function consumed(input: { task_id: string; path: string }, sha256: string) {
    await db
      .updateTable("task_inputs")
      .set({ sha256 })
      .where("task_id", "=", input.task_id)
      .where("path", "=", input.path)
      .execute();
  }

  /** Runs a task's run; every log line written meanwhile carries its task and run ids. */
  function execute(taskId: string, runId: number): Promise<void> {
    return withContext({ taskId, runId, workerId }, () => executeRun(taskId, runId));
  }

  async function executeRun(taskId: string, runId: number): Promise<void> {
    const claim = await tasks.claimRun(taskId, runId, workerId, options.claimLeaseMs);
    if (claim == null) return; // Already claimed, resolved or gone: the queue delivered twice.
    logger.info("Running {taskId}/{runId}.", { taskId, runId });
    options.onRunEvent?.({ taskId, runId, event: "started" });
    const abort = new AbortController();
    const key = `${taskId}/${runId}`;
    active.set(key, abort);
    const heartbeat = setInterval(
      () => {
        tasks.renewClaim(taskId, runId, workerId, options.claimLeaseMs).then(
          (held) => {
            if (!held) abort.abort(CLAIM_LOST);
          },
          (error: unknown) =>
            logger.warn("Could not renew claim: {error}", { error: String(error) }),
        );
      },
      Math.max(500, Math.floor(options.claimLeaseMs / 3)),
    );
    const root = await mkdtemp(join(options.workDir ?? tmpdir(), `taskweb-${taskId}-`));
    let outcome: RunOutcome;
    try {
      const inputsDir = join(root, "inputs");
      const artifactsDir = join(root, "artifacts");
      const cwd = join(root, "work");
      await Promise.all([mkdir(inputsDir), mkdir(artifactsDir), mkdir(cwd)]);
      const { payload } = claim.definition;
      if (payload == null) {
        // Breakpoint tasks are never dispatched; a job for one has nothing to run.
        await tasks.resolveRun(taskId, runId, workerId, {
          state: "exception",
          reason: "malformed-payload",
          exitCode: null,
          log: "[taskweb] this task has no command to run (it is a breakpoint task).\n",
          artifacts: [],
        });
        return;
      }
      const secrets = await options.secrets.resolveForRun(payload.secrets ?? {});
      if (!secrets.ok) {
        logger.warn("Secrets of {taskId}/{runId} unavailable: {reason}", {
          taskId,
          runId,
          reason: secrets.reason,
        });
        outcome = {
          state: "exception",
          reason: secrets.reason,
          exitCode: null,
          log: secrets.log,
          artifacts: [],
        };
        await tasks.resolveRun(taskId, runId, workerId, outcome);
        options.onRunEvent?.({ taskId, runId, event: "resolved", state: outcome.state });
        return;
      }
      try {
        await fetchInputs(taskId, inputsDir);
      } catch (error) {
        const digest = error instanceof DigestMismatchError;
        const refused = error instanceof NotAuthorizedError;
        logger.warn("Inputs of {taskId} failed: {error}", { taskId, error: String(error) });
        outcome = {
          state: "exception",
          reason: digest ? "input-digest-mismatch" : "resource-unavailable",
          exitCode: null,
          log: `[taskweb] ${digest ? "refused an input whose digest does not match" : refused ? "input not authorized" : "could not fetch inputs"}: ${
            error instanceof Error ? error.message : String(error)
          }\n`,
          artifacts: [],
        };
        await tasks.resolveRun(taskId, runId, workerId, outcome);
        return;
      }
      const live = createLiveLog(db, taskId, runId, workerId);
      const result = await runCommand({
        command: payload.command,
        env: {
          PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
          HOME: cwd,
          LANG: "C.UTF-8",
          ...payload.env,
          ...secrets.env,
          TASKWEB_TASK_ID: taskId,
          TASKWEB_RUN_ID: String(runId),
          TASKWEB_TASK_URL: urls.task(taskId),
          TASKWEB_INPUTS: inputsDir,
          TASKWEB_ARTIFACTS: artifactsDir,
        },
        cwd,
        timeoutMs: payload.maxRunTime * 1000,
        signal: abort.signal,
        onOutput: live.append,
        redact: secrets.values,
      });
      await live.close();
      if (result.aborted) {
        if (abort.signal.reason === SHUTDOWN) {
          await tasks.handBackRun(taskId, runId, workerId);
          logger.info("Handed {taskId}/{runId} back: this worker is shutting down.", {
            taskId,
            runId,
          });
          options.onRunEvent?.({ taskId, runId, event: "resolved", state: "exception" });
        } else {
          // The claim was lost; whoever holds it now resolves the run.
          logger.warn("Lost the claim on {taskId}/{runId}; stopped it.", { taskId, runId });
        }
        return;
      }
      const artifacts = result.exitCode === 0 ? await collectArtifacts(artifactsDir) : [];
      if (typeof artifacts === "string") {
        outcome = {
          state: "failed",
          reason: "failed",
          exitCode: result.exitCode,
          log: `${result.log}\n[taskweb] ${artifacts}\n`,
          artifacts: [],
        };
      } else if (result.spawnError != null) {
        outcome = {
          state: "exception",
          reason: "malformed-payload",
          exitCode: null,
          log: result.log,
          artifacts: [],
        };
      } else if (result.exitCode === 0 && !result.timedOut) {
        outcome = {
          state: "completed",
          reason: "completed",
          exitCode: 0,
          log: result.log,
          artifacts,
        };
      } else {
        outcome = {
          state: "failed",
          reason: "failed",
          exitCode: result.exitCode,
          log: result.log,
          artifacts: [],
        };
      }
      await tasks.resolveRun(taskId, runId, workerId, outcome);
      options.onRunEvent?.({ taskId, runId, event: "resolved", state: outcome.state });
    } finally {
      clearInterval(heartbeat);
      active.delete(key);
      await rm(root, { recursive: true, force: true });
    }
  }

  const consumer = await options.jobs.process<{ taskId: string; runId: number }>(
    QUEUES.tasks,
    async (job) => {
      await execute(job.data.taskId, job.data.runId);
    },
    {
      concurrency: options.concurrency,
      onFailed: (job, error) =>
        logger.error("Run job {id} failed: {error}", { id: job.id, error: String(error) }),
    },
  );
  return {
    // Graceful shutdown: take no new runs, let running ones finish within the grace period,
    // then stop the rest and hand them back so that another worker retries them.
    async close() {
      const timer = setTimeout(() => {
        for (const abort of active.values()) abort.abort(SHUTDOWN);
      }, options.shutdownGraceMs);
      try {
        await consumer.close();
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
