// Starts a taskweb command on Node.js 22 or newer (Fedify 2 needs it). taskweb installs one
// as a dependency (the `node` package); a command started by an older Node re-runs itself
// with it, then runs its TypeScript entry point through tsx.
/* global process, console */
import { spawn } from "node:child_process";
import { createRequire } from "node:module";

/**
 * Runs `main(argv)` of the module at `entry` (a URL), with the Node this package installs
 * when the current one is older than 22.
 * @param {string} command The command's name, for messages.
 * @param {URL} entry The TypeScript module that exports `main(argv): Promise<number>`.
 * @param {number} failureCode The exit code when no suitable Node can be found.
 */
export async function launch(command, entry, failureCode) {
  const major = Number(process.versions.node.split(".")[0]);
  if (major < 22) {
    let nodeBin;
    try {
      nodeBin = createRequire(import.meta.url).resolve("node/bin/node");
    } catch {
      console.error(
        `${command} needs Node.js 22 or newer; this is ${process.version}. Run 'npm install' in the taskweb package to fetch one.`,
      );
      process.exit(failureCode);
    }
    const child = spawn(nodeBin, process.argv.slice(1), { stdio: "inherit" });
    for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => child.kill(signal));
    child.on("exit", (code, signal) => {
      if (signal != null) process.kill(process.pid, signal);
      else process.exit(code ?? failureCode);
    });
    return;
  }
  // Loading the TypeScript takes a while: a SIGINT or SIGTERM meanwhile ends the command
  // cleanly before it starts anything, rather than killing it by the signal.
  let stopped = false;
  const stopEarly = () => (stopped = true);
  process.on("SIGINT", stopEarly);
  process.on("SIGTERM", stopEarly);
  const { register } = await import("tsx/esm/api");
  register();
  const { main } = await import(entry.href);
  // The loader hooks hold the event loop while modules load: a signal that came meanwhile is
  // handed to its listener on the next turn of the loop, so let one pass first.
  await new Promise((resolve) => setImmediate(resolve));
  process.off("SIGINT", stopEarly);
  process.off("SIGTERM", stopEarly);
  if (stopped) process.exit(0);
  process.exitCode = await main(process.argv.slice(2));
}
