/**
 * Prometheus metrics of one cluster, served at `GET /metrics`.
 *
 * What the database knows is read at each scrape, so any web process answers for the whole
 * cluster (tasks by state, runs by outcome, how long runs waited to be claimed, the outbox
 * and the job queues). What only a process sees is counted in that process: inbox requests
 * and signature verifications by outcome, delivery attempts by peer and outcome, and the runs
 * its own worker finished. Sum these over processes (`sum by (outcome)`).
 * @module
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { sql, type Kysely } from "kysely";
import type { JobQueue } from "../queue/job-queue.ts";
import { QUEUES } from "../domain/task-service.ts";
import type { DatabaseSchema } from "../store/schema.ts";

/** The counters a cluster's events feed. */
export interface ClusterMetrics {
  readonly registry: Registry;
  /** An inbox request's outcome: `accepted`, a refusal reason, or an ignore reason. */
  inbox(outcome: string): void;
  /** A run this process's worker finished, with its times. */
  runFinished(state: string, durationSeconds: number): void;
  /** An inbox request's signature check: `verified`, or why it failed. */
  inboxVerification(outcome: string): void;
  /**
   * One delivery attempt to `peer` (an inbox's host): `delivered`, `gone`, `http-error`,
   * `unreachable`, or `refused` (the address policy refused the inbox; nothing was sent).
   */
  delivery(peer: string, outcome: string): void;
}

const TASK_STATES = ["unscheduled", "pending", "running", "completed", "failed", "exception"];

/** Creates the registry with database-backed gauges and process counters. */
export function createClusterMetrics(options: {
  readonly db: Kysely<DatabaseSchema>;
  readonly jobs: JobQueue;
}): ClusterMetrics {
  const { db, jobs } = options;
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "taskweb_process_" });

  new Gauge({
    name: "taskweb_tasks",
    help: "Tasks of this cluster by state (inactive ones count as unscheduled).",
    labelNames: ["state"],
    registers: [registry],
    async collect() {
      const rows = await db
        .selectFrom("tasks")
        .select(["state", sql<number>`count(*)::int`.as("n")])
        .groupBy("state")
        .execute();
      for (const state of TASK_STATES) {
        this.set({ state }, Number(rows.find((r) => r.state === state)?.n ?? 0));
      }
    },
  });
  new Gauge({
    name: "taskweb_runs_resolved",
    help: "Runs ever resolved on this cluster, by state and reason (a count that only grows).",
    labelNames: ["state", "reason"],
    registers: [registry],
    async collect() {
      const rows = await db
        .selectFrom("runs")
        .select(["state", "reason_resolved", sql<number>`count(*)::int`.as("n")])
        .where("state", "in", ["completed", "failed", "exception"])
        .groupBy(["state", "reason_resolved"])
        .execute();
      this.reset();
      for (const r of rows) {
        this.set({ state: r.state, reason: r.reason_resolved ?? "" }, Number(r.n));
      }
    },
  });
  new Gauge({
    name: "taskweb_run_pending_seconds",
    help: "How long runs claimed in the last 15 minutes waited from pending to claimed, by quantile.",
    labelNames: ["quantile"],
    registers: [registry],
    async collect() {
      const row = await sql<{ p50: number | null; p90: number | null; p99: number | null }>`
        select
          percentile_cont(0.5) within group (order by extract(epoch from started_at - scheduled_at)) as p50,
          percentile_cont(0.9) within group (order by extract(epoch from started_at - scheduled_at)) as p90,
          percentile_cont(0.99) within group (order by extract(epoch from started_at - scheduled_at)) as p99
        from runs
        where started_at > now() - interval '15 minutes' and worker_id is not null
      `.execute(db);
      const values = row.rows[0];
      this.reset();
      if (values?.p50 == null) return;
      this.set({ quantile: "0.5" }, Number(values.p50));
      this.set({ quantile: "0.9" }, Number(values.p90));
      this.set({ quantile: "0.99" }, Number(values.p99));
    },
  });
  new Gauge({
    name: "taskweb_outbox_undelivered",
    help: "Outbox activities not yet handed to delivery.",
    registers: [registry],
    async collect() {
      const row = await db
        .selectFrom("outbox")
        .select(sql<number>`count(*)::int`.as("n"))
        .where("fanned_out_at", "is", null)
        .executeTakeFirst();
      this.set(Number(row?.n ?? 0));
    },
  });
  new Gauge({
    name: "taskweb_queue_depth",
    help: "Jobs waiting or delayed in each queue of this cluster (not those being handled).",
    labelNames: ["queue"],
    registers: [registry],
    async collect() {
      for (const queue of Object.values(QUEUES)) {
        this.set({ queue }, await jobs.depth(queue));
      }
    },
  });
  const inbox = new Counter({
    name: "taskweb_inbox_requests_total",
    help: "Inbox POSTs handled by this process, by outcome: accepted, or why they were refused or ignored.",
    labelNames: ["outcome"],
    registers: [registry],
  });
  const verifications = new Counter({
    name: "taskweb_inbox_verifications_total",
    help: "Inbox POSTs whose HTTP signature this process checked, by outcome: verified, or why not (no-signature, invalid-signature, key-fetch-failed, key-not-owned-by-actor, body-not-covered).",
    labelNames: ["outcome"],
    registers: [registry],
  });
  const deliveries = new Counter({
    name: "taskweb_deliveries_total",
    help: "Delivery attempts this process made to peers' inboxes, by peer (host:port) and outcome: delivered, gone (404/410, not retried), http-error or unreachable (retried with backoff).",
    labelNames: ["peer", "outcome"],
    registers: [registry],
  });
  const runs = new Histogram({
    name: "taskweb_run_duration_seconds",
    help: "Runs finished by this process's worker, from claim to resolution, by state.",
    labelNames: ["state"],
    buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14_400],
    registers: [registry],
  });
  return {
    registry,
    inbox: (outcome) => inbox.inc({ outcome }),
    runFinished: (state, seconds) => runs.observe({ state }, seconds),
    inboxVerification: (outcome) => verifications.inc({ outcome }),
    delivery: (peer, outcome) => deliveries.inc({ peer, outcome }),
  };
}
