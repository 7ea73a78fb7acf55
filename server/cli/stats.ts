/**
 * `taskweb stats`: what the task and run history says about a period (`GET /api/v1/stats`):
 * the share of tasks by a tag's values, failure rates, and how long runs waited and ran,
 * overall and by worker.
 * @module
 */
import type { Command } from "commander";
import type { QueueStats, DurationStats, StateCounts } from "../domain/queue-stats.ts";
import { apiRequest, type ApiTarget } from "./api-client.ts";
import { EXIT_CODES } from "./exit-codes.ts";
import type { ClientFlags } from "./graph.ts";
import { createSpinner } from "./progress.ts";

/** What the stats command borrows from the `taskweb` program. */
export interface StatsCommandOptions {
  /** Adds `--url`, `--token` and `--json` to a command. */
  clientOptions(cmd: Command): Command;
  /** The API to call, from the flags or TASKWEB_URL / TASKWEB_TOKEN. */
  apiTarget(flags: ClientFlags): ApiTarget;
  /** Receives the command's exit code, once it is known. */
  run(exitCode: Promise<number>): void;
  /** Prints a line of output. @defaultValue console.log */
  print?: (line: string) => void;
}

interface StatsFlags extends ClientFlags {
  since?: string;
  until?: string;
  tag: string[];
  state?: string;
  worker?: string;
  origin?: string;
  taskGroup?: string;
}

function percent(rate: number | null): string {
  return rate == null ? "–" : `${(rate * 100).toFixed(1)}%`;
}

function secs(value: number | null): string {
  if (value == null) return "–";
  if (value < 60) return `${value.toFixed(value < 10 ? 2 : 1)} s`;
  if (value < 3600) return `${(value / 60).toFixed(1)} min`;
  return `${(value / 3600).toFixed(1)} h`;
}

function states(counts: StateCounts): string {
  const parts = Object.entries(counts.byState)
    .sort((a, b) => b[1] - a[1])
    .map(([state, n]) => `${state} ${n}`);
  return parts.length === 0 ? "none" : parts.join(", ");
}

function timing(label: string, d: DurationStats): string {
  return `  ${label} p50 ${secs(d.p50)}  p95 ${secs(d.p95)}  max ${secs(d.max)}  (${d.count} runs)`;
}

/** The human report. */
export function formatStats(stats: QueueStats): string[] {
  const lines = [
    `Period ${stats.since} → ${stats.until}`,
    `Tasks created: ${stats.tasks.total} (${states(stats.tasks)}); failure rate ${percent(stats.tasks.failureRate)}`,
  ];
  if (stats.byTag != null) {
    lines.push(`By tag ${stats.byTag.tag}:`);
    const width = Math.max(6, ...stats.byTag.values.map((v) => (v.value ?? "(none)").length));
    for (const v of stats.byTag.values) {
      lines.push(
        `  ${(v.value ?? "(none)").padEnd(width)}  ${String(v.total).padStart(6)} tasks  ${percent(v.share).padStart(6)}  failure rate ${percent(v.failureRate)}`,
      );
    }
  }
  lines.push(
    `Runs scheduled: ${stats.runs.total} (${states(stats.runs)}); failure rate ${percent(stats.runs.failureRate)}`,
    timing("pending", stats.runs.pendingSeconds),
    timing("running", stats.runs.runningSeconds),
  );
  if (stats.workers.length > 0) {
    lines.push("By worker:");
    for (const w of stats.workers) {
      lines.push(
        `  ${w.workerId}  ${w.total} runs  failure rate ${percent(w.failureRate)}  pending p50 ${secs(w.pendingSeconds.p50)} p95 ${secs(w.pendingSeconds.p95)}  running p50 ${secs(w.runningSeconds.p50)} p95 ${secs(w.runningSeconds.p95)}`,
      );
    }
  }
  if (stats.truncated) lines.push("(Only the 100 largest groups are listed.)");
  return lines;
}

/** Registers `stats` on `program`. */
export function registerStatsCommand(program: Command, options: StatsCommandOptions): void {
  const print = options.print ?? ((line: string) => console.log(line));
  options
    .clientOptions(
      program
        .command("stats")
        .description(
          "Report on task and run history: shares by tag, failure rates, pending and running times by worker",
        )
        .option("--since <when>", "start: a date-time or a duration back from now (7d, 12h)", "7d")
        .option("--until <when>", "end: a date-time or a duration back from now (default now)")
        .option(
          "--tag <name[=value]>",
          "name: break tasks down by that tag; name=value: only tasks with it (repeatable)",
          (value: string, previous: string[]) => [...previous, value],
          [] as string[],
        )
        .option("--state <state>", "only tasks now in this state")
        .option("--worker <worker-id>", "only runs of this worker")
        .option("--origin <url>", "only tasks that depend on tasks of this remote cluster")
        .option("--task-group <id>", "only tasks of this task group")
        .addHelpText(
          "after",
          "\nExample: the share of last month's tasks per project, and how often each failed:\n  taskweb stats --since 30d --tag project",
        ),
    )
    .action((flags: StatsFlags) => {
      options.run(
        (async () => {
          const target = options.apiTarget(flags);
          const params = new URLSearchParams();
          if (flags.since != null) params.set("since", flags.since);
          if (flags.until != null) params.set("until", flags.until);
          for (const tag of flags.tag) params.append("tag", tag);
          if (flags.state != null) params.set("state", flags.state);
          if (flags.worker != null) params.set("worker", flags.worker);
          if (flags.origin != null) params.set("origin", flags.origin);
          if (flags.taskGroup != null) params.set("taskGroupId", flags.taskGroup);
          const spinner = createSpinner("Reading the history…", {
            enabled: flags.json !== true && process.stderr.isTTY === true,
          });
          let stats: QueueStats;
          try {
            stats = (await apiRequest(target, "GET", `/api/v1/stats?${params}`)) as QueueStats;
          } finally {
            spinner.stop();
          }
          if (flags.json === true) print(JSON.stringify(stats));
          else for (const line of formatStats(stats)) print(line);
          return EXIT_CODES.ok;
        })(),
      );
    });
}
