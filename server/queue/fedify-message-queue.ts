/**
 * Fedify's `MessageQueue` on taskweb's {@link JobQueue}, so that Fedify's inbox, outbox
 * and fanout work runs on the same queue as taskweb's own jobs: the embedded table queue
 * by default, BullMQ when configured.
 *
 * Fedify keeps its retry policy (`nativeRetrial` is false): a failed delivery is
 * re-enqueued by Fedify with its own backoff, and the job that carried it completes. The
 * job queue's attempts only cover a consumer that died mid-message or a handler that threw
 * anyway (e.g. Fedify could not re-enqueue while the database was down).
 *
 * Queued outbox messages hold the sending actor's private keys, so nothing here puts a
 * payload into an error or a log line.
 * @module
 */
import { randomUUID } from "node:crypto";
import type {
  MessageQueue,
  MessageQueueDepth,
  MessageQueueEnqueueOptions,
  MessageQueueListenOptions,
} from "@fedify/fedify";
import { JobQueueClosedError } from "./job-queue.ts";
import type { JobConsumer, JobQueue, JsonValue } from "./job-queue.ts";

/** A Fedify `MessageQueue` with the optional members this adapter always has. */
export type FedifyMessageQueue = MessageQueue &
  Required<Pick<MessageQueue, "enqueueMany" | "getDepth">>;

/** Options for {@link createFedifyMessageQueue}. */
export interface FedifyMessageQueueOptions {
  /** Messages one `listen()` call handles at once. @defaultValue 4 */
  readonly concurrency?: number | undefined;
  /**
   * Tries per message. Fedify retries failed deliveries itself, so this only bounds how
   * often a message that kills its consumer, or makes its handler throw, is run again.
   * @defaultValue 3
   */
  readonly attempts?: number | undefined;
  /**
   * Pause before `listen()` tries again when the job queue would not start a consumer.
   * @defaultValue 1000
   */
  readonly retryListenMs?: number | undefined;
  /**
   * Receives a {@link FedifyMessageDroppedError} for each message dropped after its last
   * attempt, and errors from starting or stopping a consumer. Never gets a payload.
   * @defaultValue writes the error to `console.error`
   */
  readonly onError?: ((error: unknown) => void) | undefined;
  /**
   * Changes a message just before Fedify handles it (each attempt): the cluster puts its
   * current signing keys into a delivery queued before a key rotation.
   */
  readonly prepare?: ((message: unknown) => Promise<unknown>) | undefined;
}

/** Reported when a Fedify message used its last attempt; carries ids only, no payload. */
export class FedifyMessageDroppedError extends Error {
  override readonly name = "FedifyMessageDroppedError";
  constructor(
    readonly queue: string,
    readonly messageId: string,
    readonly attempts: number,
    options: { cause: unknown },
  ) {
    super(
      `Fedify message ${messageId} of queue ${JSON.stringify(queue)} failed ${attempts} ` +
        `attempt(s) and was dropped: ${summarize(options.cause)}`,
      options,
    );
  }
}

function pause(ms: number, until: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    until,
    new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))),
  ]).finally(() => clearTimeout(timer));
}

function summarize(error: unknown): string {
  return error instanceof Error
    ? `${error.name}: ${error.message}`
    : "a non-Error value was thrown";
}

/**
 * Creates a Fedify `MessageQueue` that stores messages as jobs of `queueName` in `jobs`.
 * Give Fedify one per role (e.g. `fedify-inbox`, `fedify-outbox`) to see their depths
 * apart.
 *
 * Fedify's `orderingKey` is not honoured: messages with the same key may run in parallel
 * and out of order. taskweb does not send with ordering keys; its activities are
 * idempotent and carry their own state.
 */
export function createFedifyMessageQueue(
  jobs: JobQueue,
  queueName: string,
  options: FedifyMessageQueueOptions = {},
): FedifyMessageQueue {
  const concurrency = options.concurrency ?? 4;
  const attempts = options.attempts ?? 3;
  const retryListenMs = options.retryListenMs ?? 1000;
  const report =
    options.onError ?? ((error: unknown) => console.error("taskweb Fedify queue:", error));

  async function enqueue(
    message: unknown,
    enqueueOptions?: MessageQueueEnqueueOptions,
  ): Promise<void> {
    const delay = enqueueOptions?.delay;
    const delayMs = delay == null ? 0 : Math.max(0, Math.round(delay.total("milliseconds")));
    await jobs.enqueue(queueName, randomUUID(), message as JsonValue, { delayMs, attempts });
  }

  return {
    nativeRetrial: false,
    enqueue,
    async enqueueMany(messages, enqueueOptions) {
      await Promise.all(messages.map((message) => enqueue(message, enqueueOptions)));
    },
    async listen(handler, listenOptions: MessageQueueListenOptions = {}) {
      const signal = listenOptions.signal;
      // Resolves on abort, never rejects: Fedify awaits this for the worker's whole life.
      const aborted = new Promise<void>((resolve) => {
        if (signal == null) return;
        if (signal.aborted) resolve();
        else signal.addEventListener("abort", () => resolve(), { once: true });
      });
      let consumer: JobConsumer | undefined;
      while (consumer == null && !(signal?.aborted ?? false)) {
        try {
          consumer = await jobs.process(
            queueName,
            async (job) => {
              await handler(options.prepare != null ? await options.prepare(job.data) : job.data);
            },
            {
              concurrency,
              onFailed: (job, error) => {
                report(
                  new FedifyMessageDroppedError(queueName, job.id, job.attempt, { cause: error }),
                );
              },
            },
          );
        } catch (error) {
          report(error);
          // A closed job queue means the process is shutting down: nothing to wait for.
          if (error instanceof JobQueueClosedError) return;
          await pause(retryListenMs, aborted);
        }
      }
      if (consumer == null) return;
      await aborted;
      try {
        await consumer.close();
      } catch (error) {
        report(error);
      }
    },
    async getDepth(): Promise<MessageQueueDepth> {
      return { queued: await jobs.depth(queueName) };
    },
  };
}
