/**
 * Chaos: three clusters, each a `taskweb web` and a `taskweb worker` process started
 * through the real command line, on one PostgreSQL (a schema each) and one Redis server
 * of the test's own. Each public URL is a small HTTP proxy in the test, so that a peer's
 * inbox can answer 503 for a while. Chains of tasks cross the three clusters (up → mid →
 * down, and down also waits on up directly: fan-in). While they run, the test kills web and
 * worker processes with SIGKILL at random and restarts them, makes `down`'s inbox answer 503
 * for a few seconds, and runs FLUSHALL on Redis once. At the end every task completed with
 * exactly one completed run, every dependency resolved, and no activity was processed twice;
 * then every process stops cleanly on SIGTERM.
 * Bounded: kills stop after 15 s, and the tasks must all complete within two minutes after.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import {
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type Server,
} from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import type { Kysely } from "kysely";
import { afterAll, beforeAll, expect, it } from "vitest";
import { openDatabase, type Database } from "../../server/store/database.ts";
import type { DatabaseSchema } from "../../server/store/schema.ts";
import { describeServerBackend } from "../support/backends.ts";
import { TASKWEB_BIN } from "../support/cli.ts";
import { TEST_TOKEN, waitFor } from "../support/clusters.ts";
import { freePort } from "../support/ports.ts";
import { startRedisServer, type RedisServer } from "../support/redis-server.ts";

/** Task chains; each makes one task on every cluster (3 × CHAINS tasks). */
const CHAINS = 60;
/** Kills happen during this window, from the start of the chaos. */
const CHAOS_MS = 15_000;
const NAMES = ["up", "mid", "down"] as const;
type Name = (typeof NAMES)[number];
type Role = "web" | "worker";

interface Peer {
  readonly name: Name;
  readonly webPort: number;
  readonly publicUrl: string;
  readonly actor: string;
  readonly proxy: Server;
  readonly env: Record<string, string>;
  readonly processes: Map<Role, ChildProcess>;
  /** While true, POSTs to this cluster's inboxes answer 503. */
  inboxDown: boolean;
  refused: number;
  database: Database;
}

