/**
 * The embedded {@link JobQueue}: jobs are rows of the database's `jobs` table, so the
 * single-process default needs no Redis, and a state change can commit together with the
 * job it causes ({@link enqueueInTransaction}). The same SQL runs on PGlite and on
 * PostgreSQL, where several processes share one table safely.
 *
 * Delivery is at least once:
 * - a consumer claims due rows by setting `locked_until` (a visibility timeout) with
 *   `for update skip locked`, and renews the lock while the handler runs;
 * - success deletes the row; failure reschedules it with exponential backoff, or drops it
 *   after its last attempt;
 * - a consumer that dies leaves its lock to expire, and the job is claimed again.
 *
 * Every claim counts as an attempt, whether the handler threw or its process died, so a
 * job that kills its consumer cannot loop forever. The attempt number doubles as a fencing
 * token: a consumer that lost its lock cannot delete or reschedule the next claimant's run.
 * @module
 */
import { sql, type Kysely } from "kysely";
import type { DatabaseSchema } from "../store/schema.ts";
import type {
  EnqueueOptions,
  Job,
  JobConsumer,
  JobHandler,
  JobQueue,
  JsonValue,
  ProcessOptions,
} from "./job-queue.ts";
import { checkEnqueueOptions, DEFAULT_JOB_ATTEMPTS, JobQueueClosedError } from "./job-queue.ts";

/**
 * Delays after an in-transaction enqueue at which consumers in this process look again:
 * on PostgreSQL they cannot see the row until the caller commits, and nothing tells this
 * module when that happens. Later commits are found by the poll.
 */
const COMMIT_WAKE_DELAYS_MS = [5, 25, 100] as const;

/** Delayed jobs due within this time get an in-process wake-up instead of waiting for a poll. */
const MAX_TIMED_WAKE_MS = 60_000;

/** Options for {@link createEmbeddedJobQueue}. */
export interface EmbeddedJobQueueOptions {
  /**
   * How often an idle consumer looks for due jobs. Jobs enqueued in this process wake
   * consumers at once; the poll finds delayed jobs and jobs from other processes.
   * @defaultValue 250
   */
  readonly pollIntervalMs?: number | undefined;
  /**
   * How long a claimed job stays invisible to other consumers. The lock is renewed every
   * third of this while the handler runs, so it only bounds how long a dead consumer's
   * jobs wait before running again.
   * @defaultValue 60000
   */
  readonly visibilityTimeoutMs?: number | undefined;
  /**
   * Delay before the first retry; each further retry doubles it, up to `maxBackoffMs`.
   * The actual delay is drawn between half and all of that, so that jobs failing
   * together do not retry together.
   * @defaultValue 1000
   */
  readonly backoffMs?: number | undefined;
  /** Upper bound of the retry delay. @defaultValue 300000 */
  readonly maxBackoffMs?: number | undefined;
  /** Pause before a consumer tries again after a database error. @defaultValue 1000 */
  readonly errorPauseMs?: number | undefined;
  /**
   * Receives errors that no caller can catch: database errors in a consumer's loop, and
   * `onFailed` callbacks that threw. Consumers keep running after reporting.
   * @defaultValue writes the error to `console.error`
   */
  readonly onError?: ((error: unknown) => void) | undefined;
}

/**
 * Given to `onFailed` when a job's last attempt ended with its consumer gone (the process
 * died or hung past the visibility timeout) rather than with an error.
 */
export class JobAbandonedError extends Error {
  override readonly name = "JobAbandonedError";
  constructor(
    readonly queue: string,
    readonly jobId: string,
    readonly attempts: number,
  ) {
    super(
      `Job ${JSON.stringify(jobId)} of queue ${JSON.stringify(queue)} was abandoned by its ` +
        `consumer on attempt ${attempts}, its last; it is dropped.`,
    );
  }
}

/** What the `data` column holds: the caller's data with the job's own settings. */
interface StoredJob {
  readonly data: JsonValue;
  readonly maxAttempts: number;
}

interface ClaimedRow {
  readonly job_id: string;
  readonly data: unknown;
  readonly attempts: number;
}

interface Settings {
  readonly pollIntervalMs: number;
  readonly visibilityTimeoutMs: number;
  readonly backoffMs: number;
  readonly maxBackoffMs: number;
  readonly errorPauseMs: number;
  readonly report: (error: unknown) => void;
}

