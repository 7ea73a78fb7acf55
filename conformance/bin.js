#!/usr/bin/env node
/* global process, console */
// Entry point of the `taskweb-conformance` command. Like `taskweb`, it needs Node.js 22 or
// newer; it re-runs itself with the `node` package the project installs when started by an
// older Node, and runs its TypeScript through tsx.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";

const major = Number(process.versions.node.split(".")[0]);
if (major < 22) {
  let nodeBin;
  try {
    nodeBin = createRequire(import.meta.url).resolve("node/bin/node");
  } catch {
    console.error(
      `taskweb-conformance needs Node.js 22 or newer; this is ${process.version}. Run 'npm install' in the taskweb package to fetch one.`,
    );
    process.exit(2);
  }
  const child = spawn(nodeBin, process.argv.slice(1), { stdio: "inherit" });
  for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => child.kill(signal));
  child.on("exit", (code, signal) => {
    if (signal != null) process.kill(process.pid, signal);
    else process.exit(code ?? 2);
  });
} else {
  const { register } = await import("tsx/esm/api");
  register();
  const { main } = await import("./cli.ts");
  process.exitCode = await main(process.argv.slice(2));
}
