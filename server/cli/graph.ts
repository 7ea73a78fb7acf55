/**
 * `taskweb graph submit FILE` and `taskweb graph watch ID`: whole task graphs from the
 * command line.
 * @module
 */
import { readFile } from "node:fs/promises";
import { extname } from "node:path";
import { CommanderError, type Command } from "commander";
import { ApiRequestError, apiRequest, type ApiTarget } from "./api-client.ts";

/** The flags every client command takes. */
export interface ClientFlags {
  url?: string;
  token?: string;
  json?: boolean;
}

/** What the graph commands borrow from the `taskweb` program. */
export interface GraphCommandsOptions {
  /** Adds `--url`, `--token` and `--json` to a command. */
  clientOptions(cmd: Command): Command;
  /** The API to call, from the flags or TASKWEB_URL / TASKWEB_TOKEN; a usage error without a token. */
  apiTarget(flags: ClientFlags): ApiTarget;
  /** Receives the command's exit code, once it is known. */
  run(exitCode: Promise<number>): void;
  /** Prints a line of output. @defaultValue console.log */
  print?: (line: string) => void;
  /** Prints a line about a problem. @defaultValue console.error */
  printError?: (line: string) => void;
}

/** How often `graph watch` asks the cluster. */
export const WATCH_INTERVAL_MS = 500;

/** Bytes of a task graph the API accepts (as YAML); JSON bodies stop at the API's 1 MiB. */
const MAX_GRAPH_BYTES = 5 * 1024 * 1024;
const MAX_JSON_BODY_BYTES = 1024 * 1024;

interface GraphProblem {
  readonly field: string;
  readonly message: string;
}

interface TaskGroupBody {
  readonly taskGroupId: string;
  readonly total: number;
  readonly resolved: number;
  readonly counts: Readonly<Record<string, number>>;
  readonly inactive: number;
  readonly resolvedAt: string | null;
  readonly tasks: readonly {
    readonly taskId: string;
    readonly state: string;
    readonly reasonResolved: string | null;
    readonly breakpoint: boolean;
  }[];
}

/** Registers `graph submit` and `graph watch` on `program`. */
export function registerGraphCommands(program: Command, options: GraphCommandsOptions): void {
  const print = options.print ?? ((line: string) => console.log(line));
  const printError = options.printError ?? ((line: string) => console.error(line));
  const graph = program
    .command("graph")
    .description("Submit and watch whole task graphs (task groups)");

  options
    .clientOptions(
      graph
        .command("submit <file>")
        .description("Create a task group from a JSON or YAML task graph ('-' for stdin)"),
    )
    .action((file: string, flags: ClientFlags) => {
      options.run(submit(file, flags));
    });

  options
    .clientOptions(
      graph
        .command("watch <task-group-id>")
        .description(
          "Follow a task group until every task resolved: exit 0 when all completed, 1 otherwise",
        )
        .option("--timeout <seconds>", "give up (exit 1) after this many seconds"),
    )
    .action((taskGroupId: string, flags: ClientFlags & { timeout?: string }) => {
      options.run(watch(taskGroupId, flags));
    });

  async function submit(file: string, flags: ClientFlags): Promise<number> {
    const target = options.apiTarget(flags);
    let text: string;
    try {
      text = file === "-" ? await readStdin() : await readFile(file, "utf8");
    } catch (error) {
      throw new CommanderError(2, "bad-file", `Cannot read ${file}: ${String(error)}`);
    }
    if (Buffer.byteLength(text, "utf8") > MAX_GRAPH_BYTES) {
      printError(
        `taskweb: ${file} is larger than 5 MiB; split the graph into several task groups.`,
      );
      return 1;
    }
    try {
      const body = (await postGraph(target, text, mediaTypeOf(file, text))) as {
        taskGroupId: string;
        tasks: number;
        created: boolean;
      };
      if (flags.json === true) {
        print(JSON.stringify(body));
      } else {
        print(
          body.created
            ? `Task group ${body.taskGroupId}: ${body.tasks} tasks created.`
            : `Task group ${body.taskGroupId}: the same ${body.tasks} tasks exist already; nothing created.`,
        );
        print(`Follow it with: taskweb graph watch ${body.taskGroupId}`);
      }
      return 0;
    } catch (error) {
      if (!(error instanceof ApiRequestError)) throw error;
      const problems = (error.details as { problems?: GraphProblem[] } | undefined)?.problems;
      if (flags.json === true) {
        print(JSON.stringify({ code: error.code, message: error.message, problems }));
        return 1;
      }
      if (problems == null) throw error;
      printError(`taskweb: ${error.message.split("\n")[0] ?? error.code}`);
      for (const p of problems) printError(p.field === "" ? p.message : `${p.field}: ${p.message}`);
      return 1;
    }
  }

  async function watch(
    taskGroupId: string,
    flags: ClientFlags & { timeout?: string },
  ): Promise<number> {
    let timeoutMs = Number.POSITIVE_INFINITY;
    if (flags.timeout != null) {
      const seconds = Number(flags.timeout);
      if (!Number.isFinite(seconds) || seconds <= 0) {
        throw new CommanderError(
          2,
          "bad-timeout",
          `--timeout must be a positive number of seconds, got ${flags.timeout}`,
        );
      }
      timeoutMs = seconds * 1000;
    }
    const target = options.apiTarget(flags);
    const until = Date.now() + timeoutMs;
    const seen = new Map<string, string>();
    let unavailable = false;
    for (;;) {
      let group: TaskGroupBody | undefined;
      try {
        group = (await apiRequest(
          target,
          "GET",
          `/api/v1/task-groups/${encodeURIComponent(taskGroupId)}`,
        )) as TaskGroupBody;
        unavailable = false;
      } catch (error) {
        // A cluster restarting or briefly unreachable is waited for; anything else is final.
        const transient =
          error instanceof ApiRequestError && (error.status === 0 || error.status >= 500);
        if (!transient) throw error;
        if (!unavailable) printError(`taskweb: ${error.message}; still trying.`);
        unavailable = true;
      }
      if (group != null) {
        let changed = false;
        for (const task of group.tasks) {
          const before = seen.get(task.taskId);
          if (before === task.state) continue;
          seen.set(task.taskId, task.state);
          changed = true;
          if (flags.json === true) {
            print(
              JSON.stringify({
                taskId: task.taskId,
                state: task.state,
                previous: before ?? null,
                reasonResolved: task.reasonResolved,
              }),
            );
          } else {
            const reason =
              task.reasonResolved != null && task.reasonResolved !== task.state
                ? ` (${task.reasonResolved})`
                : "";
            const waiting =
              task.breakpoint && task.state === "running"
                ? ` (a breakpoint: resolve it with taskweb task resolve ${task.taskId})`
                : "";
            print(
              `${task.taskId}: ${before != null ? `${before} → ` : ""}${task.state}${reason}${waiting}`,
            );
          }
        }
        if (changed)
          print(flags.json === true ? JSON.stringify(summaryJson(group)) : summary(group));
        // Resolved: every task has, or the cluster says every task not left inactive has.
        if (group.resolved === group.total || group.resolvedAt != null) {
          return (group.counts.completed ?? 0) + group.inactive === group.total ? 0 : 1;
        }
      }
      const left = until - Date.now();
      if (left <= 0) {
        printError(
          `taskweb: timed out after ${flags.timeout ?? "?"} s${group != null ? ` at ${summary(group)}` : ""}.`,
        );
        return 1;
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(WATCH_INTERVAL_MS, left)));
    }
  }
}

