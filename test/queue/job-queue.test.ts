import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Redis } from "ioredis";
import { sql, type Kysely } from "kysely";
import { createBullMqJobQueue } from "../../server/queue/bullmq-job-queue.ts";
import {
  createEmbeddedJobQueue,
  enqueueInTransaction,
  JobAbandonedError,
  JobQueueClosedError,
  type EmbeddedJobQueueOptions,
} from "../../server/queue/embedded-job-queue.ts";
import type { Job, JobQueue } from "../../server/queue/job-queue.ts";
import { openDatabase, type Database } from "../../server/store/database.ts";
import { migrateToLatest } from "../../server/store/migrate.ts";
import type { DatabaseSchema } from "../../server/store/schema.ts";
import { serverBackend, testBackends, type TestBackend } from "../support/backends.ts";
import { describeJobQueueContract, sleep, waitFor } from "./job-queue.contract.ts";

/** A migrated database, plus a second pool on it where the engine has pools. */
interface EmbeddedBackend {
  readonly first: Database;
  /** Alternates between two pools on PostgreSQL, so that queues act like two processes. */
  nextDb(): Kysely<DatabaseSchema>;
  /** Opens one more connection pool on the same database (PostgreSQL only). */
  openAnother(): Promise<Database | undefined>;
  close(): Promise<void>;
}

async function openEmbeddedBackend(backend: TestBackend): Promise<EmbeddedBackend> {
  const options = backend.database();
  const first = await openDatabase(options);
  await migrateToLatest(first.db);
  const extra: Database[] = [];
  const pools: Database[] = [first];
  if (first.kind === "postgres") {
    const second = await openDatabase({ ...options, poolSize: 4 });
    extra.push(second);
    pools.push(second);
  }
  let turn = 0;
  return {
    first,
    nextDb: () => (pools[turn++ % pools.length] ?? first).db,
    async openAnother() {
      if (first.kind !== "postgres") return undefined;
      const another = await openDatabase({ ...options, poolSize: 2 });
      extra.push(another);
      return another;
    },
    async close() {
      for (const database of extra) await database.close();
      await first.close();
    },
  };
}

const fast: EmbeddedJobQueueOptions = { backoffMs: 10, pollIntervalMs: 50, errorPauseMs: 20 };

for (const backend of testBackends()) {
  describeJobQueueContract(`job queue contract: embedded queue on ${backend.name}`, async () => {
    const embedded = await openEmbeddedBackend(backend);
    return {
      open: () => Promise.resolve(createEmbeddedJobQueue(embedded.nextDb(), fast)),
      close: () => embedded.close(),
    };
  });
}

const server = serverBackend();
if ("skip" in server) {
  describe("job queue contract: BullMQ queue", () => {
    it.skip(`runs the job queue contract on Redis: skipped, ${server.skip}`, () => {});
  });
} else {
  describeJobQueueContract("job queue contract: BullMQ queue on Redis", () => {
    const prefix = server.redisPrefix();
    const url = server.redisUrl as string;
    return Promise.resolve({
      open: () => Promise.resolve(createBullMqJobQueue({ url, prefix, backoffMs: 10 })),
      close: () => Promise.resolve(),
    });
  });
}

