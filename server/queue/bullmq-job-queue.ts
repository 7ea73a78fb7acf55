/**
 * The {@link JobQueue} on BullMQ and Redis, for clusters whose web and worker processes
 * run on several machines.
 *
 * - **Ids.** BullMQ job ids may not contain `:` (nor be integers), and taskweb ids are
 *   URLs. The BullMQ id is a hash of the caller's id; the original id travels in the job's
 *   data and is what handlers see.
 * - **Dedupe.** BullMQ ignores an add whose id exists, which gives the port's "no-op while
 *   waiting, delayed or running". Jobs are removed as soon as they complete or fail for
 *   good, so the same id can be enqueued again afterwards. Running a completed job again
 *   must therefore be harmless: handlers read the database, which is the source of truth,
 *   and act only on what is still to do.
 * - **Connections.** Queues share one ioredis connection; each worker has its own, with
 *   `maxRetriesPerRequest: null` as BullMQ requires for its blocking reads.
 * - **Failures.** Worker and connection errors are reported, never thrown: a Redis outage
 *   must not kill the process. BullMQ retries the commands once Redis is back.
 * @module
 */
import { createHash } from "node:crypto";
import { once } from "node:events";
import { Queue, UnrecoverableError, Worker, type Job as BullJob } from "bullmq";
import { Redis } from "ioredis";
import type {
  EnqueueOptions,
  Job,
  JobConsumer,
  JobHandler,
  JobQueue,
  JsonValue,
  ProcessOptions,
} from "./job-queue.ts";
import { checkEnqueueOptions, JobQueueClosedError } from "./job-queue.ts";

/** Options for {@link createBullMqJobQueue}. Give exactly one of `url` and `connection`. */
export interface BullMqJobQueueOptions {
  /** A `redis://` URL; the queue opens its connections and closes them in `close()`. */
  readonly url?: string | undefined;
  /**
   * An ioredis client to enqueue through. The caller keeps ownership and closes it after
   * the queue; workers open duplicates of it, which the queue closes.
   */
  readonly connection?: Redis | undefined;
  /**
   * Prefix of every Redis key this queue touches, so that clusters (and test runs) that
   * share a Redis never see each other's jobs.
   * @defaultValue `"taskweb"`
   */
  readonly prefix?: string | undefined;
  /**
   * Delay before the first retry; each further retry doubles it. Half of it is jitter,
   * so that jobs failing together do not retry together.
   * @defaultValue 1000
   */
  readonly backoffMs?: number | undefined;
  /**
   * How long `enqueue()` and `depth()` wait for Redis before rejecting. BullMQ holds
   * commands until Redis is reachable; this bounds how long a request can hang on that.
   * A timed-out enqueue may still land later, which is harmless: ids dedupe.
   * @defaultValue 10000
   */
  readonly timeoutMs?: number | undefined;
  /**
   * Receives errors that no caller can catch: worker, queue and connection errors, and
   * `onFailed` callbacks that threw.
   * @defaultValue writes the error to `console.error`
   */
  readonly onError?: ((error: unknown) => void) | undefined;
}

/** What a BullMQ job carries: the caller's id (the BullMQ id is its hash) and data. */
interface Envelope {
  readonly id: string;
  readonly data: JsonValue;
}

/**
 * The BullMQ job id for a taskweb job id: 160 bits of SHA-256, prefixed by a letter so it
 * is never taken for an integer.
 */
export function bullMqJobId(jobId: string): string {
  return `j${createHash("sha256").update(jobId).digest("hex").slice(0, 40)}`;
}

// BullMQ rejects ':' in queue names; escaping keeps distinct names distinct.
function bullMqQueueName(queue: string): string {
  return queue.replaceAll("%", "%25").replaceAll(":", "%3A");
}

/**
 * Creates a {@link JobQueue} on BullMQ. While Redis is unreachable, connection errors go
 * to `onError` and ioredis keeps reconnecting; `ping()` tells whether Redis answers now.
 */
