#!/usr/bin/env node
// Entry point of the `taskweb` command. taskweb needs Node.js 22 or newer (Fedify 2); it
// installs one as a dependency (the `node` package), and re-runs itself with it when
// started by an older Node.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";

const major = Number(process.versions.node.split(".")[0]);
if (major < 22) {
  let nodeBin;
  try {
    nodeBin = createRequire(import.meta.url).resolve("node/bin/node");
  } catch {
    console.error(
      `taskweb needs Node.js 22 or newer; this is ${process.version}. Run 'npm install' in the taskweb package to fetch one.`,
    );
    process.exit(1);
  }
  const child = spawn(nodeBin, process.argv.slice(1), { stdio: "inherit" });
  for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => child.kill(signal));
  child.on("exit", (code, signal) => {
    if (signal != null) process.kill(process.pid, signal);
    else process.exit(code ?? 1);
  });
} else {
  const { register } = await import("tsx/esm/api");
  register();
  const { main } = await import("../server/cli/main.ts");
  process.exitCode = await main(process.argv.slice(2));
}
