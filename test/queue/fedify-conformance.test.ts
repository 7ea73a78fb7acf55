/**
 * Fedify's own conformance suite for message queues (`testMessageQueue` from
 * `@fedify/testing`), run against taskweb's Fedify adapter over both job queues.
 */
import { testMessageQueue } from "@fedify/testing";
import { describe, it } from "vitest";
import { createBullMqJobQueue } from "../../server/queue/bullmq-job-queue.ts";
import { createEmbeddedJobQueue } from "../../server/queue/embedded-job-queue.ts";
import { createFedifyMessageQueue } from "../../server/queue/fedify-message-queue.ts";
import type { JobQueue } from "../../server/queue/job-queue.ts";
import { openDatabase } from "../../server/store/database.ts";
import { migrateToLatest } from "../../server/store/migrate.ts";
import { serverBackend, testBackends } from "../support/backends.ts";

/** Runs the suite with two adapters over two job queues that share one backend. */
async function runSuite(open: () => JobQueue): Promise<void> {
  const queues: JobQueue[] = [];
  await testMessageQueue(
    () => {
      const jobs = open();
      queues.push(jobs);
      return createFedifyMessageQueue(jobs, "fedify-conformance");
    },
    async ({ controller }) => {
      controller.abort();
      await Promise.all(queues.map((q) => q.close()));
    },
  );
}

describe("Fedify's message queue conformance suite", () => {
  for (const backend of testBackends()) {
    it(`passes on the embedded job queue (${backend.name})`, async () => {
      const database = await openDatabase(backend.database());
      try {
        await migrateToLatest(database.db);
        await runSuite(() => createEmbeddedJobQueue(database.db, { pollIntervalMs: 50 }));
      } finally {
        await database.close();
      }
    });
  }
  const server = serverBackend();
  if ("skip" in server) {
    it.skip(`passes on BullMQ: skipped, ${server.skip}`, () => {});
  } else {
    it("passes on BullMQ", async () => {
      const prefix = server.redisPrefix();
      await runSuite(() => createBullMqJobQueue({ url: server.redisUrl!, prefix }));
    });
  }
});
