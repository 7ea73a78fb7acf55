/**
 * The `taskweb-conformance` command.
 * @module
 */
import { writeFile } from "node:fs/promises";
import { Command, CommanderError, Option } from "commander";
import { manualDriver, noDriver, taskwebRestDriver, type Driver } from "./drivers.ts";
import { exitCodeOf, formatResultLine, formatSummary, toJson, toJUnit } from "./report.ts";
import { PreflightError, runConformance } from "./run.ts";

interface Flags {
  target?: string;
  driver: string;
  token?: string;
  api?: string;
  listen: string;
  publicUrl?: string;
  junit?: string;
  json?: string;
  only?: string[];
  timeout: string;
  settle: string;
}

/** Runs the command with `argv` (without node and script); resolves to the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  let code = 0;
  const program = new Command("taskweb-conformance")
    .description(
      "Checks a taskweb cluster against the taskweb v1 specification, playing peer clusters itself.",
    )
    .option("--target <actor-url>", "the actor URL of the server under test (required)")
    .addOption(
      new Option("--driver <name>", "how the suite makes the server act")
        .choices(["taskweb-rest", "manual", "none"])
        .default("none"),
    )
    .option("--token <token>", "admin Bearer token for --driver taskweb-rest (or TASKWEB_TOKEN)")
    .option("--api <url>", "API root for --driver taskweb-rest (default: <target origin>/api/v1)")
    .option(
      "--listen <host:port>",
      "where the suite's peer server listens; the server under test must reach it",
      "127.0.0.1:0",
    )
    .option("--public-url <url>", "the URL the server under test reaches the suite's peer at")
    .option("--junit <file>", "write a JUnit XML report")
    .option("--json <file>", "write a JSON report")
    .option("--only <prefixes...>", "run only checks whose id starts with one of these")
    .option("--timeout <seconds>", "how long to wait for the server's deliveries", "30")
    .option("--settle <ms>", "how long a refused input is given to show an effect", "1000")
    .exitOverride()
    .action(async (flags: Flags) => {
      code = await run(flags);
    });
  try {
    await program.parseAsync([...argv], { from: "user" });
    return code;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === "commander.helpDisplayed" || error.code === "commander.help") return 0;
      return 2;
    }
    console.error(`taskweb-conformance: ${error instanceof Error ? error.message : String(error)}`);
    return 2;
  }
}

function usage(message: string): number {
  console.error(`taskweb-conformance: ${message}`);
  return 2;
}

async function run(flags: Flags): Promise<number> {
  if (flags.target == null) return usage("--target <actor-url> is required");
  let driver: Driver;
  if (flags.driver === "taskweb-rest") {
    const token = flags.token ?? process.env.TASKWEB_TOKEN;
    if (token == null || token === "") {
      return usage("--driver taskweb-rest needs --token <admin token> (or TASKWEB_TOKEN)");
    }
    let origin: string;
    try {
      origin = new URL(flags.target).origin;
    } catch {
      return usage(`--target ${flags.target} is not a URL`);
    }
    driver = taskwebRestDriver({ apiUrl: flags.api ?? `${origin}/api/v1`, token });
  } else if (flags.driver === "manual") {
    driver = manualDriver();
  } else {
    driver = noDriver();
    console.error(
      "taskweb-conformance: no driver (--driver taskweb-rest --token … or --driver manual); " +
        "checks that need the server to act will be reported not observable.",
    );
  }
  const m = /^(.*):(\d+)$/.exec(flags.listen);
  if (m == null) return usage(`--listen expects host:port, got ${flags.listen}`);
  const timeout = Number(flags.timeout);
  const settle = Number(flags.settle);
  if (!(timeout > 0) || !(settle >= 0)) return usage("--timeout and --settle must be numbers");
  try {
    const report = await runConformance({
      target: flags.target,
      driver,
      peer: {
        host: (m[1] ?? "127.0.0.1").replace(/^\[|\]$/g, ""),
        port: Number(m[2]),
        ...(flags.publicUrl != null ? { publicUrl: flags.publicUrl } : {}),
      },
      timing: { deliveryTimeoutMs: timeout * 1000, settleMs: settle },
      ...(flags.only != null ? { only: flags.only } : {}),
      onResult: (r) => console.log(formatResultLine(r)),
    });
    console.log(formatSummary(report));
    if (flags.junit != null) await writeFile(flags.junit, toJUnit(report));
    if (flags.json != null) await writeFile(flags.json, toJson(report));
    return exitCodeOf(report);
  } catch (error) {
    if (error instanceof PreflightError) {
      console.error(`taskweb-conformance: preflight failed: ${error.message}`);
      return 2;
    }
    throw error;
  }
}
