/** Runs the `taskweb` command as a user would, with the Node that runs the tests. */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

/** The command's entry point. */
export const TASKWEB_BIN = fileURLToPath(new URL("../../bin/taskweb.js", import.meta.url));

/** How a finished command went. */
export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Non-empty lines of stdout. */
  readonly lines: string[];
}

/**
 * Runs `taskweb args…` to its end. `TASKWEB_URL` and `TASKWEB_TOKEN` are taken only from
 * `env`, never inherited, so a test sees exactly the flags it passes.
 * @param input Written to the command's standard input, which is then closed; without it
 *   standard input is empty.
 */
export function runTaskweb(
  args: readonly string[],
  env: Record<string, string> = {},
  input?: string,
): Promise<CliResult> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: "warning", ...env };
  for (const name of ["TASKWEB_URL", "TASKWEB_TOKEN"]) {
    if (!(name in env)) delete childEnv[name];
  }
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [TASKWEB_BIN, ...args], {
      env: childEnv,
      stdio: ["pipe", "pipe", "pipe"],
    });
    child.stdin.end(input ?? "");
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
    child.on("error", reject);
    child.on("close", (code) =>
      resolve({ code, stdout, stderr, lines: stdout.split("\n").filter((l) => l !== "") }),
    );
  });
}
