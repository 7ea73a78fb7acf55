/**
 * Runs benchmarks and prints one JSON document per benchmark, backend and configuration,
 * then a short table on stderr. Only loopback is used; every loop is bounded.
 *
 *   npm run bench                                   # every benchmark, both backends
 *   npm run bench -- unblock-latency --runs 200 --backend embedded
 *   npm run bench -- throughput --runs 1000 --workers 1,2,4 --concurrency 4
 *   npm run bench -- graph-10k --runs 3
 *   npm run bench -- fanout --followers 100,1000 --runs 5
 *   npm run bench -- ingest --runs 2000 --concurrency 8
 *   npm run bench -- memory --runs 100000
 *
 * `--runs` is each benchmark's own count: unblock-latency's samples (default 200; the
 * polling baseline takes at most 20, every `--poll-ms`, 0 to leave it out), throughput's
 * tasks per configuration (default 500), graph-10k's repetitions of each timed step
 * (default 3), fanout's completions per configuration (default 5), ingest's activities
 * (default 2000), memory's resolved tasks in the history (default 100,000).
 */
import { parseArgs } from "node:util";
import { writeFile, mkdir } from "node:fs/promises";
import { availableParallelism, loadavg } from "node:os";
import type { BenchBackend } from "./support.ts";
import { fanout, type FanoutResult } from "./fanout.ts";
import { graph10k, type Graph10kResult } from "./graph-10k.ts";
import { ingest, type IngestResult } from "./ingest.ts";
import { memory, type MemoryResult } from "./memory.ts";
import { throughput, type ThroughputResult } from "./throughput.ts";
import { unblockLatency, type UnblockLatencyResult } from "./unblock-latency.ts";

/** What every benchmark reports, beside its own figures. */
interface BenchResult {
  readonly benchmark: string;
  readonly backend: BenchBackend;
}

/** Options for every benchmark; each reads those it needs. */
interface BenchOptions {
  readonly runs: number;
  readonly workers: readonly number[];
  readonly concurrency: number;
  readonly resolve: boolean;
  readonly followers: readonly number[];
  /** Polling interval of the unblock-latency baseline; 0 leaves it out. */
  readonly pollMs: number;
}

interface Benchmark {
  /** `--runs` when it is not given. */
  readonly defaultRuns: number;
  /** Runs on one backend; `report` gets each result with its line of the closing table. */
  run(
    backend: BenchBackend,
    options: BenchOptions,
    report: (result: BenchResult, line: string) => void,
  ): Promise<void>;
}

/** A benchmark whose results `line` summarises in the closing table. */
function benchmark<R extends BenchResult>(
  defaultRuns: number,
  run: (backend: BenchBackend, options: BenchOptions, report: (result: R) => void) => Promise<void>,
  line: (result: R) => string,
): Benchmark {
  return {
    defaultRuns,
    run: (backend, options, report) => run(backend, options, (r) => report(r, line(r))),
  };
}

const BENCHMARKS: Record<string, Benchmark> = {
  "unblock-latency": benchmark<UnblockLatencyResult>(
    200,
    async (backend, { runs, pollMs }, report) => {
      report(await unblockLatency(backend, runs));
      // Polling needs fewer samples: each costs half an interval on average.
      if (pollMs > 0) {
        report(await unblockLatency(backend, Math.min(runs, 20), { pollMs }));
      }
    },
    (r) =>
      `${r.mode === "poll" ? `polling every ${r.pollMs} ms` : "push"}: n=${r.n}  p50 ${r.p50} ms  p99 ${r.p99} ms  (floor ${r.floor.deliveryMs} ms)`,
  ),
  throughput: benchmark<ThroughputResult>(
    500,
    (backend, { runs, workers, concurrency }, report) =>
      throughput(backend, { tasks: runs, workers, concurrency }, report),
    (r) =>
      `${r.configuration}: ${r.tasksPerSecond} tasks/s (submitted at ${r.submittedPerSecond}/s; floor ${r.floorTasksPerSecondPerSlot}/s per slot)`,
  ),
  fanout: benchmark<FanoutResult>(
    5,
    (backend, { runs, followers }, report) => fanout(backend, { runs, sizes: followers }, report),
    (r) =>
      `${r.followers} followers, ${r.inboxes} inbox: p50 ${r.runs.p50} ms (${r.runs.min}–${r.runs.max}), ${r.deliveries} POSTs, signing floor ${r.signingFloorMs} ms`,
  ),
  ingest: benchmark<IngestResult>(
    2000,
    async (backend, { runs, concurrency }, report) =>
      report(await ingest(backend, { activities: runs, concurrency })),
    (r) =>
      `${r.activitiesPerSecond} activities/s, replays ${r.replaysPerSecond}/s (floor ${r.floorActivitiesPerSecond}/s per core)`,
  ),
  memory: benchmark<MemoryResult>(
    100_000,
    async (backend, { runs }, report) => report(await memory(backend, runs)),
    (r) =>
      `idle ${r.idleRssMiB} MiB (first start ${r.firstStartIdleRssMiB} MiB), with ${r.historyTasks} tasks ${r.withHistoryRssMiB} MiB`,
  ),
  "graph-10k": benchmark<Graph10kResult>(
    3,
    (backend, { runs, workers, concurrency, resolve }, report) =>
      graph10k(
        backend,
        {
          runs,
          resolve: resolve ? { concurrency, workerProcesses: Math.max(...workers) } : undefined,
        },
        report,
      ),
    (r) =>
      `check ${r.check.ms.p50} ms, service ${r.submitService.ms.p50} ms, API ${r.submitApi.ms.p50} ms, peak RSS ${r.peakRssMiB} MiB${
        r.resolve != null ? `, all resolved in ${r.resolve.totalMs} ms` : ""
      }`,
  ),
};

