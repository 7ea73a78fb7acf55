/**
 * Gives this test run its own PostgreSQL database and Redis key prefix, so that runs never
 * see each other's data, and removes both afterwards. `.ci/run` points the tests at the
 * services with `TASKWEB_TEST_DATABASE_URL` and `TASKWEB_TEST_REDIS_URL`.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { Redis } from "ioredis";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    /** PostgreSQL URL of this run's own database, when the run has PostgreSQL. */
    pgUrl: string | undefined;
    /** Redis URL, when the run has Redis. */
    redisUrl: string | undefined;
    /** Prefix of every Redis key this run writes. */
    redisPrefix: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const run = `${Date.now().toString(36)}_${randomBytes(3).toString("hex")}`;
  const adminUrl = process.env.TASKWEB_TEST_DATABASE_URL;
  const redisUrl = process.env.TASKWEB_TEST_REDIS_URL;
  const ci = process.env.CI === "true";
  if (ci && (adminUrl == null || redisUrl == null)) {
    throw new Error(
      "CI=true but TASKWEB_TEST_DATABASE_URL or TASKWEB_TEST_REDIS_URL is not set: " +
        "run the tests through .ci/run, which starts PostgreSQL and Redis.",
    );
  }
  let database: string | undefined;
  if (adminUrl != null) {
    database = `taskweb_test_${run}`;
    const client = new pg.Client({ connectionString: adminUrl });
    await client.connect();
    await client.query(`create database "${database}"`);
    await client.end();
    const url = new URL(adminUrl);
    url.pathname = `/${database}`;
    project.provide("pgUrl", url.href);
  }
  if (redisUrl != null) {
    const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1, lazyConnect: true });
    await redis.connect();
    await redis.ping();
    redis.disconnect();
  }
  const redisPrefix = `twtest-${run}`;
  project.provide("redisUrl", redisUrl);
  project.provide("redisPrefix", redisPrefix);
  if (adminUrl == null) project.provide("pgUrl", undefined);

  return async () => {
    if (adminUrl != null && database != null) {
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      await client.query(`drop database if exists "${database}" with (force)`);
      await client.end();
    }
    if (redisUrl != null) {
      const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
      const prefix = redisPrefix;
      let cursor = "0";
      do {
        const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
        cursor = next;
        if (keys.length > 0) await redis.del(...keys);
      } while (cursor !== "0");
      redis.disconnect();
    }
  };
}