// Consumers in this process, by queue name. Names are not scoped to a database: a
// wake-up for a same-named queue of another database costs one empty claim.
const wakers = new Map<string, Set<() => void>>();

function wake(queue: string): void {
  for (const waker of wakers.get(queue) ?? []) waker();
}

function announce(queue: string, delayMs: number, inTransaction: boolean): void {
  if (delayMs > 0) {
    if (delayMs <= MAX_TIMED_WAKE_MS) setTimeout(() => wake(queue), delayMs).unref();
    return;
  }
  wake(queue);
  if (inTransaction) {
    for (const ms of COMMIT_WAKE_DELAYS_MS) setTimeout(() => wake(queue), ms).unref();
  }
}

function millisecondsFromNow(ms: number) {
  return sql<Date>`now() + (${ms}::float8 * interval '1 millisecond')`;
}

async function insertJob(
  db: Kysely<DatabaseSchema>,
  queue: string,
  jobId: string,
  data: JsonValue,
  options: EnqueueOptions,
): Promise<number> {
  const { delayMs, attempts, priority } = checkEnqueueOptions(options);
  const stored: StoredJob = { data, maxAttempts: attempts };
  await db
    .insertInto("jobs")
    .values({
      queue,
      job_id: jobId,
      data: JSON.stringify(stored),
      run_at: millisecondsFromNow(delayMs),
      priority,
    })
    .onConflict((oc) => oc.columns(["queue", "job_id"]).doNothing())
    .execute();
  return delayMs;
}

/**
 * Adds a job inside the caller's transaction, so that the job exists exactly when the
 * state change that caused it commits. Like {@link JobQueue.enqueue}, adding a job whose
 * id is already waiting, delayed or running does nothing.
 *
 * Consumers in this process are woken when the row can have committed; on PostgreSQL a
 * transaction that stays open longer than about 100 ms after this call is picked up by the
 * next poll instead.
 *
 * @param trx an open transaction (or a plain `Kysely` instance) on the cluster's database
 * @param queue the queue's name, as given to {@link JobQueue.process}
 * @param jobId deterministic id used to dedupe
 */
export async function enqueueInTransaction(
  trx: Kysely<DatabaseSchema>,
  queue: string,
  jobId: string,
  data: JsonValue,
  options: EnqueueOptions = {},
): Promise<void> {
  const delayMs = await insertJob(trx, queue, jobId, data, options);
  announce(queue, delayMs, true);
}

/**
 * Creates the embedded {@link JobQueue} over the `jobs` table of `db` (PGlite or
 * PostgreSQL). The queue does not own `db`: close the queue first, then the database.
 */
export function createEmbeddedJobQueue(
  db: Kysely<DatabaseSchema>,
  options: EmbeddedJobQueueOptions = {},
): JobQueue {
  const settings: Settings = {
    pollIntervalMs: positive("pollIntervalMs", options.pollIntervalMs ?? 250),
    visibilityTimeoutMs: positive("visibilityTimeoutMs", options.visibilityTimeoutMs ?? 60_000),
    backoffMs: positive("backoffMs", options.backoffMs ?? 1000),
    maxBackoffMs: positive("maxBackoffMs", options.maxBackoffMs ?? 300_000),
    errorPauseMs: positive("errorPauseMs", options.errorPauseMs ?? 1000),
    report: options.onError ?? reportToConsole,
  };
  const consumers = new Set<EmbeddedConsumer>();
  let closed = false;

  return {
    kind: "embedded",
    async enqueue(queue, jobId, data, enqueueOptions = {}) {
      if (closed) throw new JobQueueClosedError(queue);
      const delayMs = await insertJob(db, queue, jobId, data, enqueueOptions);
      announce(queue, delayMs, false);
    },
    async process<T = unknown>(
      queue: string,
      handler: JobHandler<T>,
      processOptions: ProcessOptions = {},
    ): Promise<JobConsumer> {
      if (closed) throw new JobQueueClosedError(queue);
      const consumer = new EmbeddedConsumer(
        db,
        queue,
        handler as JobHandler,
        processOptions,
        settings,
        () => consumers.delete(consumer),
      );
      consumers.add(consumer);
      return consumer;
    },
    async depth(queue) {
      const row = await db
        .selectFrom("jobs")
        .select(sql<number>`count(*)::int`.as("count"))
        .where("queue", "=", queue)
        .where((eb) =>
          eb.or([eb("locked_until", "is", null), eb("locked_until", "<=", sql<Date>`now()`)]),
        )
        .executeTakeFirstOrThrow();
      return Number(row.count);
    },
    async ping() {
      await sql`select 1`.execute(db);
    },
    async close() {
      closed = true;
      await Promise.all([...consumers].map((consumer) => consumer.close()));
    },
  };
}

