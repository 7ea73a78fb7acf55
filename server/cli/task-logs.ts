/**
 * `taskweb task logs <task-id>`: a run's log, whole or followed live until the run ends.
 * @module
 */
import { CommanderError, type Command } from "commander";
import { ApiRequestError, apiRequest, type ApiTarget } from "./api-client.ts";
import { EXIT_CODES } from "./exit-codes.ts";
import type { ClientFlags } from "./graph.ts";

/** What `task logs` borrows from the `taskweb` program. */
export interface TaskLogsCommandOptions {
  /** Adds `--url`, `--token` and `--json` to a command. */
  clientOptions(cmd: Command): Command;
  /** The API to call, from the flags or TASKWEB_URL / TASKWEB_TOKEN. */
  apiTarget(flags: ClientFlags): ApiTarget;
  /** Receives the command's exit code, once it is known. */
  run(exitCode: Promise<number>): void;
  /** Writes log text as it arrives. @defaultValue process.stdout */
  write?: (text: string) => void;
}

interface TaskBody {
  readonly state: string;
  readonly runs: readonly { run_id: number; state: string }[];
}

/** GETs a log as text, or its stream when following. */
async function fetchLog(target: ApiTarget, path: string): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(new URL(path, target.url), {
      headers: { authorization: `Bearer ${target.token}` },
    });
  } catch (error) {
    throw new ApiRequestError(0, "Unreachable", `Cannot reach ${target.url}: ${String(error)}`);
  }
  if (!response.ok) {
    const e = (await response.json().catch(() => ({}))) as { code?: string; message?: string };
    throw new ApiRequestError(response.status, e.code ?? "Error", e.message ?? response.statusText);
  }
  return response;
}

/** Registers `logs` under the `task` command. */
export function registerTaskLogsCommand(task: Command, options: TaskLogsCommandOptions): void {
  const write = options.write ?? ((text: string) => process.stdout.write(text));
  options
    .clientOptions(
      task
        .command("logs <task-id>")
        .description("Print a run's log (the latest run unless --run); --follow streams it live")
        .option("--run <run-id>", "which run (0, 1, …)")
        .option("-f, --follow", "keep printing as the run writes, until it resolves"),
    )
    .action((taskId: string, flags: ClientFlags & { run?: string; follow?: boolean }) => {
      options.run(
        (async () => {
          let runId: number | undefined;
          if (flags.run != null) {
            runId = Number(flags.run);
            if (!Number.isInteger(runId) || runId < 0) {
              throw new CommanderError(2, "bad-run", "--run must be a run number: 0, 1, …");
            }
          }
          const target = options.apiTarget(flags);
          const taskPath = `/api/v1/tasks/${encodeURIComponent(taskId)}`;
          const before = (await apiRequest(target, "GET", taskPath)) as TaskBody;
          runId ??= before.runs.at(-1)?.run_id;
          if (runId == null) {
            throw new ApiRequestError(
              404,
              "ResourceNotFound",
              `${taskId} has no run yet (it is ${before.state}); its log exists once it is scheduled.`,
            );
          }
          const logPath = `${taskPath}/runs/${runId}/log${flags.follow === true ? "?follow=1" : ""}`;
          const response = await fetchLog(target, logPath);
          let log = "";
          if (flags.json === true || response.body == null) {
            log = await response.text();
          } else {
            const decoder = new TextDecoder();
            for await (const chunk of response.body) {
              const text = decoder.decode(chunk as Uint8Array, { stream: true });
              log += text;
              write(text);
            }
          }
          if (flags.json === true) {
            const after = (await apiRequest(target, "GET", taskPath)) as TaskBody;
            const run = after.runs.find((r) => r.run_id === runId);
            write(`${JSON.stringify({ taskId, runId, state: run?.state ?? null, log })}\n`);
          } else if (log !== "" && !log.endsWith("\n")) {
            write("\n");
          }
          return EXIT_CODES.ok;
        })(),
      );
    });
}