/** `12/40 resolved (10 completed, 1 failed, 1 exception)` */
function summary(group: TaskGroupBody): string {
  const n = (state: string) => group.counts[state] ?? 0;
  const inactive = group.inactive > 0 ? `, ${group.inactive} inactive` : "";
  return `${group.resolved}/${group.total} resolved (${n("completed")} completed, ${n("failed")} failed, ${n("exception")} exception${inactive})`;
}

function summaryJson(group: TaskGroupBody) {
  return {
    taskGroupId: group.taskGroupId,
    resolved: group.resolved,
    total: group.total,
    counts: group.counts,
  };
}

/**
 * YAML by extension, JSON by extension or by its first character. A JSON graph over the
 * API's 1 MiB JSON limit goes as YAML, whose limit is 5 MiB: YAML 1.2 reads JSON as is.
 */
function mediaTypeOf(file: string, text: string): string {
  const ext = extname(file).toLowerCase();
  const json =
    ext === ".json" || (ext !== ".yaml" && ext !== ".yml" && text.trimStart().startsWith("{"));
  if (json && Buffer.byteLength(text, "utf8") <= MAX_JSON_BODY_BYTES) return "application/json";
  return "application/yaml";
}

/** POSTs the graph's text as is; the cluster reports JSON and YAML problems alike. */
async function postGraph(target: ApiTarget, text: string, mediaType: string): Promise<unknown> {
  let response: Response;
  try {
    response = await fetch(new URL("/api/v1/task-groups", target.url), {
      method: "POST",
      headers: { authorization: `Bearer ${target.token}`, "content-type": mediaType },
      body: text,
    });
  } catch (error) {
    throw new ApiRequestError(0, "Unreachable", `Cannot reach ${target.url}: ${String(error)}`);
  }
  const raw = await response.text();
  let json: unknown;
  try {
    json = raw === "" ? {} : JSON.parse(raw);
  } catch {
    throw new ApiRequestError(response.status, "Error", `${target.url} did not answer JSON.`);
  }
  if (!response.ok) {
    const e = json as { code?: string; message?: string; details?: unknown };
    throw new ApiRequestError(
      response.status,
      e.code ?? "Error",
      e.message ?? response.statusText,
      e.details,
    );
  }
  return json;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}
