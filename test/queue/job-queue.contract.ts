/**
 * The behaviour every {@link JobQueue} implementation promises, as one suite that each
 * implementation runs on each backend it supports.
 */
import { randomUUID } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Job, JobQueue } from "../../server/queue/job-queue.ts";

/** One backend shared by the queues of a contract run. */
export interface JobQueueContractBackend {
  /**
   * Opens another queue on the shared backend, as another process would. Queues should
   * retry quickly (tens of milliseconds) so that the suite stays fast.
   */
  open(): Promise<JobQueue>;
  /** Releases the backend; the suite has closed every queue it opened. */
  close(): Promise<void>;
}

/** Polls `predicate` until it holds; fails after `timeoutMs`. */
export async function waitFor(
  predicate: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
  what = "condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline)
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(5);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A promise with its resolver, to hold a handler until the test lets it go. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

/** Registers the job queue contract for one implementation on one backend. */
export function describeJobQueueContract(
  name: string,
  factory: () => Promise<JobQueueContractBackend>,
): void {
  describe(name, () => {
    let backend: JobQueueContractBackend;
    const opened: JobQueue[] = [];

    async function open(): Promise<JobQueue> {
      const queue = await backend.open();
      opened.push(queue);
      return queue;
    }

    // Each test has its own queue name, so leftovers of one test never reach another.
    function queueName(): string {
      return `contract-${randomUUID().slice(0, 8)}`;
    }

    beforeAll(async () => {
      backend = await factory();
    });

    afterEach(async () => {
      await Promise.all(opened.splice(0).map((queue) => queue.close()));
    });

    afterAll(async () => {
      await backend?.close();
    });

    it("answers ping", async () => {
      const jobs = await open();
      await expect(jobs.ping()).resolves.toBeUndefined();
    });

    it("hands an enqueued job to the handler with its id, data and attempt 1", async () => {
      const jobs = await open();
      const queue = queueName();
      const seen: Job[] = [];
      await jobs.process(queue, async (job) => {
        seen.push(job);
      });
      const id = "https://cluster.example/tasks/T1:dispatch";
      await jobs.enqueue(queue, id, { task: "T1", n: [1, 2] });
      await waitFor(() => seen.length === 1, 5000, "the job");
      expect(seen[0]).toEqual({ id, data: { task: "T1", n: [1, 2] }, attempt: 1 });
    });

    it("ignores an enqueue of an id that is already waiting", async () => {
      const jobs = await open();
      const queue = queueName();
      await jobs.enqueue(queue, "same", { n: 1 });
      await jobs.enqueue(queue, "same", { n: 2 });
      expect(await jobs.depth(queue)).toBe(1);
      const seen: unknown[] = [];
      await jobs.process(queue, async (job) => {
        seen.push(job.data);
      });
      await waitFor(() => seen.length === 1, 5000, "the job");
      await sleep(150);
      expect(seen).toEqual([{ n: 1 }]);
    });

    it("ignores an enqueue of an id that is running, and takes it again once it completed", async () => {
      const jobs = await open();
      const queue = queueName();
      const hold = gate();
      const runs: unknown[] = [];
      let completed = 0;
      await jobs.process(queue, async (job) => {
        runs.push(job.data);
        if (runs.length === 1) await hold.promise;
        completed += 1;
      });
      await jobs.enqueue(queue, "same", { run: 1 });
      await waitFor(() => runs.length === 1, 5000, "the first run");
      await jobs.enqueue(queue, "same", { run: 2 });
      hold.open();
      await waitFor(() => completed === 1, 5000, "the first run to complete");
      // The queue forgets the job just after the handler returns.
      await sleep(150);
      expect(runs).toEqual([{ run: 1 }]);
      await jobs.enqueue(queue, "same", { run: 3 });
      await waitFor(() => runs.length === 2, 5000, "the run after completion");
      expect(runs).toEqual([{ run: 1 }, { run: 3 }]);
    });

    it("does not run a delayed job before its delay", async () => {
      const jobs = await open();
      const queue = queueName();
      let ranAfter: number | undefined;
      await jobs.process(queue, async (job) => {
        if (job.id === "later") ranAfter = Date.now() - started;
      });
      const started = Date.now();
      await jobs.enqueue(queue, "later", null, { delayMs: 300 });
      await jobs.enqueue(queue, "now", null);
      await waitFor(() => ranAfter != null, 5000, "the delayed job");
      // Date.now() truncates to whole milliseconds, which can make 300 ms read as 299.
      expect(ranAfter).toBeGreaterThanOrEqual(299);
      expect(ranAfter).toBeLessThan(3000);
    });

    it("hands out due jobs by priority: none first, then 1, 2, …", async () => {
      const jobs = await open();
      const queue = queueName();
      const given: [string, number | undefined][] = [
        ["p7", 7],
        ["p3", 3],
        ["p5", 5],
        ["none", undefined],
        ["p1", 1],
        ["p2", 2],
      ];
      for (const [id, priority] of given) await jobs.enqueue(queue, id, null, { priority });
      const order: string[] = [];
      await jobs.process(
        queue,
        async (job) => {
          order.push(job.id);
        },
        { concurrency: 1 },
      );
      await waitFor(() => order.length === given.length, 5000, "every job");
      expect(order).toEqual(["none", "p1", "p2", "p3", "p5", "p7"]);
    });

    it("refuses a priority out of range and adds nothing", async () => {
      const jobs = await open();
      const queue = queueName();
      for (const priority of [-1, 1.5, 2_097_153, Number.NaN]) {
        await expect(jobs.enqueue(queue, `bad-${priority}`, null, { priority })).rejects.toThrow(
          RangeError,
        );
      }
      expect(await jobs.depth(queue)).toBe(0);
    });

    it("retries a failing job with the attempt number rising each time", async () => {
      const jobs = await open();
      const queue = queueName();
      const attempts: number[] = [];
      await jobs.process(queue, async (job) => {
        attempts.push(job.attempt);
        if (job.attempt < 3) throw new Error(`fails on attempt ${job.attempt}`);
      });
      await jobs.enqueue(queue, "flaky", null, { attempts: 5 });
      await waitFor(() => attempts.length === 3, 10_000, "three attempts");
      await sleep(200);
      expect(attempts).toEqual([1, 2, 3]);
      expect(await jobs.depth(queue)).toBe(0);
    });

    it("drops a job after its last attempt and reports it to onFailed", async () => {
      const jobs = await open();
      const queue = queueName();
      const attempts: number[] = [];
      const failed: { job: Job; error: unknown }[] = [];
      await jobs.process(
        queue,
        async (job) => {
          attempts.push(job.attempt);
          throw new Error("always fails");
        },
        { onFailed: (job, error) => failed.push({ job, error }) },
      );
      await jobs.enqueue(queue, "doomed", { x: 1 }, { attempts: 2 });
      await waitFor(() => failed.length === 1, 10_000, "onFailed");
      await sleep(200);
      expect(attempts).toEqual([1, 2]);
      expect(failed).toHaveLength(1);
      expect(failed[0]?.job).toMatchObject({ id: "doomed", data: { x: 1 }, attempt: 2 });
      expect(failed[0]?.error).toBeInstanceOf(Error);
      expect((failed[0]?.error as Error).message).toBe("always fails");
      expect(await jobs.depth(queue)).toBe(0);
    });

    it("runs up to `concurrency` jobs at once and never more", async () => {
      const jobs = await open();
      const queue = queueName();
      let running = 0;
      let most = 0;
      let done = 0;
      await jobs.process(
        queue,
        async () => {
          running += 1;
          most = Math.max(most, running);
          await sleep(60);
          running -= 1;
          done += 1;
        },
        { concurrency: 3 },
      );
      await Promise.all(Array.from({ length: 9 }, (_, i) => jobs.enqueue(queue, `job-${i}`, i)));
      await waitFor(() => done === 9, 10_000, "nine jobs");
      expect(most).toBe(3);
    });

    it("shares jobs between two consumers so that each job runs once and never twice at a time", async () => {
      const producer = await open();
      const consumers = [await open(), await open()];
      const queue = queueName();
      const total = 200;
      const active = new Set<string>();
      const runs = new Map<string, number>();
      const overlaps: string[] = [];
      for (const consumer of consumers) {
        await consumer.process(
          queue,
          async (job) => {
            if (active.has(job.id)) overlaps.push(job.id);
            active.add(job.id);
            runs.set(job.id, (runs.get(job.id) ?? 0) + 1);
            await sleep(1);
            active.delete(job.id);
          },
          { concurrency: 4 },
        );
      }
      await Promise.all(
        Array.from({ length: total }, (_, i) => producer.enqueue(queue, `job-${i}`, i)),
      );
      await waitFor(() => runs.size === total && active.size === 0, 20_000, `${total} jobs`);
      await sleep(200);
      expect(overlaps).toEqual([]);
      expect(runs.size).toBe(total);
      expect([...runs.values()].every((count) => count === 1)).toBe(true);
      expect(await producer.depth(queue)).toBe(0);
    });

    it("counts waiting and delayed jobs in depth, but not the ones in hand", async () => {
      const jobs = await open();
      const queue = queueName();
      expect(await jobs.depth(queue)).toBe(0);
      await jobs.enqueue(queue, "a", null);
      await jobs.enqueue(queue, "b", null);
      await jobs.enqueue(queue, "c", null, { delayMs: 60_000 });
      expect(await jobs.depth(queue)).toBe(3);
      const hold = gate();
      let started = 0;
      await jobs.process(queue, async () => {
        started += 1;
        await hold.promise;
      });
      await waitFor(() => started === 1, 5000, "the first job");
      expect(await jobs.depth(queue)).toBe(2);
      hold.open();
      await waitFor(() => started === 2, 5000, "the second job");
      // Only the delayed job is left, once the second completes.
      await waitFor(async () => (await jobs.depth(queue)) === 1);
    });

    it("waits in close() for the jobs in hand to finish", async () => {
      const jobs = await open();
      const queue = queueName();
      let started = false;
      let finished = false;
      await jobs.process(queue, async () => {
        started = true;
        await sleep(300);
        finished = true;
      });
      await jobs.enqueue(queue, "slow", null);
      await waitFor(() => started, 5000, "the job to start");
      const closing = Date.now();
      await jobs.close();
      expect(finished).toBe(true);
      expect(Date.now() - closing).toBeLessThan(10_000);
    });
  });
}