function positive(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new RangeError(`${name} must be a finite number > 0, got ${value}.`);
  }
  return value;
}

function reportToConsole(error: unknown): void {
  console.error("taskweb embedded job queue:", error);
}

function readStored(data: unknown): StoredJob {
  // Rows written by this module always have this shape; anything else gets the defaults.
  if (data != null && typeof data === "object" && "maxAttempts" in data && "data" in data) {
    return data as StoredJob;
  }
  return { data: (data ?? null) as JsonValue, maxAttempts: DEFAULT_JOB_ATTEMPTS };
}

class EmbeddedConsumer implements JobConsumer {
  readonly #db: Kysely<DatabaseSchema>;
  readonly #queue: string;
  readonly #handler: JobHandler;
  readonly #concurrency: number;
  readonly #onFailed: ((job: Job, error: unknown) => void) | undefined;
  readonly #settings: Settings;
  readonly #onClosed: () => void;
  readonly #inFlight = new Map<string, Promise<void>>();
  readonly #loop: Promise<void>;
  readonly #heartbeat: NodeJS.Timeout;
  #renewing = false;
  #closing = false;
  #closed: Promise<void> | undefined;
  // Set by a wake-up that arrived while no sleep was pending, so that it is not lost.
  #woken = false;
  #interruptSleep: (() => void) | undefined;
  readonly #waker = (): void => {
    this.#woken = true;
    this.#interruptSleep?.();
  };

  constructor(
    db: Kysely<DatabaseSchema>,
    queue: string,
    handler: JobHandler,
    options: ProcessOptions,
    settings: Settings,
    onClosed: () => void,
  ) {
    const concurrency = options.concurrency ?? 1;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new RangeError(`concurrency must be an integer ≥ 1, got ${concurrency}.`);
    }
    this.#db = db;
    this.#queue = queue;
    this.#handler = handler;
    this.#concurrency = concurrency;
    this.#onFailed = options.onFailed;
    this.#settings = settings;
    this.#onClosed = onClosed;
    let set = wakers.get(queue);
    if (set == null) wakers.set(queue, (set = new Set()));
    set.add(this.#waker);
    this.#heartbeat = setInterval(() => void this.#renewLocks(), settings.visibilityTimeoutMs / 3);
    this.#loop = this.#run();
  }

  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#closing = true;
      this.#interruptSleep?.();
      await this.#loop;
      // Locks must stay renewed until the last handler is done.
      await Promise.all(this.#inFlight.values());
      clearInterval(this.#heartbeat);
      const set = wakers.get(this.#queue);
      set?.delete(this.#waker);
      if (set?.size === 0) wakers.delete(this.#queue);
      this.#onClosed();
    })();
    return this.#closed;
  }

  async #run(): Promise<void> {
    while (!this.#closing) {
      // Cleared on every turn, also when no slot is free: a wake-up that stayed set would
      // make #sleep return at once and spin this loop without ever yielding to I/O. While
      // all slots are busy, the next job to finish wakes the loop.
      this.#woken = false;
      const free = this.#concurrency - this.#inFlight.size;
      if (free > 0) {
        let claimed: ClaimedRow[];
        try {
          claimed = await this.#claim(free);
        } catch (error) {
          this.#settings.report(error);
          await this.#sleep(this.#settings.errorPauseMs);
          continue;
        }
        if (this.#closing) {
          await this.#release(claimed);
          break;
        }
        for (const row of claimed) this.#start(row);
        // A full batch means more may be due: claim again as soon as there is room.
        if (claimed.length === free) continue;
      }
      await this.#sleep(this.#settings.pollIntervalMs);
    }
  }

  #sleep(ms: number): Promise<void> {
    if (this.#woken || this.#closing) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#interruptSleep = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#interruptSleep = done;
    });
  }

  async #claim(limit: number): Promise<ClaimedRow[]> {
    const queue = this.#queue;
    return await this.#db
      .updateTable("jobs")
      .set((eb) => ({
        locked_until: millisecondsFromNow(this.#settings.visibilityTimeoutMs),
        attempts: eb("attempts", "+", 1),
      }))
      .where("queue", "=", queue)
      .where("job_id", "in", (eb) =>
        eb
          .selectFrom("jobs")
          .select("job_id")
          .where("queue", "=", queue)
          .where("run_at", "<=", sql<Date>`now()`)
          .where((w) =>
            w.or([w("locked_until", "is", null), w("locked_until", "<=", sql<Date>`now()`)]),
          )
          .orderBy("priority")
          .orderBy("run_at")
          .limit(limit)
          .forUpdate()
          .skipLocked(),
      )
      .returning(["job_id", "data", "attempts"])
      .execute();
  }

  /** Gives back rows claimed while closing, without counting the attempt. */
  async #release(rows: ClaimedRow[]): Promise<void> {
    if (rows.length === 0) return;
    try {
      await this.#db
        .updateTable("jobs")
        .set((eb) => ({ locked_until: null, attempts: eb("attempts", "-", 1) }))
        .where("queue", "=", this.#queue)
        .where(
          "job_id",
          "in",
          rows.map((row) => row.job_id),
        )
        .execute();
    } catch (error) {
      // The locks expire on their own and the jobs run again.
      this.#settings.report(error);
    }
  }

  #start(row: ClaimedRow): void {
    const stored = readStored(row.data);
    const job: Job = { id: row.job_id, data: stored.data, attempt: row.attempts };
    const run = this.#handle(job, stored.maxAttempts).finally(() => {
      this.#inFlight.delete(job.id);
      this.#waker();
    });
    this.#inFlight.set(job.id, run);
  }

  /** Runs one job; never rejects. */
  async #handle(job: Job, maxAttempts: number): Promise<void> {
    if (job.attempt > maxAttempts) {
      // The claim that just happened is not a try: report the last one, which died.
      const abandoned = new JobAbandonedError(this.#queue, job.id, maxAttempts);
      await this.#drop(job, abandoned, { ...job, attempt: maxAttempts });
      return;
    }
    let failure: { error: unknown } | undefined;
    try {
      await this.#handler(job);
    } catch (error) {
      failure = { error };
    }
    try {
      if (failure == null) {
        await this.#db
          .deleteFrom("jobs")
          .where("queue", "=", this.#queue)
          .where("job_id", "=", job.id)
          .where("attempts", "=", job.attempt)
          .execute();
      } else if (job.attempt >= maxAttempts) {
        await this.#drop(job, failure.error);
      } else {
        const delayMs = this.#backoff(job.attempt);
        await this.#db
          .updateTable("jobs")
          .set({ run_at: millisecondsFromNow(delayMs), locked_until: null })
          .where("queue", "=", this.#queue)
          .where("job_id", "=", job.id)
          .where("attempts", "=", job.attempt)
          .execute();
        announce(this.#queue, delayMs, false);
      }
    } catch (error) {
      // The lock expires and the job runs again: at least once, never lost.
      this.#settings.report(error);
    }
  }

  /** Deletes a job that used its last attempt and tells `onFailed`, unless it moved on. */
  async #drop(job: Job, error: unknown, reported: Job = job): Promise<void> {
    try {
      const result = await this.#db
        .deleteFrom("jobs")
        .where("queue", "=", this.#queue)
        .where("job_id", "=", job.id)
        .where("attempts", "=", job.attempt)
        .executeTakeFirst();
      if (result.numDeletedRows === 0n) return;
      this.#onFailed?.(reported, error);
    } catch (dropError) {
      this.#settings.report(dropError);
    }
  }

  #backoff(attempt: number): number {
    const ceiling = Math.min(
      this.#settings.maxBackoffMs,
      this.#settings.backoffMs * 2 ** Math.min(attempt - 1, 30),
    );
    return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  }

  async #renewLocks(): Promise<void> {
    if (this.#renewing || this.#inFlight.size === 0) return;
    this.#renewing = true;
    try {
      await this.#db
        .updateTable("jobs")
        .set({ locked_until: millisecondsFromNow(this.#settings.visibilityTimeoutMs) })
        .where("queue", "=", this.#queue)
        .where("job_id", "in", [...this.#inFlight.keys()])
        .where("locked_until", "is not", null)
        .execute();
    } catch (error) {
      this.#settings.report(error);
    } finally {
      this.#renewing = false;
    }
  }
}

export { JobQueueClosedError };
