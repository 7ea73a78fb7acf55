/**
 * A 10,000-task graph (the most one graph may hold) shaped like a CI run: one checkout,
 * 99 components whose builds form chains of 9, 99 tests per build and a report per
 * component that waits for its 99 tests. Measures, in this process:
 *
 * - check: `checkTaskGraph` alone (schema, definitions, ids, dependencies, cycles);
 * - parse: reading the document as the API does when the graph goes as YAML;
 * - service: `TaskService.createTaskGroup` (check, then one transaction);
 * - API: `POST /api/v1/task-groups` as `taskweb graph submit` sends it (YAML above the API's
 *   1 MiB JSON limit);
 *
 * each with this process's heap and RSS (the cluster runs in it; PostgreSQL and Redis are
 * other processes). With `--resolve`, a fresh cluster with workers then runs one such graph
 * of no-op tasks to its end, for at most 20 minutes (`--concurrency` tasks per worker; on
 * postgres+redis, the largest `--workers` count of `taskweb worker` processes).
 *
 *   npm run bench -- graph-10k [--runs 3] [--backend embedded] [--resolve --workers 2]
 */
import { measureFloor, type Floor } from "./floor.ts";
import { checkTaskGraph, parseTaskGraphSource } from "../server/domain/task-graph.ts";
import {
  graphBody,
  groupRunTimes,
  measure,
  postTaskGraph,
  processMaxRssMiB,
  startBenchClusters,
  startWorkingCluster,
  summarize,
  waitForGroup,
  type BenchBackend,
  type Measured,
} from "./support.ts";

/** Options of {@link graph10k}. */
export interface Graph10kOptions {
  /** Repetitions of each timed step. */
  readonly runs: number;
  /** Whether, and with which workers, to run a whole graph to its end afterwards. */
  readonly resolve:
    | {
        /** Tasks each worker runs at once. */
        readonly concurrency: number;
        /** `taskweb worker` processes (postgres+redis only; the embedded default uses 0). */
        readonly workerProcesses: number;
      }
    | undefined;
}

const COMPONENTS = 99;
const TESTS_PER_COMPONENT = 99;
/** Builds of consecutive components form chains this long. */
const BUILD_CHAIN = 9;
/** How long the whole graph may take to resolve before the benchmark gives up on it. */
const RESOLVE_TIMEOUT_MS = 20 * 60_000;

/** The CI-shaped graph, every task running `true`. */
export function ciGraph(taskGroupId: string) {
  const id = (name: string) => `${taskGroupId}-${name}`;
  const payload = { command: ["true"] };
  const tasks: Record<string, unknown>[] = [{ taskId: id("checkout"), name: "checkout", payload }];
  for (let c = 0; c < COMPONENTS; c++) {
    const build = id(`build-${c}`);
    tasks.push({
      taskId: build,
      name: `build component ${c}`,
      dependencies:
        c % BUILD_CHAIN === 0 ? [id("checkout")] : [id("checkout"), id(`build-${c - 1}`)],
      payload,
    });
    const tests: string[] = [];
    for (let t = 0; t < TESTS_PER_COMPONENT; t++) {
      const test = id(`test-${c}-${t}`);
      tests.push(test);
      tasks.push({
        taskId: test,
        name: `test ${t} of component ${c}`,
        dependencies: [build],
        payload,
      });
    }
    tasks.push({
      taskId: id(`report-${c}`),
      name: `report of component ${c}`,
      dependencies: tests,
      requires: "all-resolved",
      payload,
    });
  }
  return { taskGroupId, tasks };
}

const SHAPE = {
  tasks: 1 + COMPONENTS * (TESTS_PER_COMPONENT + 2),
  dependencies:
    COMPONENTS +
    (COMPONENTS - Math.ceil(COMPONENTS / BUILD_CHAIN)) +
    2 * COMPONENTS * TESTS_PER_COMPONENT,
  /** Tasks on the longest path: checkout, a chain of builds, a test, a report. */
  depth: 1 + BUILD_CHAIN + 2,
  description: `1 checkout → ${COMPONENTS} builds (chains of ${BUILD_CHAIN}) → ${TESTS_PER_COMPONENT} tests per build → 1 report per build waiting for its ${TESTS_PER_COMPONENT} tests (requires all-resolved); every task runs ["true"]`,
};

/** The figures of one repeated step. */
function stepFigures(steps: readonly Measured<unknown>[]) {
  return {
    ms: summarize(steps.map((s) => s.ms)),
    firstMs: steps[0]?.ms ?? Number.NaN,
    heapUsedDeltaMiB: steps.map((s) => s.memory.heapUsedDeltaMiB),
    rssDeltaMiB: steps.map((s) => s.memory.rssDeltaMiB),
    peakRssMiB: Math.max(...steps.map((s) => s.memory.peakRssMiB)),
  };
}

