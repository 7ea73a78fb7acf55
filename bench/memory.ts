/**
 * Memory: the resident set of a cluster as users run it — `taskweb start` in its own process
 * on the chosen backend — idle after its first start, idle after a restart, and again with
 * 100,000 resolved tasks (and their runs) in its history after it has served the task list
 * once. Resident memory is read from
 * `/proc/<pid>/status` of the server process and its children (the launcher re-executes
 * with the project's Node).
 *
 *   npm run bench -- memory [--runs 100000] [--backend …]
 */
import { readFile, readdir } from "node:fs/promises";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { openDatabase, type Database } from "../server/store/database.ts";
import { migrateToLatest } from "../server/store/migrate.ts";
import { freePort } from "../test/support/ports.ts";
import {
  BENCH_TOKEN,
  serverUrls,
  spawnTaskweb,
  until,
  type BenchBackend,
  type TaskwebProcess,
} from "./support.ts";

/** The result of the memory benchmark. */
export interface MemoryResult {
  readonly benchmark: "memory";
  readonly backend: BenchBackend;
  readonly unit: "MiB";
  /** Idle after the first start (which creates the database). */
  readonly firstStartIdleRssMiB: number;
  /** Idle after a restart on the same data: what a running installation holds. */
  readonly idleRssMiB: number;
  readonly historyTasks: number;
  readonly withHistoryRssMiB: number;
  /** Seconds to write the history (setup, not a figure of the server). */
  readonly historySetupSeconds: number;
}

/** Resident memory of `pid` and every descendant, in MiB. */
async function treeRssMiB(pid: number): Promise<number> {
  const children = new Map<number, number[]>();
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      // The process ended while we looked.
    }
  }
  let kib = 0;
  const pending = [pid];
  while (pending.length > 0) {
    const p = pending.pop()!;
    try {
      const status = await readFile(`/proc/${p}/status`, "utf8");
      kib += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    } catch {
      continue;
    }
    pending.push(...(children.get(p) ?? []));
  }
  return Math.round((kib / 1024) * 10) / 10;
}

/** Writes `count` resolved tasks with one completed run each, in batches. */
async function writeHistory(database: Database, count: number): Promise<void> {
  const db = database.db;
  const batch = 2_000;
  const now = Date.now();
  for (let start = 0; start < count; start += batch) {
    const n = Math.min(batch, count - start);
    const tasks = Array.from({ length: n }, (_, k) => {
      const i = start + k;
      const at = new Date(now - (count - i) * 1000);
      return {
        task_id: `history-${i}`,
        task_group_id: `history-${Math.floor(i / 100)}`,
        name: `history task ${i}`,
        state: "completed" as const,
        requires: "all-completed" as const,
        definition: JSON.stringify({ payload: { command: ["true"] }, tags: { n: String(i % 7) } }),
        retries: 0,
        retries_left: 0,
        deadline: new Date(at.getTime() + 3_600_000),
        resolved_at: at,
        updated_at: at,
      };
    });
    await db
      .insertInto("tasks")
      .values(tasks as never)
      .execute();
    await db
      .insertInto("runs")
      .values(
        tasks.map((t) => ({
          task_id: t.task_id,
          run_id: 0,
          state: "completed" as const,
          reason_created: "scheduled",
          reason_resolved: "completed",
          worker_id: "history",
          scheduled_at: t.resolved_at,
          started_at: t.resolved_at,
          resolved_at: t.resolved_at,
          exit_code: 0,
        })) as never,
      )
      .execute();
  }
}

/** Runs the benchmark with `historyTasks` resolved tasks in the second measurement. */
export async function memory(backend: BenchBackend, historyTasks: number): Promise<MemoryResult> {
  const dir = await mkdtemp(join(tmpdir(), "taskweb-bench-memory-"));
  const schema = `bench_mem_${randomBytes(4).toString("hex")}`;
  const env: Record<string, string> = {
    TASKWEB_NAME: "mem",
    TASKWEB_DATA_DIR: join(dir, "data"),
    TASKWEB_ADMIN_TOKEN: BENCH_TOKEN,
    HOST: "127.0.0.1",
    PORT: String(await freePort()),
  };
  const origin = `http://127.0.0.1:${env.PORT}`;
  if (backend === "postgres+redis") {
    const urls = serverUrls();
    Object.assign(env, {
      DATABASE_URL: urls.databaseUrl,
      DATABASE_SCHEMA: schema,
      REDIS_URL: urls.redisUrl,
      REDIS_PREFIX: `bench-${schema}`,
    });
  }
  let server: TaskwebProcess | undefined;
  try {
    server = spawnTaskweb(["start"], env);
    await server.waitForOutput("API:", 60_000);
    await new Promise((r) => setTimeout(r, 3_000));
    const firstStart = await treeRssMiB(server.pid!);
    await server.stop();
    server = spawnTaskweb(["start"], env);
    await server.waitForOutput("API:", 60_000);
    await new Promise((r) => setTimeout(r, 3_000));
    const idle = await treeRssMiB(server.pid!);
    await server.stop();
    server = undefined;

    const t0 = performance.now();
    const database = await openDatabase(
      backend === "postgres+redis"
        ? { url: serverUrls().databaseUrl, schema }
        : { dataDir: join(dir, "data") },
    );
    await migrateToLatest(database.db);
    await writeHistory(database, historyTasks);
    await database.close();
    const setup = (performance.now() - t0) / 1000;

    server = spawnTaskweb(["start"], env);
    await server.waitForOutput("API:", 60_000);
    const api = `${origin}/api/v1/tasks?limit=1000`;
    await until(async () => {
      const response = await fetch(api, { headers: { authorization: `Bearer ${BENCH_TOKEN}` } });
      return response.ok ? true : undefined;
    }, 60_000);
    await new Promise((r) => setTimeout(r, 2_000));
    const withHistory = await treeRssMiB(server.pid!);
    return {
      benchmark: "memory",
      backend,
      unit: "MiB",
      firstStartIdleRssMiB: firstStart,
      idleRssMiB: idle,
      historyTasks,
      withHistoryRssMiB: withHistory,
      historySetupSeconds: Math.round(setup * 10) / 10,
    };
  } finally {
    await server?.stop();
    await rm(dir, { recursive: true, force: true });
    if (backend === "postgres+redis") {
      const client = new pg.Client({ connectionString: serverUrls().databaseUrl });
      await client.connect();
      await client.query(`drop schema if exists "${schema}" cascade`);
      await client.end();
    }
  }
}
