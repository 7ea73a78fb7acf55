/**
 * The queue port. The database is the source of truth; a queue only dispatches work to
 * processes. Two implementations pass one contract suite (`test/queue/job-queue.contract.ts`):
 * BullMQ on Redis for deployments on many machines, and an embedded queue over the
 * database's `jobs` table for the single-process default.
 * @module
 */

/** A JSON value, as stored in a job. */
export type JsonValue =
  string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** A job handed to a {@link JobHandler}. */
export interface Job<T = unknown> {
  /** The id given to {@link JobQueue.enqueue}. */
  readonly id: string;
  readonly data: T;
  /** 1 on the first try, 2 on the first retry, … */
  readonly attempt: number;
}

/** Processes one job. Throwing makes the queue retry it with backoff until attempts run out. */
export type JobHandler<T = unknown> = (job: Job<T>) => Promise<void>;

/** Options for {@link JobQueue.enqueue}. */
export interface EnqueueOptions {
  /** Run no earlier than this many milliseconds from now. @defaultValue 0 */
  readonly delayMs?: number | undefined;
  /** Tries before the job is dropped (and reported through `onFailed`). @defaultValue 5 */
  readonly attempts?: number | undefined;
  /**
   * Order among due jobs of the queue: 0 (the default) first, then 1, 2, … up to
   * {@link MAX_JOB_PRIORITY}; equal priorities in the order they became due. This is
   * BullMQ's convention, where a job without a priority goes before prioritized ones.
   */
  readonly priority?: number | undefined;
}

/** The largest {@link EnqueueOptions.priority} (BullMQ's limit). */
export const MAX_JOB_PRIORITY = 2_097_152;

/** Tries of a job when {@link EnqueueOptions.attempts} is not given. */
export const DEFAULT_JOB_ATTEMPTS = 5;

/**
 * {@link EnqueueOptions} with defaults filled in.
 * @throws {RangeError} when an option is out of range; the job is then not added.
 */
export function checkEnqueueOptions(options: EnqueueOptions): {
  delayMs: number;
  attempts: number;
  priority: number;
} {
  const delayMs = options.delayMs ?? 0;
  const attempts = options.attempts ?? DEFAULT_JOB_ATTEMPTS;
  const priority = options.priority ?? 0;
  if (!Number.isFinite(delayMs) || delayMs < 0) {
    throw new RangeError(`delayMs must be a finite number ≥ 0, got ${delayMs}.`);
  }
  if (!Number.isInteger(attempts) || attempts < 1) {
    throw new RangeError(`attempts must be an integer ≥ 1, got ${attempts}.`);
  }
  if (!Number.isInteger(priority) || priority < 0 || priority > MAX_JOB_PRIORITY) {
    throw new RangeError(
      `priority must be an integer from 0 to ${MAX_JOB_PRIORITY}, got ${priority}.`,
    );
  }
  return { delayMs, attempts, priority };
}

/** Options for {@link JobQueue.process}. */
export interface ProcessOptions {
  /** Jobs of this queue handled at once by this process. @defaultValue 1 */
  readonly concurrency?: number | undefined;
  /** Called when a job failed its last attempt; the job is then gone from the queue. */
  readonly onFailed?: ((job: Job, error: unknown) => void) | undefined;
}

/** A running consumer; {@link JobConsumer.close} waits for the jobs in hand to finish. */
export interface JobConsumer {
  close(): Promise<void>;
}

/** The queue port. */
export interface JobQueue {
  /** Which implementation this is, for logs and `/readyz`. */
  readonly kind: "bullmq" | "embedded";
  /**
   * Adds a job. While a job with the same `queue` and `jobId` is waiting, delayed or
   * running, adding it again does nothing: callers use deterministic ids to dedupe.
   * `jobId` may be any string; implementations hash it where their backend restricts ids.
   */
  enqueue(queue: string, jobId: string, data: JsonValue, options?: EnqueueOptions): Promise<void>;
  /** Starts handling jobs of `queue` in this process. */
  process<T = unknown>(
    queue: string,
    handler: JobHandler<T>,
    options?: ProcessOptions,
  ): Promise<JobConsumer>;
  /** Jobs of `queue` waiting or delayed (not counting the ones being handled). */
  depth(queue: string): Promise<number>;
  /** Checks the backend answers; throws when it does not. */
  ping(): Promise<void>;
  /** Stops every consumer (letting jobs in hand finish) and releases connections. */
  close(): Promise<void>;
}

/** Thrown by {@link JobQueue.enqueue} and {@link JobQueue.process} after {@link JobQueue.close}. */
export class JobQueueClosedError extends Error {
  override readonly name = "JobQueueClosedError";
  constructor(readonly queue: string) {
    super(`The job queue is closed; cannot use queue ${JSON.stringify(queue)}. Open a new one.`);
  }
}