if (!("skip" in server)) {
  describe("BullMQ job queue", () => {
    const url = server.redisUrl as string;

    it("takes queue names with ':' and keeps them apart from their look-alikes", async () => {
      const jobs = createBullMqJobQueue({ url, prefix: server.redisPrefix(), backoffMs: 10 });
      try {
        const seen: string[] = [];
        await jobs.process("tw:dispatch", async (job) => {
          seen.push(`colon:${job.id}`);
        });
        await jobs.process("tw%3Adispatch", async (job) => {
          seen.push(`escaped:${job.id}`);
        });
        await jobs.enqueue("tw:dispatch", "a:1", null);
        await jobs.enqueue("tw%3Adispatch", "b:2", null);
        await waitFor(() => seen.length === 2, 5000, "both jobs");
        await sleep(100);
        expect(seen.sort()).toEqual(["colon:a:1", "escaped:b:2"]);
      } finally {
        await jobs.close();
      }
    });

    it("runs on a caller's ioredis connection and leaves it open", async () => {
      const connection = new Redis(url);
      const jobs = createBullMqJobQueue({ connection, prefix: server.redisPrefix() });
      try {
        const seen: unknown[] = [];
        await jobs.process("shared", async (job) => {
          seen.push(job.data);
        });
        await jobs.enqueue("shared", "x", { ok: true });
        await waitFor(() => seen.length === 1, 5000, "the job");
        await jobs.close();
        expect(await connection.ping()).toBe("PONG");
      } finally {
        await jobs.close();
        await connection.quit();
      }
    });

    it("reports errors while Redis is unreachable instead of crashing, and still closes", async () => {
      const errors: unknown[] = [];
      // Nothing listens on port 1 of the loopback address.
      const jobs = createBullMqJobQueue({
        url: "redis://127.0.0.1:1",
        prefix: server.redisPrefix(),
        timeoutMs: 300,
        onError: (error) => errors.push(error),
      });
      await jobs.process("nowhere", async () => {});
      await waitFor(() => errors.length > 0, 5000, "a reported connection error");
      await expect(jobs.ping()).rejects.toThrow("Redis is not connected");
      await expect(jobs.enqueue("nowhere", "x", null)).rejects.toThrow("did not answer");
      await expect(jobs.depth("nowhere")).rejects.toThrow("did not answer");
      const closing = Date.now();
      await jobs.close();
      expect(Date.now() - closing).toBeLessThan(5000);
    });
  });
}

/** Marks a job as claimed by a consumer that then died, with a lock that ends in `lockMs`. */
async function abandon(db: Kysely<DatabaseSchema>, queue: string, jobId: string, lockMs: number) {
  const result = await db
    .updateTable("jobs")
    .set((eb) => ({
      attempts: eb("attempts", "+", 1),
      locked_until: sql<Date>`now() + (${lockMs}::float8 * interval '1 millisecond')`,
    }))
    .where("queue", "=", queue)
    .where("job_id", "=", jobId)
    .executeTakeFirst();
  expect(result.numUpdatedRows).toBe(1n);
}