export function createBullMqJobQueue(options: BullMqJobQueueOptions): JobQueue {
  if ((options.url == null) === (options.connection == null)) {
    throw new TypeError("createBullMqJobQueue needs exactly one of `url` and `connection`.");
  }
  const prefix = options.prefix ?? "taskweb";
  const backoffMs = options.backoffMs ?? 1000;
  if (!Number.isFinite(backoffMs) || backoffMs <= 0) {
    throw new RangeError(`backoffMs must be a finite number > 0, got ${backoffMs}.`);
  }
  const timeoutMs = options.timeoutMs ?? 10_000;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new RangeError(`timeoutMs must be a finite number > 0, got ${timeoutMs}.`);
  }
  const report =
    options.onError ?? ((error: unknown) => console.error("taskweb BullMQ job queue:", error));
  const ownsConnection = options.url != null;
  // Without an offline queue, an enqueue while Redis is away fails at once instead of
  // hanging the request that made it (BullMQ's advice for producers).
  const connection =
    options.connection ?? new Redis(options.url as string, { enableOfflineQueue: false });
  if (ownsConnection) connection.on("error", report);

  const queues = new Map<string, Queue>();
  const workers = new Set<BullMqConsumer>();
  let closed: Promise<void> | undefined;

  function queueFor(name: string): Queue {
    if (closed != null) throw new JobQueueClosedError(name);
    let queue = queues.get(name);
    if (queue == null) {
      queue = new Queue(bullMqQueueName(name), { connection, prefix });
      queue.on("error", report);
      queues.set(name, queue);
    }
    return queue;
  }

  function workerConnection(): Redis {
    const redis =
      options.url != null
        ? new Redis(options.url, { maxRetriesPerRequest: null })
        : connection.duplicate({ maxRetriesPerRequest: null });
    redis.on("error", report);
    return redis;
  }

  return {
    kind: "bullmq",
    async enqueue(name, jobId, data, enqueueOptions: EnqueueOptions = {}) {
      const { delayMs, attempts, priority } = checkEnqueueOptions(enqueueOptions);
      const envelope: Envelope = { id: jobId, data };
      const adding = queueFor(name).add(name, envelope, {
        jobId: bullMqJobId(jobId),
        delay: Math.round(delayMs),
        attempts,
        ...(priority > 0 ? { priority } : {}),
        backoff: { type: "exponential", delay: backoffMs, jitter: 0.5 },
        removeOnComplete: true,
        removeOnFail: true,
      });
      await withTimeout(adding, timeoutMs, `enqueue to ${JSON.stringify(name)}`);
    },
    async process<T = unknown>(
      name: string,
      handler: JobHandler<T>,
      processOptions: ProcessOptions = {},
    ): Promise<JobConsumer> {
      if (closed != null) throw new JobQueueClosedError(name);
      const concurrency = processOptions.concurrency ?? 1;
      if (!Number.isInteger(concurrency) || concurrency < 1) {
        throw new RangeError(`concurrency must be an integer ≥ 1, got ${concurrency}.`);
      }
      const consumer = new BullMqConsumer(
        name,
        handler as JobHandler,
        { ...processOptions, concurrency },
        workerConnection(),
        prefix,
        report,
        () => workers.delete(consumer),
      );
      workers.add(consumer);
      return consumer;
    },
    async depth(name) {
      const counting = queueFor(name).getJobCountByTypes("waiting", "delayed", "prioritized");
      return await withTimeout(counting, timeoutMs, `depth of ${JSON.stringify(name)}`);
    },
    async ping() {
      // A connection still opening gets its chance; one that lost Redis fails at once,
      // since commands would wait until ioredis reconnects.
      if (connection.status === "connecting" || connection.status === "connect") {
        await once(connection, "ready", { signal: AbortSignal.timeout(timeoutMs) }).catch(
          (error: unknown) => {
            throw new Error(`Redis did not answer within ${timeoutMs} ms (connect).`, {
              cause: error,
            });
          },
        );
      }
      if (connection.status !== "ready") {
        throw new Error(`Redis is not connected (connection ${connection.status}).`);
      }
      await withTimeout(connection.ping(), timeoutMs, "ping");
    },
    close() {
      closed ??= (async () => {
        await Promise.all([...workers].map((worker) => worker.close()));
        await Promise.all([...queues.values()].map((queue) => queue.close().catch(report)));
        if (ownsConnection) await quit(connection, report);
      })();
      return closed;
    },
  };
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`Redis did not answer within ${ms} ms (${what}); is it running?`)),
      ms,
    );
  });
  // The losing promise may still settle; its rejection must not go unhandled.
  promise.catch(() => {});
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function quit(redis: Redis, report: (error: unknown) => void): Promise<void> {
  // QUIT needs a live connection; one that is down or reconnecting is simply dropped.
  if (redis.status !== "ready") {
    redis.disconnect();
    return;
  }
  try {
    await redis.quit();
  } catch (error) {
    report(error);
    redis.disconnect();
  }
}

class BullMqConsumer implements JobConsumer {
  readonly #worker: Worker<Envelope>;
  readonly #connection: Redis;
  readonly #report: (error: unknown) => void;
  readonly #onClosed: () => void;
  #closed: Promise<void> | undefined;
  /** Jobs being handled now. */
  #active = 0;

  constructor(
    name: string,
    handler: JobHandler,
    options: ProcessOptions & { concurrency: number },
    connection: Redis,
    prefix: string,
    report: (error: unknown) => void,
    onClosed: () => void,
  ) {
    this.#connection = connection;
    this.#report = report;
    this.#onClosed = onClosed;
    this.#worker = new Worker<Envelope>(
      bullMqQueueName(name),
      async (bullJob) => {
        this.#active++;
        try {
          // attemptsMade counts the tries that already failed.
          await handler(toJob(bullJob));
        } finally {
          this.#active--;
        }
      },
      { connection, prefix, concurrency: options.concurrency },
    );
    this.#worker.on("error", report);
    const onFailed = options.onFailed;
    this.#worker.on("failed", (bullJob, error) => {
      if (bullJob == null || onFailed == null) return;
      const last =
        error instanceof UnrecoverableError || bullJob.attemptsMade >= (bullJob.opts.attempts ?? 1);
      if (!last) return;
      try {
        onFailed({ ...toJob(bullJob), attempt: bullJob.attemptsMade }, error);
      } catch (callbackError) {
        report(callbackError);
      }
    });
  }

  close(): Promise<void> {
    this.#closed ??= (async () => {
      // With Redis away no job can finish, and BullMQ would wait for the connection
      // forever: drop it so that pending commands fail and the worker can stop.
      const reachable = this.#connection.status === "ready";
      if (!reachable) this.#connection.disconnect();
      try {
        // With no job in hand there is nothing to wait for; a graceful close would still wait
        // on the blocking connection, which after Redis came back may never answer.
        await this.#worker.close(!reachable || this.#active === 0);
      } catch (error) {
        this.#report(error);
      }
      await quit(this.#connection, this.#report);
      this.#onClosed();
    })();
    return this.#closed;
  }
}

function toJob(bullJob: BullJob<Envelope>): Job {
  return { id: bullJob.data.id, data: bullJob.data.data, attempt: bullJob.attemptsMade + 1 };
}
