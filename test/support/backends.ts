/**
 * The backends every store, queue and end-to-end suite runs on: the embedded default
 * (PGlite + the embedded queue) always, and PostgreSQL + Redis when the run has them.
 * Under CI=true the services are required (global-setup fails the run without them).
 */
import { randomBytes } from "node:crypto";
import { describe, inject, it } from "vitest";
import type { DatabaseOptions } from "../../server/store/database.ts";

/** One backend for a suite: how to open a database and, for Redis, a connection and prefix. */
export interface TestBackend {
  readonly name: "embedded" | "postgres+redis";
  /** Options for a fresh, empty database (a new PGlite, or a new PostgreSQL schema). */
  database(): DatabaseOptions;
  /** Redis URL, or undefined for the embedded queue. */
  readonly redisUrl: string | undefined;
  /** A fresh Redis key prefix for one cluster or queue under test. */
  redisPrefix(): string;
}

function unique(): string {
  return randomBytes(4).toString("hex");
}

const embedded: TestBackend = {
  name: "embedded",
  database: () => ({}),
  redisUrl: undefined,
  redisPrefix: () => "",
};

/** The PostgreSQL + Redis backend, or a reason why this run does not have it. */
export function serverBackend(): TestBackend | { skip: string } {
  const pgUrl = inject("pgUrl");
  const redisUrl = inject("redisUrl");
  if (pgUrl == null || redisUrl == null) {
    if (process.env.CI === "true") {
      // Never skip in CI: a missing service is a failure.
      throw new Error("CI=true but PostgreSQL or Redis is not configured for this test run.");
    }
    return {
      skip:
        "PostgreSQL + Redis not configured (set TASKWEB_TEST_DATABASE_URL and " +
        "TASKWEB_TEST_REDIS_URL, as .ci/run does)",
    };
  }
  const base = inject("redisPrefix");
  return {
    name: "postgres+redis",
    database: () => ({ url: pgUrl, schema: `s_${unique()}` }),
    redisUrl,
    redisPrefix: () => `${base}-${unique()}`,
  };
}

/**
 * Backends for `describe.each`. Where PostgreSQL + Redis are missing outside CI, the suite
 * for them is listed with its reason by {@link describeServerBackend}.
 */
export function testBackends(): TestBackend[] {
  const server = serverBackend();
  return "skip" in server ? [embedded] : [embedded, server];
}

/** Prints why the PostgreSQL + Redis variant of a suite did not run (never silent). */
export function serverBackendSkipReason(): string | undefined {
  const server = serverBackend();
  return "skip" in server ? server.skip : undefined;
}

/**
 * Declares `suite` once per backend (`<title> on embedded`, `<title> on postgres+redis`).
 * Where PostgreSQL + Redis are missing outside CI, the variant is listed as skipped with the
 * reason, never left out silently.
 */
export function describeEachBackend(title: string, suite: (backend: TestBackend) => void): void {
  const reason = serverBackendSkipReason();
  if (reason != null) {
    describe(`${title} on postgres+redis`, () => {
      it.skip(`runs only with PostgreSQL and Redis: ${reason}`, () => {});
    });
  }
  describe.each(testBackends())(`${title} on $name`, suite);
}

/**
 * Declares `suite` for PostgreSQL + Redis only, for behaviour the embedded default does not
 * have (a Redis that loses its data). Outside CI without the services it is listed as
 * skipped with the reason; under CI=true their absence fails the run.
 */
export function describeServerBackend(title: string, suite: (backend: TestBackend) => void): void {
  const server = serverBackend();
  if ("skip" in server) {
    describe(`${title} on postgres+redis`, () => {
      it.skip(`runs only with PostgreSQL and Redis: ${server.skip}`, () => {});
    });
    return;
  }
  describe(`${title} on postgres+redis`, () => suite(server));
}