for (const backend of testBackends()) {
  describe(`embedded job queue on ${backend.name}`, () => {
    let embedded: EmbeddedBackend;
    let db: Kysely<DatabaseSchema>;
    const opened: JobQueue[] = [];
    let counter = 0;

    function open(options: EmbeddedJobQueueOptions = {}): JobQueue {
      const queue = createEmbeddedJobQueue(db, { ...fast, ...options });
      opened.push(queue);
      return queue;
    }

    function queueName(): string {
      counter += 1;
      return `embedded-${counter}-${Date.now().toString(36)}`;
    }

    beforeAll(async () => {
      embedded = await openEmbeddedBackend(backend);
      db = embedded.first.db;
    });

    afterAll(async () => {
      await Promise.all(opened.map((queue) => queue.close()));
      await embedded?.close();
    });

    it("runs again, as attempt 2, a job whose consumer died once its lock expires", async () => {
      const jobs = open();
      const queue = queueName();
      await jobs.enqueue(queue, "orphan", { n: 1 });
      const abandoned = Date.now();
      await abandon(db, queue, "orphan", 400);
      const seen: { job: Job; after: number }[] = [];
      const consumer = await jobs.process(queue, async (job) => {
        seen.push({ job, after: Date.now() - abandoned });
      });
      await waitFor(() => seen.length === 1, 5000, "the recovered job");
      await consumer.close();
      expect(seen[0]?.job).toEqual({ id: "orphan", data: { n: 1 }, attempt: 2 });
      expect(seen[0]?.after).toBeGreaterThanOrEqual(390);
    });

    it("drops a job whose consumer died on its last attempt, reporting JobAbandonedError", async () => {
      const jobs = open();
      const queue = queueName();
      await jobs.enqueue(queue, "last", null, { attempts: 1 });
      await abandon(db, queue, "last", 50);
      let handled = 0;
      const failed: { job: Job; error: unknown }[] = [];
      const consumer = await jobs.process(
        queue,
        async () => {
          handled += 1;
        },
        { onFailed: (job, error) => failed.push({ job, error }) },
      );
      await waitFor(() => failed.length === 1, 5000, "onFailed");
      await consumer.close();
      expect(handled).toBe(0);
      expect(failed[0]?.error).toBeInstanceOf(JobAbandonedError);
      expect(failed[0]?.job).toMatchObject({ id: "last", attempt: 1 });
      expect(await jobs.depth(queue)).toBe(0);
    });

    it("renews the lock of a long job so that no other consumer takes it", async () => {
      const queue = queueName();
      const runs: number[] = [];
      const a = open({ visibilityTimeoutMs: 150 });
      const b = open({ visibilityTimeoutMs: 150 });
      for (const jobs of [a, b]) {
        await jobs.process(queue, async (job) => {
          runs.push(job.attempt);
          await sleep(700);
        });
      }
      await a.enqueue(queue, "long", null);
      await waitFor(() => runs.length === 1, 5000, "the job to start");
      await sleep(900);
      expect(runs).toEqual([1]);
    });

    it("hands a job enqueued in this process to an idle consumer without waiting for a poll", async () => {
      const jobs = open({ pollIntervalMs: 10_000 });
      const queue = queueName();
      let ranAt: number | undefined;
      await jobs.process(queue, async () => {
        ranAt = Date.now();
      });
      // Let the consumer's first (empty) claim finish, so that it sleeps on the long poll.
      await sleep(100);
      const enqueued = Date.now();
      await jobs.enqueue(queue, "now", null);
      await waitFor(() => ranAt != null, 5000, "the job");
      expect((ranAt ?? Infinity) - enqueued).toBeLessThan(500);
    });

    it("creates a job in a transaction only if it commits, and runs it soon after the commit", async () => {
      const jobs = open({ pollIntervalMs: 10_000 });
      const queue = queueName();
      const seen: unknown[] = [];
      await jobs.process(queue, async (job) => {
        seen.push(job.data);
      });
      await sleep(100);
      await expect(
        db.transaction().execute(async (trx) => {
          await enqueueInTransaction(trx, queue, "rolled-back", { ok: false });
          throw new Error("roll back");
        }),
      ).rejects.toThrow("roll back");
      const committed = Date.now();
      await db.transaction().execute(async (trx) => {
        await enqueueInTransaction(trx, queue, "committed", { ok: true });
      });
      await waitFor(() => seen.length === 1, 5000, "the committed job");
      expect(Date.now() - committed).toBeLessThan(1000);
      await sleep(100);
      expect(seen).toEqual([{ ok: true }]);
      expect(await jobs.depth(queue)).toBe(0);
    });

    it("reports database errors from its loop and keeps trying instead of throwing", async () => {
      const errors: unknown[] = [];
      const own: Database =
        (await embedded.openAnother()) ?? (await openDatabase(backend.database()));
      if (own.kind === "pglite") await migrateToLatest(own.db);
      const jobs = createEmbeddedJobQueue(own.db, {
        ...fast,
        onError: (error) => errors.push(error),
      });
      await jobs.process(queueName(), async () => {});
      await sleep(50);
      await own.close();
      await waitFor(() => errors.length >= 2, 5000, "two reported errors");
      await jobs.close();
      expect(errors[0]).toBeInstanceOf(Error);
    });

    it("refuses new work once closed", async () => {
      const jobs = createEmbeddedJobQueue(db, fast);
      await jobs.close();
      await expect(jobs.enqueue("any", "x", null)).rejects.toBeInstanceOf(JobQueueClosedError);
      await expect(jobs.process("any", async () => {})).rejects.toBeInstanceOf(JobQueueClosedError);
    });

    it("rejects invalid options with a RangeError", async () => {
      const jobs = open();
      await expect(jobs.enqueue("any", "x", null, { attempts: 0 })).rejects.toBeInstanceOf(
        RangeError,
      );
      await expect(jobs.enqueue("any", "x", null, { delayMs: -1 })).rejects.toBeInstanceOf(
        RangeError,
      );
      expect(() => createEmbeddedJobQueue(db, { pollIntervalMs: 0 })).toThrow(RangeError);
    });
  });
}
