/**
 * The Fedify `MessageQueue` adapter on both job queues. These tests cover what Fedify's
 * own conformance suite (`testMessageQueue` in `@fedify/testing`) checks: enqueue, delay,
 * enqueueMany with and without delay, two competing listeners, and listen() ending on abort.
 */
import { randomUUID } from "node:crypto";
import { Temporal as TemporalPolyfill } from "@js-temporal/polyfill";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createBullMqJobQueue } from "../../server/queue/bullmq-job-queue.ts";
import {
  createEmbeddedJobQueue,
  JobQueueClosedError,
} from "../../server/queue/embedded-job-queue.ts";
import {
  createFedifyMessageQueue,
  FedifyMessageDroppedError,
  type FedifyMessageQueue,
  type FedifyMessageQueueOptions,
} from "../../server/queue/fedify-message-queue.ts";
import type { JobQueue } from "../../server/queue/job-queue.ts";
import { openDatabase, type Database } from "../../server/store/database.ts";
import { migrateToLatest } from "../../server/store/migrate.ts";
import { serverBackend, testBackends } from "../support/backends.ts";
import { sleep, waitFor } from "./job-queue.contract.ts";

/**
 * Fedify's types name the TypeScript library's global `Temporal`, while Node 22 has none
 * at run time and Fedify itself runs on the polyfill: the two are the same API.
 */
function milliseconds(ms: number): Temporal.Duration {
  return TemporalPolyfill.Duration.from({ milliseconds: ms }) as unknown as Temporal.Duration;
}

interface JobQueueBackend {
  /** A job queue on the shared backend; each call is another instance, as in another process. */
  open(): JobQueue;
  close(): Promise<void>;
}

