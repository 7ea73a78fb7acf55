/**
 * Throughput of one machine: independent no-op tasks (`["true"]`) submitted as one task
 * graph, then scheduled, claimed, run and resolved by the cluster's workers. Measured from
 * the start of the submission to the last task resolving, with the submission's own rate
 * beside it. Prints one JSON line per configuration.
 *
 * On postgres+redis the cluster's web side runs in this process and 1, 2 and 4 separate
 * `taskweb worker` processes run the tasks. The embedded default keeps its database in one
 * process, so there one process does everything and its worker concurrency is 1, 2 and 4.
 *
 *   npm run bench -- throughput [--runs 500] [--workers 1,2,4] [--concurrency 4]
 */
import { measureFloor, type Floor } from "./floor.ts";
import {
  graphBody,
  groupRunTimes,
  postTaskGraph,
  startWorkingCluster,
  summarize,
  waitForGroup,
  type BenchBackend,
  type WorkingCluster,
} from "./support.ts";

/** Options of {@link throughput}. */
export interface ThroughputOptions {
  /** Tasks per configuration. */
  readonly tasks: number;
  /**
   * postgres+redis: `taskweb worker` processes; embedded: worker concurrency of its one
   * process.
   */
  readonly workers: readonly number[];
  /** postgres+redis: tasks each worker process runs at once. */
  readonly concurrency: number;
}

/** One configuration's figures. */
export interface ThroughputResult {
  readonly benchmark: "throughput";
  readonly backend: BenchBackend;
  readonly configuration: string;
  readonly processes: { readonly web: number; readonly worker: number };
  readonly workerConcurrency: number;
  readonly measured: string;
  readonly tasks: number;
  readonly warmupTasks: number;
  /** The POST, from sending to its 201: validation, the insert transaction, dispatch. */
  readonly submitMs: number;
  readonly submittedPerSecond: number;
  /** From sending the POST to the first run being claimed. */
  readonly firstStartedMs: number;
  /** From sending the POST to the last task resolving. */
  readonly totalMs: number;
  readonly tasksPerSecond: number;
  readonly states: Readonly<Record<string, number>>;
  /** A run's claim → resolution in its worker: work dir, spawn `true`, resolve transaction. */
  readonly runMs: ReturnType<typeof summarize>;
  readonly floor: Floor;
  /**
   * One worker slot's ceiling from the floor: a task needs at least one queue hop and two
   * commits (its claim and its resolution); the child process and publication come on top.
   */
  readonly floorTasksPerSecondPerSlot: number;
}

/** Tasks run before the measured group, so that processes are warm (JIT, pools, caches). */
const WARMUP_TASKS = 50;

function noOpGraph(taskGroupId: string, tasks: number) {
  return {
    taskGroupId,
    tasks: Array.from({ length: tasks }, (_, i) => ({
      taskId: `${taskGroupId}-${i}`,
      payload: { command: ["true"] },
    })),
  };
}

/** Generous bound for one group: 60 s plus 200 ms a task (5 tasks/s). */
function timeoutFor(tasks: number): number {
  return 60_000 + tasks * 200;
}

async function runGroup(cluster: WorkingCluster, taskGroupId: string, tasks: number) {
  const web = cluster.web;
  const body = graphBody(noOpGraph(taskGroupId, tasks));
  const sent = Date.now();
  await postTaskGraph(web, body);
  const submitted = Date.now();
  const progress = await waitForGroup(web, taskGroupId, tasks, timeoutFor(tasks));
  if (!progress.complete) {
    throw new Error(
      `${taskGroupId}: only ${progress.resolved} of ${tasks} tasks resolved in ${timeoutFor(tasks)} ms (${JSON.stringify(progress.counts)})`,
    );
  }
  const times = await groupRunTimes(web, taskGroupId);
  return { sent, submitted, states: progress.counts, ...times };
}

async function measureConfiguration(
  backend: BenchBackend,
  tasks: number,
  workerProcesses: number,
  workerConcurrency: number,
): Promise<ThroughputResult> {
  const cluster = await startWorkingCluster(backend, `tp-${workerProcesses}-${workerConcurrency}`, {
    workerProcesses,
    workerConcurrency,
  });
  try {
    await runGroup(cluster, "warmup", WARMUP_TASKS);
    const run = await runGroup(cluster, "measured", tasks);
    const submitMs = run.submitted - run.sent;
    const totalMs = run.lastResolved - run.sent;
    const round = (n: number) => Math.round(n * 10) / 10;
    const floor = await measureFloor(cluster.web, 100);
    return {
      benchmark: "throughput",
      backend,
      configuration:
        workerProcesses === 0
          ? `1 process (web + worker), concurrency ${workerConcurrency}`
          : `1 web process + ${workerProcesses} worker process${workerProcesses === 1 ? "" : "es"}, concurrency ${workerConcurrency} each`,
      processes: { web: 1, worker: workerProcesses },
      workerConcurrency,
      measured: `one POST /api/v1/task-groups of ${tasks} independent tasks running ["true"] → every task scheduled, claimed by a worker, run and resolved; totalMs is from sending the POST to the last resolution (resolved_at in the database), submitMs to the POST's 201`,
      tasks,
      warmupTasks: WARMUP_TASKS,
      submitMs,
      submittedPerSecond: round((tasks / submitMs) * 1000),
      firstStartedMs: run.firstStarted - run.sent,
      totalMs,
      tasksPerSecond: round((tasks / totalMs) * 1000),
      states: run.states,
      runMs: summarize(run.runMs),
      floor,
      floorTasksPerSecondPerSlot: round(1000 / (floor.queueHopMs + 2 * floor.databaseCommitMs)),
    };
  } finally {
    await cluster.cleanup();
  }
}

/** Runs every configuration on `backend`, reporting each as it finishes. */
export async function throughput(
  backend: BenchBackend,
  options: ThroughputOptions,
  report: (result: ThroughputResult) => void,
): Promise<void> {
  for (const workers of options.workers) {
    report(
      backend === "embedded"
        ? await measureConfiguration(backend, options.tasks, 0, workers)
        : await measureConfiguration(backend, options.tasks, workers, options.concurrency),
    );
  }
}