async function startProxy(webPort: () => number, peer: () => Peer | undefined): Promise<Server> {
  const server = createServer((req, res) => {
    const p = peer();
    if (p?.inboxDown === true && req.method === "POST" && /inbox$/.test(req.url ?? "")) {
      p.refused++;
      req.resume();
      res.writeHead(503, { "retry-after": "1" });
      res.end();
      return;
    }
    const upstream = httpRequest(
      {
        host: "127.0.0.1",
        port: webPort(),
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (response) => {
        res.writeHead(response.statusCode ?? 502, response.headers as IncomingHttpHeaders);
        response.pipe(res);
      },
    );
    upstream.on("error", () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return server;
}

describeServerBackend("chaos across three clusters", (backend) => {
  let redis: RedisServer;
  let scratch: string;
  const peers = new Map<Name, Peer>();
  const output: string[] = [];
  let stopping = false;
  const log = (line: string) => output.push(`[test] ${line}\n`);

  const spawnRole = (peer: Peer, role: Role) => {
    const args = role === "web" ? ["web", "--port", String(peer.webPort)] : ["worker"];
    const child = spawn(process.execPath, [TASKWEB_BIN, ...args], {
      env: peer.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const tag = `[${peer.name} ${role}] `;
    child.stdout?.on("data", (d: Buffer) => output.push(tag + d.toString()));
    child.stderr?.on("data", (d: Buffer) => output.push(tag + d.toString()));
    peer.processes.set(role, child);
    return child;
  };

  const api = async (peer: Peer, method: string, path: string, body?: unknown) => {
    // The web process may be down for a moment: client-chosen ids make a repeat harmless.
    return await waitFor(
      `${method} ${path} on ${peer.name}`,
      async () => {
        try {
          const response = await fetch(`${peer.publicUrl}/api/v1${path}`, {
            method,
            headers: { authorization: `Bearer ${TEST_TOKEN}`, "content-type": "application/json" },
            ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
            signal: AbortSignal.timeout(10_000),
          });
          if (response.status >= 500) return undefined;
          return { status: response.status, json: (await response.json()) as unknown };
        } catch {
          return undefined;
        }
      },
      60_000,
    );
  };

  const ready = async (peer: Peer) =>
    await waitFor(
      `${peer.name} to be ready`,
      async () => {
        try {
          const response = await fetch(`${peer.publicUrl}/readyz`, {
            signal: AbortSignal.timeout(2000),
          });
          return response.status === 200 ? true : undefined;
        } catch {
          return undefined;
        }
      },
      60_000,
    );

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), "taskweb-chaos-"));
    redis = await startRedisServer();
    for (const name of NAMES) {
      const db = backend.database();
      const webPort = await freePort();
      const holder: { peer?: Peer } = {};
      const proxy = await startProxy(
        () => webPort,
        () => holder.peer,
      );
      const address = proxy.address();
      const publicUrl = `http://127.0.0.1:${typeof address === "object" && address != null ? address.port : 0}`;
      const env: Record<string, string> = {
        ...(process.env as Record<string, string>),
        DATABASE_URL: db.url!,
        DATABASE_SCHEMA: db.schema!,
        REDIS_URL: redis.url,
        REDIS_PREFIX: `chaos-${name}`,
        TASKWEB_ADMIN_TOKEN: TEST_TOKEN,
        TASKWEB_PUBLIC_URL: publicUrl,
        TASKWEB_NAME: name,
        TASKWEB_PRIVATE_ADDRESS_ALLOWLIST: "127.0.0.1/32",
        WORKER_CONCURRENCY: "4",
        TASKWEB_CLAIM_LEASE_MS: "2000",
        // Every reconcile dereferences each remote task still waited on: not too often.
        TASKWEB_RECONCILE_INTERVAL_MS: "10000",
        TASKWEB_SHUTDOWN_GRACE_MS: "1000",
        TASKWEB_DELIVERY_INITIAL_DELAY_MS: "200",
        TASKWEB_DELIVERY_MAX_DELAY_MS: "2000",
        TASKWEB_DELIVERY_ATTEMPT_LEASE_MS: "3000",
        TASKWEB_CIRCUIT_FAILURES: "5",
        TASKWEB_CIRCUIT_COOLDOWN_MS: "1000",
        TASKWEB_WORK_DIR: scratch,
        LOG_LEVEL: "error",
      };
      const peer: Peer = {
        name,
        webPort,
        publicUrl,
        actor: `${publicUrl}/clusters/${name}`,
        proxy,
        env,
        processes: new Map(),
        inboxDown: false,
        refused: 0,
        database: await openDatabase({ url: db.url, schema: db.schema }),
      };
      holder.peer = peer;
      peers.set(name, peer);
    }
    // Schemas first, so that the processes of a cluster do not all migrate at once.
    const codes = await Promise.all(
      [...peers.values()].map((peer) => {
        const migrate = spawn(process.execPath, [TASKWEB_BIN, "migrate"], {
          env: peer.env,
          stdio: "ignore",
        });
        return new Promise((r) => migrate.on("exit", r));
      }),
    );
    expect(codes).toEqual([0, 0, 0]);
    for (const peer of peers.values()) {
      spawnRole(peer, "web");
      spawnRole(peer, "worker");
    }
    try {
      for (const peer of peers.values()) await ready(peer);
      const up = peers.get("up")!;
      const mid = peers.get("mid")!;
      const down = peers.get("down")!;
      for (const [follower, followee] of [
        [mid, up],
        [down, up],
        [down, mid],
      ] as const) {
        expect((await api(follower, "POST", "/following", { actor: followee.actor })).status).toBe(
          202,
        );
      }
      for (const follower of [mid, down]) {
        await waitFor(`${follower.name}'s follows to be accepted`, async () => {
          const { json } = await api(follower, "GET", "/following");
          const rows = (json as { following: { state: string }[] }).following;
          return rows.length > 0 && rows.every((r) => r.state === "accepted") ? true : undefined;
        });
      }
    } catch (error) {
      throw new Error(`${String(error)}\nprocess output:\n${output.join("").slice(-20_000)}`, {
        cause: error,
      });
    }
  }, 180_000);

  afterAll(async () => {
    stopping = true;
    const all = [...peers.values()].flatMap((p) => [...p.processes.values()]);
    for (const child of all) child.kill("SIGKILL");
    await Promise.all(
      all.map((c) =>
        c.exitCode != null || c.signalCode != null
          ? Promise.resolve()
          : new Promise((r) => c.on("exit", r)),
      ),
    );
    for (const peer of peers.values()) {
      await peer.database.close();
      await new Promise((r) => peer.proxy.close(r));
    }
    await redis?.kill();
    await rm(scratch, { recursive: true, force: true });
  });

  it("runs every task exactly once and resolves every dependency through kills, 503s and FLUSHALL", async () => {
    const up = peers.get("up")!;
    const mid = peers.get("mid")!;
    const down = peers.get("down")!;
    const command = (cluster: Name) => [
      "sh",
      "-c",
      `echo "$TASKWEB_TASK_ID" >> "${join(scratch, `executions-${cluster}.log`)}"`,
    ];
    const chains = Array.from({ length: CHAINS }, (_, i) => i);
    const groupOf = (cluster: Name, tasks: unknown[], id: string) => ({
      taskGroupId: id,
      tasks: tasks.map((t) => ({ ...(t as object), payload: { command: command(cluster) } })),
    });
    // Dependents first: they wait for tasks that do not exist yet on the other clusters.
    const created = [
      await api(
        down,
        "POST",
        "/task-groups",
        groupOf(
          "down",
          chains.map((i) => ({
            taskId: `c-${i}`,
            dependencies: [`${mid.actor}/tasks/b-${i}`, `${up.actor}/tasks/a-${i}`],
          })),
          "down-all",
        ),
      ),
      await api(
        mid,
        "POST",
        "/task-groups",
        groupOf(
          "mid",
          chains.map((i) => ({ taskId: `b-${i}`, dependencies: [`${up.actor}/tasks/a-${i}`] })),
          "mid-all",
        ),
      ),
    ];
    for (const c of created) expect(c.status).toBe(201);

    let kills = 0;
    let flushed = false;
    const started = Date.now();
    const progress = setInterval(() => {
      void Promise.all(
        [up, mid, down].map(async (p) => {
          const rows = await p.database.db
            .selectFrom("tasks")
            .select("task_id")
            .where("state", "=", "completed")
            .execute();
          return `${p.name} ${rows.length}`;
        }),
      )
        .then((line) => log(`${Math.round((Date.now() - started) / 1000)} s: ${line.join(", ")}`))
        .catch(() => {});
    }, 5000);
    const chaos = (async () => {
      let windowDone = false;
      while (!stopping && Date.now() - started < CHAOS_MS) {
        await new Promise((r) => setTimeout(r, 2500 + Math.random() * 1500));
        const elapsed = Date.now() - started;
        if (!windowDone && elapsed > 1000) {
          windowDone = true;
          down.inboxDown = true;
          log("down's inbox answers 503");
          // Until it has refused a few deliveries and 3 s have passed (at most 60 s: on a
          // loaded machine the first completions come late).
          const opened = Date.now();
          const closer = setInterval(() => {
            const open = Date.now() - opened;
            if ((down.refused >= 3 && open >= 3000) || open >= 60_000 || stopping) {
              clearInterval(closer);
              down.inboxDown = false;
              log(`down's inbox is back after refusing ${down.refused} POSTs`);
            }
          }, 200);
        }
        if (!flushed && elapsed > 6000) {
          const client = new Redis(redis.url);
          await client.flushall();
          client.disconnect();
          flushed = true;
          log("FLUSHALL");
        }
        const peer = [up, mid, down][Math.floor(Math.random() * 3)]!;
        const role: Role = Math.random() < 0.5 ? "web" : "worker";
        const victim = peer.processes.get(role);
        if (victim == null || victim.exitCode != null || victim.signalCode != null) continue;
        victim.kill("SIGKILL");
        await new Promise((r) => victim.on("exit", r));
        kills++;
        log(`SIGKILL ${peer.name} ${role}`);
        await new Promise((r) => setTimeout(r, 300 + Math.random() * 700));
        if (!stopping) spawnRole(peer, role);
      }
    })();
    // Upstream tasks arrive in three batches while the chaos goes on.
    for (const [n, batch] of [
      chains.slice(0, 25),
      chains.slice(25, 50),
      chains.slice(50),
    ].entries()) {
      const res = await api(
        up,
        "POST",
        "/task-groups",
        groupOf(
          "up",
          batch.map((i) => ({ taskId: `a-${i}` })),
          `up-${n}`,
        ),
      );
      expect(res.status).toBe(201);
      await new Promise((r) => setTimeout(r, 2000));
    }
    await chaos;
    const chaosEnded = Date.now();

    const dbs: [Name, Kysely<DatabaseSchema>][] = [...peers.values()].map((p) => [
      p.name,
      p.database.db,
    ]);
    try {
      await waitFor(
        "every task on every cluster to complete",
        async () => {
          for (const [, db] of dbs) {
            const open = await db
              .selectFrom("tasks")
              .select("task_id")
              .where("state", "!=", "completed")
              .execute();
            if (open.length > 0) return undefined;
          }
          return true;
        },
        120_000,
      );
    } catch (error) {
      clearInterval(progress);
      const states: Record<string, unknown> = {};
      for (const [name, db] of dbs) {
        states[name] = await db
          .selectFrom("tasks")
          .select(["state", (eb) => eb.fn.countAll().as("n")])
          .groupBy("state")
          .execute();
      }
      throw new Error(
        `${String(error)}\nstates: ${JSON.stringify(states)}\n${output.filter((l) => l.startsWith("[test]")).join("")}\n${output.join("").slice(-10_000)}`,
        { cause: error },
      );
    }

    const counts: Record<string, unknown> = {
      kills,
      flushed,
      refusedBy503: down.refused,
      chaosSeconds: (chaosEnded - started) / 1000,
      convergedSecondsAfterChaos: (Date.now() - chaosEnded) / 1000,
    };
    for (const [name, db] of dbs) {
      const tasks = await db.selectFrom("tasks").select(["task_id", "state"]).execute();
      expect(tasks).toHaveLength(CHAINS);
      const runs = await db
        .selectFrom("runs")
        .select(["task_id", "state", "reason_resolved"])
        .execute();
      const completedRuns = new Map<string, number>();
      for (const r of runs.filter((r) => r.state === "completed")) {
        completedRuns.set(r.task_id, (completedRuns.get(r.task_id) ?? 0) + 1);
      }
      // Every task ran to completion exactly once.
      for (const t of tasks)
        expect([t.task_id, completedRuns.get(t.task_id)]).toEqual([t.task_id, 1]);
      const lostRuns = runs.filter((r) => r.state !== "completed");
      // Any other run is one whose worker was killed under it.
      for (const r of lostRuns) expect(r.reason_resolved).toBe("claim-expired");
      // Each execution of a command left a line; a task whose worker was killed mid-run may
      // have started its command once more (at-least-once, as Taskcluster), never more often
      // than it had runs.
      const lines = (await readFile(join(scratch, `executions-${name}.log`), "utf8"))
        .split("\n")
        .filter((l) => l !== "");
      const executions = new Map<string, number>();
      for (const l of lines) executions.set(l, (executions.get(l) ?? 0) + 1);
      const runsPerTask = new Map<string, number>();
      for (const r of runs) runsPerTask.set(r.task_id, (runsPerTask.get(r.task_id) ?? 0) + 1);
      for (const t of tasks) {
        expect(executions.get(t.task_id) ?? 0).toBeGreaterThanOrEqual(1);
        expect(executions.get(t.task_id)!).toBeLessThanOrEqual(runsPerTask.get(t.task_id)!);
      }
      const unresolved = await db
        .selectFrom("task_dependencies")
        .select(["task_id", "dependency", "resolution"])
        .where((eb) => eb.or([eb("resolution", "is", null), eb("resolution", "!=", "completed")]))
        .execute();
      expect(unresolved).toEqual([]);
      const dependencies = await db.selectFrom("task_dependencies").select("task_id").execute();
      const processed = await db
        .selectFrom("inbox_processed")
        .select(["activity_id", "types"])
        .execute();
      expect(new Set(processed.map((p) => p.activity_id)).size).toBe(processed.length);
      const deliveries = await db
        .selectFrom("deliveries")
        .select(["delivered_at", "abandoned_at", "attempts", "failures"])
        .execute();
      counts[name] = {
        tasks: tasks.length,
        completedRuns: [...completedRuns.values()].reduce((a, b) => a + b, 0),
        runsLostToKills: lostRuns.length,
        commandExecutions: lines.length,
        dependencies: dependencies.length,
        activitiesProcessed: processed.length,
        deliveries: deliveries.length,
        deliveriesRetried: deliveries.filter((d) => d.failures > 0 || d.attempts > 1).length,
        deliveriesOpen: deliveries.filter((d) => d.delivered_at == null && d.abandoned_at == null)
          .length,
      };
    }
    // Every TaskCompleted of a followee reached its followers exactly once.
    const completedBy = async (peer: Peer) =>
      (await peer.database.db.selectFrom("outbox").select(["activity_id", "types"]).execute())
        .filter((o) => o.types.includes("TaskCompleted"))
        .map((o) => o.activity_id);
    const upCompleted = await completedBy(up);
    const midCompleted = await completedBy(mid);
    expect(upCompleted).toHaveLength(CHAINS);
    expect(midCompleted).toHaveLength(CHAINS);
    for (const [follower, expected] of [
      [mid, upCompleted],
      [down, [...upCompleted, ...midCompleted]],
    ] as const) {
      // The dependents may have run on a dereferenced state already; the activities still
      // arrive, by a retried delivery or by paging the outbox, each processed once.
      const processedOf = async () =>
        await follower.database.db
          .selectFrom("inbox_processed")
          .select("activity_id")
          .where("activity_id", "in", expected)
          .execute();
      const rows = await waitFor(
        `${follower.name} to process every completion it follows`,
        async () => {
          const r = await processedOf();
          return r.length === expected.length ? r : undefined;
        },
        60_000,
      ).catch(async (error: unknown) => {
        // What became of the missing ones: their deliveries on every sender, and the
        // follower's view of its followees.
        const seen = new Set((await processedOf()).map((r) => r.activity_id));
        const missing = expected.filter((id) => !seen.has(id));
        const deliveries = [];
        for (const sender of [up, mid]) {
          deliveries.push(
            ...(await sender.database.db
              .selectFrom("deliveries")
              .selectAll()
              .where("activity_id", "in", missing)
              .execute()),
          );
        }
        const following = await follower.database.db.selectFrom("following").selectAll().execute();
        throw new Error(
          `${String(error)}\nmissing: ${JSON.stringify(missing)}\ndeliveries: ${JSON.stringify(deliveries)}\nfollowing: ${JSON.stringify(following)}\n${output.join("").slice(-10_000)}`,
          { cause: error },
        );
      });
      expect(new Set(rows.map((r) => r.activity_id)).size).toBe(expected.length);
    }
    expect(kills).toBeGreaterThan(0);
    expect(flushed).toBe(true);
    expect(down.refused).toBeGreaterThan(0);
    clearInterval(progress);
    // Every web and worker process, restarted or not, stops cleanly on SIGTERM.
    const exits = await Promise.all(
      [...peers.values()].flatMap((p) =>
        [...p.processes.entries()].map(async ([role, child]) => {
          const exited = new Promise((r) => child.on("exit", (code, signal) => r(code ?? signal)));
          child.kill("SIGTERM");
          return `${p.name} ${role}: ${String(await exited)}`;
        }),
      ),
    );
    expect(exits, output.join("").slice(-20_000)).toEqual(
      [...peers.values()].flatMap((p) => [`${p.name} web: 0`, `${p.name} worker: 0`]),
    );
    const summary = JSON.stringify(counts, null, 2);
    console.log(output.filter((l) => l.startsWith("[test]")).join(""));
    console.log(`chaos counts: ${summary}`);
  }, 300_000);
});