/** One backend's figures. */
export interface Graph10kResult {
  readonly benchmark: "graph-10k";
  readonly backend: BenchBackend;
  readonly graph: typeof SHAPE & { readonly bytes: number; readonly apiMediaType: string };
  readonly measured: string;
  readonly runs: number;
  readonly check: ReturnType<typeof stepFigures>;
  readonly parse: ReturnType<typeof stepFigures> | undefined;
  readonly submitService: ReturnType<typeof stepFigures>;
  readonly submitApi: ReturnType<typeof stepFigures>;
  /** Highest RSS sampled during the steps above. */
  readonly peakRssMiB: number;
  readonly resolve:
    | {
        readonly configuration: string;
        readonly complete: boolean;
        readonly states: Readonly<Record<string, number>>;
        readonly submitMs: number;
        /** From sending the POST to the last task resolving (or to giving up). */
        readonly totalMs: number;
        readonly tasksPerSecond: number;
        readonly timeoutMs: number;
      }
    | undefined;
  /** The highest RSS of this process since it started (getrusage). */
  readonly processMaxRssMiB: number;
  /** The floor's parts on this backend, measured in the same run. */
  readonly floor: Floor;
}

/** Submits the graph on a cluster without workers, then lets one with workers run it. */
export async function graph10k(
  backend: BenchBackend,
  options: Graph10kOptions,
  report: (result: Graph10kResult) => void,
): Promise<void> {
  const body = graphBody(ciGraph("g-sample"));
  const check: Measured<unknown>[] = [];
  const parse: Measured<unknown>[] = [];
  const service: Measured<unknown>[] = [];
  const api: Measured<unknown>[] = [];
  // Without workers, nothing runs while the next graph is submitted.
  const { clusters, cleanup } = await startBenchClusters(backend, ["graph"], {
    roles: { web: true, worker: false },
  });
  let floor: Floor;
  try {
    const cluster = clusters[0]!;
    floor = await measureFloor(cluster, 100);
    const localTaskId = (url: string) => cluster.urls.localTaskId(url);
    for (let i = 0; i < options.runs; i++) {
      const graph = ciGraph(`check-${i}`);
      check.push(
        await measure(() => {
          const result = checkTaskGraph(graph, { localTaskId });
          if (result.problems.length > 0) throw new Error(JSON.stringify(result.problems[0]));
          return result.tasks.length;
        }),
      );
    }
    if (body.mediaType === "application/yaml") {
      for (let i = 0; i < options.runs; i++) {
        parse.push(
          await measure(() => {
            const result = parseTaskGraphSource(body.text, "yaml");
            if (!result.ok) throw new Error(JSON.stringify(result.problems[0]));
            return result.ok;
          }),
        );
      }
    }
    for (let i = 0; i < options.runs; i++) {
      const graph = ciGraph(`service-${i}`);
      service.push(await measure(() => cluster.tasks.createTaskGroup(graph)));
    }
    for (let i = 0; i < options.runs; i++) {
      const apiBody = graphBody(ciGraph(`api-${i}`));
      api.push(await measure(() => postTaskGraph(cluster, apiBody)));
    }
  } finally {
    await cleanup();
  }
  const resolve =
    options.resolve != null ? await resolveGraph(backend, options.resolve) : undefined;
  report({
    benchmark: "graph-10k",
    backend,
    graph: { ...SHAPE, bytes: body.bytes, apiMediaType: body.mediaType },
    measured:
      "check: checkTaskGraph on the parsed graph; parse: the API reading the YAML body (when the graph is sent as YAML); submitService: TaskService.createTaskGroup (check + one transaction + dispatch of the ready tasks); submitApi: POST /api/v1/task-groups from sending to the 201, as `taskweb graph submit` sends it; memory is this process's (the cluster runs in it), heapUsed/RSS after a step minus before it (after a full GC); resolve: a fresh cluster with workers runs the graph, from sending the POST to the last resolution",
    runs: options.runs,
    check: stepFigures(check),
    parse: parse.length > 0 ? stepFigures(parse) : undefined,
    submitService: stepFigures(service),
    submitApi: stepFigures(api),
    peakRssMiB: Math.max(
      ...[...check, ...parse, ...service, ...api].map((s) => s.memory.peakRssMiB),
    ),
    resolve,
    processMaxRssMiB: processMaxRssMiB(),
    floor,
  });
}

/** Runs one graph to its end on a cluster with workers; bounded by {@link RESOLVE_TIMEOUT_MS}. */
async function resolveGraph(
  backend: BenchBackend,
  options: NonNullable<Graph10kOptions["resolve"]>,
) {
  const workerProcesses = backend === "postgres+redis" ? options.workerProcesses : 0;
  const cluster = await startWorkingCluster(backend, "graph-run", {
    workerProcesses,
    workerConcurrency: options.concurrency,
  });
  try {
    const body = graphBody(ciGraph("run"));
    const sent = Date.now();
    await postTaskGraph(cluster.web, body);
    const submitMs = Date.now() - sent;
    const progress = await waitForGroup(cluster.web, "run", SHAPE.tasks, RESOLVE_TIMEOUT_MS, 500);
    const end = progress.complete
      ? (await groupRunTimes(cluster.web, "run")).lastResolved
      : Date.now();
    const totalMs = end - sent;
    return {
      configuration:
        workerProcesses === 0
          ? `1 process (web + worker), concurrency ${options.concurrency}`
          : `1 web process + ${workerProcesses} worker processes, concurrency ${options.concurrency} each`,
      complete: progress.complete,
      states: progress.counts,
      submitMs,
      totalMs,
      tasksPerSecond: Math.round((progress.resolved / totalMs) * 1000 * 10) / 10,
      timeoutMs: RESOLVE_TIMEOUT_MS,
    };
  } finally {
    await cluster.cleanup();
  }
}
