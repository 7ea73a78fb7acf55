/**
 * Runs benchmarks and prints one JSON document per benchmark and backend, then a short
 * table on stderr. Only loopback is used; every loop is bounded.
 *
 *   npm run bench                                   # every benchmark, both backends
 *   npm run bench -- unblock-latency --runs 200 --backend embedded
 */
import { parseArgs } from "node:util";
import { writeFile, mkdir } from "node:fs/promises";
import type { BenchBackend } from "./support.ts";
import { unblockLatency } from "./unblock-latency.ts";

const BENCHMARKS = {
  "unblock-latency": (backend: BenchBackend, runs: number) => unblockLatency(backend, runs),
} as const;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    runs: { type: "string", default: "200" },
    backend: { type: "string" },
    out: { type: "string", default: "bench/results" },
  },
});
const runs = Number(values.runs);
if (!Number.isInteger(runs) || runs < 1 || runs > 10_000) {
  console.error("--runs must be an integer from 1 to 10000");
  process.exit(2);
}
const names = positionals.length > 0 ? positionals : Object.keys(BENCHMARKS);
const backends: BenchBackend[] =
  values.backend != null ? [values.backend as BenchBackend] : ["embedded", "postgres+redis"];
const results: Record<string, unknown>[] = [];
for (const name of names) {
  const bench = BENCHMARKS[name as keyof typeof BENCHMARKS];
  if (bench == null) {
    console.error(`Unknown benchmark ${name}; known: ${Object.keys(BENCHMARKS).join(", ")}`);
    process.exit(2);
  }
  for (const backend of backends) {
    console.error(`running ${name} on ${backend} (${runs} runs)…`);
    const result = {
      ...(await bench(backend, runs)),
      node: process.version,
      at: new Date().toISOString(),
    };
    results.push(result);
    console.log(JSON.stringify(result));
  }
}
await mkdir(values.out, { recursive: true });
await writeFile(`${values.out}/latest.json`, `${JSON.stringify(results, null, 2)}\n`);
console.error("\nbenchmark                      backend          n     p50 ms   p99 ms");
for (const r of results) {
  console.error(
    `${String(r.benchmark).padEnd(30)} ${String(r.backend).padEnd(15)} ${String(r.n).padStart(4)} ${String(r.p50).padStart(9)} ${String(r.p99).padStart(8)}`,
  );
}
process.exit(0);