function positiveIntegers(flag: string, raw: string, max: number): number[] {
  const values = raw.split(",").map(Number);
  if (values.length === 0 || values.some((v) => !Number.isInteger(v) || v < 1 || v > max)) {
    console.error(`${flag} must be integers from 1 to ${max}, separated by commas`);
    process.exit(2);
  }
  return values;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    runs: { type: "string" },
    backend: { type: "string" },
    workers: { type: "string", default: "1,2,4" },
    concurrency: { type: "string", default: "4" },
    resolve: { type: "boolean", default: false },
    followers: { type: "string", default: "100,1000" },
    "poll-ms": { type: "string", default: "1000" },
    out: { type: "string", default: "bench/results" },
  },
});
const runsFlag = values.runs != null ? positiveIntegers("--runs", values.runs, 1_000_000) : [];
if (runsFlag.length > 1) {
  console.error("--runs takes one number");
  process.exit(2);
}
const workers = positiveIntegers("--workers", values.workers, 16);
const pollMs =
  values["poll-ms"] === "0" ? 0 : positiveIntegers("--poll-ms", values["poll-ms"], 600_000)[0]!;
const followers = positiveIntegers("--followers", values.followers, 5_000);
const [concurrency = 4] = positiveIntegers("--concurrency", values.concurrency, 64);
const names = positionals.length > 0 ? positionals : Object.keys(BENCHMARKS);
const ALL_BACKENDS: readonly BenchBackend[] = ["embedded", "postgres+redis"];
const backends = ALL_BACKENDS.filter((b) => values.backend == null || values.backend === b);
if (backends.length === 0) {
  console.error(`--backend must be one of ${ALL_BACKENDS.join(", ")}`);
  process.exit(2);
}
const results: { result: Record<string, unknown>; line: string }[] = [];
for (const name of names) {
  const bench = BENCHMARKS[name];
  if (bench == null) {
    console.error(`Unknown benchmark ${name}; known: ${Object.keys(BENCHMARKS).join(", ")}`);
    process.exit(2);
  }
  const runs = runsFlag[0] ?? bench.defaultRuns;
  for (const backend of backends) {
    console.error(`running ${name} on ${backend} (--runs ${runs})…`);
    await bench.run(
      backend,
      { runs, workers, concurrency, resolve: values.resolve, followers, pollMs },
      (r, line) => {
        const result = {
          ...r,
          node: process.version,
          cpus: availableParallelism(),
          // Other work on the machine skews every figure: this says how busy it was.
          loadAverage1m: Math.round((loadavg()[0] ?? 0) * 100) / 100,
          at: new Date().toISOString(),
        };
        results.push({ result, line });
        console.log(JSON.stringify(result));
      },
    );
  }
}
await mkdir(values.out, { recursive: true });
await writeFile(
  `${values.out}/latest.json`,
  `${JSON.stringify(
    results.map((r) => r.result),
    null,
    2,
  )}\n`,
);
console.error(`\n${"benchmark".padEnd(30)} ${"backend".padEnd(15)} result`);
for (const { result, line } of results) {
  console.error(
    `${String(result.benchmark).padEnd(30)} ${String(result.backend).padEnd(15)} ${line}`,
  );
}
process.exit(0);
