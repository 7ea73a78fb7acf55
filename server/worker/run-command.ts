/**
 * Runs a task's command as a child process in its own process group, with a time limit,
 * a chosen environment and working directory, and a bounded log of stdout and stderr from
 * which secret values are redacted.
 * @module
 */
import { spawn } from "node:child_process";
import { createRedactor } from "./redactor.ts";

/** Options for {@link runCommand}. */
export interface RunCommandOptions {
  readonly command: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly cwd: string;
  readonly timeoutMs: number;
  /** Stops the process early (the claim was lost, or the worker is shutting down). */
  readonly signal?: AbortSignal;
  /** Receives log output as it arrives, redacted. */
  readonly onOutput?: (chunk: string) => void;
  /**
   * Values replaced by `[secret]` wherever they appear in the output, before `onOutput` or
   * the log sees it (see server/worker/redactor.ts).
   */
  readonly redact?: readonly string[];
  /** Log bytes kept; the start and the end are kept when output exceeds it. @defaultValue 1 MiB */
  readonly maxLogBytes?: number;
}

/** How the process ended. */
export interface RunCommandResult {
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly timedOut: boolean;
  readonly aborted: boolean;
  /** The process could not be started (for example, the program does not exist). */
  readonly spawnError: string | undefined;
  readonly log: string;
}

/** Runs the command and resolves when it and its process group are done. Never rejects. */
export function runCommand(options: RunCommandOptions): Promise<RunCommandResult> {
  const maxLog = options.maxLogBytes ?? 1024 * 1024;
  return new Promise((resolve) => {
    const [program, ...args] = options.command;
    let head = "";
    let tail = "";
    let dropped = 0;
    const append = (text: string) => {
      if (text.length === 0) return;
      options.onOutput?.(text);
      if (head.length < maxLog / 2) {
        const room = maxLog / 2 - head.length;
        head += text.slice(0, room);
        text = text.slice(room);
      }
      if (text.length === 0) return;
      tail += text;
      if (tail.length > maxLog / 2) {
        dropped += tail.length - maxLog / 2;
        tail = tail.slice(tail.length - maxLog / 2);
      }
    };
    // One redactor per stream: the two pipes interleave, and a value split across two
    // chunks of stdout must not escape because a chunk of stderr came between them.
    const stdout = createRedactor(options.redact ?? []);
    const stderr = createRedactor(options.redact ?? []);
    let timedOut = false;
    let aborted = false;
    let spawnError: string | undefined;
    const child = spawn(program ?? "", args, {
      cwd: options.cwd,
      env: { ...options.env },
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const killGroup = () => {
      if (child.pid == null) return;
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      append(
        `\n[taskweb] maxRunTime of ${options.timeoutMs / 1000} s exceeded; killing the task.\n`,
      );
      killGroup();
    }, options.timeoutMs);
    const onAbort = () => {
      aborted = true;
      killGroup();
    };
    options.signal?.addEventListener("abort", onAbort, { once: true });
    child.stdout?.setEncoding("utf8").on("data", (text: string) => append(stdout.push(text)));
    child.stderr?.setEncoding("utf8").on("data", (text: string) => append(stderr.push(text)));
    child.on("error", (error) => {
      spawnError = error.message;
      append(`[taskweb] could not start ${JSON.stringify(program)}: ${error.message}\n`);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      killGroup();
      append(stdout.end());
      append(stderr.end());
      const log =
        dropped > 0 ? `${head}\n[taskweb] … ${dropped} characters omitted …\n${tail}` : head + tail;
      resolve({ exitCode: code, signal, timedOut, aborted, spawnError, log });
    });
  });
}