function describeFedifyMessageQueue(name: string, factory: () => Promise<JobQueueBackend>): void {
  describe(`Fedify message queue on ${name}`, () => {
    let backend: JobQueueBackend;
    const opened: JobQueue[] = [];
    const controllers: AbortController[] = [];
    const listening: Promise<void>[] = [];

    function jobQueue(): JobQueue {
      const jobs = backend.open();
      opened.push(jobs);
      return jobs;
    }

    function listen(
      mq: FedifyMessageQueue,
      handler: (message: unknown) => Promise<void> | void,
    ): { controller: AbortController; done: Promise<void> } {
      const controller = new AbortController();
      const done = mq.listen(handler, { signal: controller.signal });
      controllers.push(controller);
      listening.push(done);
      return { controller, done };
    }

    function adapter(jobs: JobQueue, queue: string, options: FedifyMessageQueueOptions = {}) {
      return createFedifyMessageQueue(jobs, queue, options);
    }

    beforeAll(async () => {
      backend = await factory();
    });

    afterEach(async () => {
      for (const controller of controllers.splice(0)) controller.abort();
      await Promise.all(listening.splice(0));
      await Promise.all(opened.splice(0).map((jobs) => jobs.close()));
    });

    afterAll(async () => {
      await backend?.close();
    });

    it("delivers an enqueued message to a listener and leaves retries to Fedify", async () => {
      const mq = adapter(jobQueue(), `fedify-${randomUUID()}`);
      expect(mq.nativeRetrial).toBe(false);
      const messages: unknown[] = [];
      // Fedify's handlers may be synchronous.
      listen(mq, (message) => {
        messages.push(message);
      });
      const message = { type: "outbox", id: randomUUID(), attempt: 0, headers: { a: "b" } };
      await mq.enqueue(message);
      await waitFor(() => messages.length === 1, 5000, "the message");
      expect(messages).toEqual([message]);
    });

    it("holds a message back for its delay", async () => {
      const mq = adapter(jobQueue(), `fedify-${randomUUID()}`);
      let after: number | undefined;
      listen(mq, () => {
        after = Date.now() - started;
      });
      const started = Date.now();
      await mq.enqueue("delayed", { delay: milliseconds(300) });
      await waitFor(() => after != null, 5000, "the delayed message");
      // Date.now() truncates to whole milliseconds, which can make 300 ms read as 299.
      expect(after).toBeGreaterThanOrEqual(299);
    });

    it("enqueues many messages at once, with and without a delay", async () => {
      const mq = adapter(jobQueue(), `fedify-${randomUUID()}`);
      const messages: { text: string; after: number }[] = [];
      listen(mq, async (message) => {
        messages.push({ text: message as string, after: Date.now() - started });
      });
      let started = Date.now();
      await mq.enqueueMany(["one", "two", "three"]);
      await waitFor(() => messages.length === 3, 5000, "three messages");
      expect(new Set(messages.map((m) => m.text))).toEqual(new Set(["one", "two", "three"]));
      messages.length = 0;
      started = Date.now();
      await mq.enqueueMany(["four", "five"], { delay: milliseconds(250) });
      await waitFor(() => messages.length === 2, 5000, "two delayed messages");
      expect(new Set(messages.map((m) => m.text))).toEqual(new Set(["four", "five"]));
      expect(Math.min(...messages.map((m) => m.after))).toBeGreaterThanOrEqual(249);
    });

    it("gives each message to exactly one of two listeners", async () => {
      const queue = `fedify-${randomUUID()}`;
      const producer = adapter(jobQueue(), queue);
      const counts = new Map<string, number>();
      const byListener = [0, 0];
      for (const index of [0, 1]) {
        listen(adapter(jobQueue(), queue), (message) => {
          counts.set(message as string, (counts.get(message as string) ?? 0) + 1);
          byListener[index] = (byListener[index] ?? 0) + 1;
        });
      }
      const total = 60;
      await producer.enqueueMany(Array.from({ length: total }, (_, i) => `message-${i}`));
      await waitFor(() => counts.size === total, 10_000, `${total} messages`);
      await sleep(200);
      expect([...counts.values()].every((count) => count === 1)).toBe(true);
      expect((byListener[0] ?? 0) + (byListener[1] ?? 0)).toBe(total);
    });

    it("ends listen() when its signal aborts, and stops taking messages", async () => {
      const mq = adapter(jobQueue(), `fedify-${randomUUID()}`);
      const messages: unknown[] = [];
      const { controller, done } = listen(mq, (message) => {
        messages.push(message);
      });
      await mq.enqueue("before");
      await waitFor(() => messages.length === 1, 5000, "the first message");
      controller.abort();
      await done;
      await mq.enqueue("after");
      await sleep(300);
      expect(messages).toEqual(["before"]);
      expect(await mq.getDepth()).toEqual({ queued: 1 });

      const aborted = new AbortController();
      aborted.abort();
      await expect(mq.listen(() => {}, { signal: aborted.signal })).resolves.toBeUndefined();
      expect(await mq.getDepth()).toEqual({ queued: 1 });
    });

    it("ends listen() at once when its job queue is already closed", async () => {
      const jobs = jobQueue();
      await jobs.close();
      const errors: unknown[] = [];
      const mq = adapter(jobs, `fedify-${randomUUID()}`, { onError: (e) => errors.push(e) });
      // No signal: only the closed queue can end this.
      await expect(mq.listen(() => {})).resolves.toBeUndefined();
      expect(errors).toHaveLength(1);
      expect(errors[0]).toBeInstanceOf(JobQueueClosedError);
    });

    it("reports a message dropped after its last attempt without its payload", async () => {
      const queue = `fedify-${randomUUID()}`;
      const errors: unknown[] = [];
      const mq = adapter(jobQueue(), queue, {
        attempts: 2,
        onError: (error) => errors.push(error),
      });
      let tries = 0;
      listen(mq, () => {
        tries += 1;
        throw new Error("delivery blew up");
      });
      const secret = `private-key-${randomUUID()}`;
      await mq.enqueue({ type: "outbox", keys: [{ privateKey: secret }] });
      await waitFor(() => errors.length === 1, 10_000, "the drop report");
      expect(tries).toBe(2);
      const error = errors[0];
      expect(error).toBeInstanceOf(FedifyMessageDroppedError);
      expect((error as FedifyMessageDroppedError).attempts).toBe(2);
      expect((error as Error).message).toContain("delivery blew up");
      expect(JSON.stringify(error)).not.toContain(secret);
      expect(String(error)).not.toContain(secret);
      expect(await mq.getDepth()).toEqual({ queued: 0 });
    });
  });
}

for (const backend of testBackends()) {
  describeFedifyMessageQueue(`the embedded job queue (${backend.name})`, async () => {
    const options = backend.database();
    const first = await openDatabase(options);
    await migrateToLatest(first.db);
    // On PostgreSQL the second listener's job queue gets its own pool, as another process.
    const second: Database | undefined =
      first.kind === "postgres" ? await openDatabase({ ...options, poolSize: 4 }) : undefined;
    let turn = 0;
    return {
      open: () => {
        const database = turn++ % 2 === 1 && second != null ? second : first;
        return createEmbeddedJobQueue(database.db, { backoffMs: 10, pollIntervalMs: 50 });
      },
      async close() {
        await second?.close();
        await first.close();
      },
    };
  });
}

const server = serverBackend();
if ("skip" in server) {
  describe("Fedify message queue on BullMQ", () => {
    it.skip(`runs the Fedify message queue tests on Redis: skipped, ${server.skip}`, () => {});
  });
} else {
  describeFedifyMessageQueue("BullMQ", () => {
    const prefix = server.redisPrefix();
    const url = server.redisUrl as string;
    return Promise.resolve({
      open: () => createBullMqJobQueue({ url, prefix, backoffMs: 10 }),
      close: () => Promise.resolve(),
    });
  });
}
