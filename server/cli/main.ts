/**
 * The `taskweb` command.
 * @module
 */
import { Command, CommanderError, Option } from "commander";
import { readConfig, type ConfigOverrides } from "../config.ts";
import { startCluster, type ClusterRoles } from "../cluster.ts";
import { openDatabase } from "../store/database.ts";
import { migrateToLatest } from "../store/migrate.ts";
import { VERSION } from "../version.ts";
import { runDemo } from "./demo.ts";
import { setUpLogging } from "./logging.ts";
import { apiRequest, type ApiTarget } from "./api-client.ts";
import { registerGraphCommands } from "./graph.ts";
import { registerKeyCommands } from "./keys.ts";
import { registerSecretCommands } from "./secret.ts";
import { registerAccessCommands } from "./client.ts";
import { registerFollowerCommands } from "./followers.ts";
import { registerHookCommands } from "./hook.ts";
import { registerArtifactCommands } from "./artifact.ts";
import { registerFollowCommands } from "./follow.ts";
import { registerTaskLogsCommand } from "./task-logs.ts";
import { registerStatsCommand } from "./stats.ts";
import { registerProvenanceCommand } from "./provenance.ts";
import { EXIT_CODES, EXIT_CODES_HELP, errorCodeOf, exitCodeOf } from "./exit-codes.ts";
import { createSpinner } from "./progress.ts";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { JoinProgress } from "../domain/task-joins.ts";
import { describeJoin } from "./task-join.ts";

interface ServerFlags {
  port?: string;
  host?: string;
  name?: string;
  data?: string;
  publicUrl?: string;
  concurrency?: string;
}

function overrides(flags: ServerFlags): ConfigOverrides {
  const o: ConfigOverrides = {};
  if (flags.port != null) {
    const port = Number(flags.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535)
      throw new CommanderError(2, "bad-port", `--port must be 0–65535, got ${flags.port}`);
    o.port = port;
  }
  if (flags.host != null) o.host = flags.host;
  if (flags.name != null) o.name = flags.name;
  if (flags.data != null) o.dataDir = flags.data;
  if (flags.publicUrl != null) o.publicUrl = flags.publicUrl;
  if (flags.concurrency != null) {
    const n = Number(flags.concurrency);
    if (!Number.isInteger(n) || n < 1)
      throw new CommanderError(2, "bad-concurrency", "--concurrency must be a positive integer");
    o.workerConcurrency = n;
  }
  return o;
}

function serverOptions(cmd: Command): Command {
  return cmd
    .option("-p, --port <port>", "port to listen on (env PORT)", undefined)
    .option("--host <host>", "address to listen on (env HOST)")
    .option("-n, --name <name>", "cluster name, the actor is /clusters/<name> (env TASKWEB_NAME)")
    .option("-d, --data <dir>", "data directory of the embedded database (env TASKWEB_DATA_DIR)")
    .option(
      "--public-url <url>",
      "origin other clusters reach this one at (env TASKWEB_PUBLIC_URL)",
    )
    .option("-c, --concurrency <n>", "tasks run at once by this process (env WORKER_CONCURRENCY)");
}

/**
 * The embedded quick start (no PostgreSQL, listening and reached on loopback) federates with
 * clusters on the same machine, so it allowlists 127.0.0.1 explicitly; anything else keeps
 * the empty default unless `TASKWEB_PRIVATE_ADDRESS_ALLOWLIST` says otherwise.
 */
function quickStartAllowlist(o: ConfigOverrides): readonly string[] | undefined {
  const env = process.env;
  if (env.TASKWEB_PRIVATE_ADDRESS_ALLOWLIST != null || env.DATABASE_URL != null) return undefined;
  const host = o.host ?? env.HOST ?? "127.0.0.1";
  const publicUrl = o.publicUrl ?? env.TASKWEB_PUBLIC_URL;
  const loopback = (h: string) => h === "localhost" || /^127\.\d+\.\d+\.\d+$/.test(h);
  let publicHost = host;
  try {
    if (publicUrl != null) publicHost = new URL(publicUrl).hostname;
  } catch {
    return undefined; // readConfig reports the bad URL
  }
  return loopback(host) && loopback(publicHost) ? ["127.0.0.1/32"] : undefined;
}

/** Runs until SIGINT/SIGTERM, then stops the cluster cleanly. */
async function serve(flags: ServerFlags, roles: ClusterRoles): Promise<number> {
  const o = overrides(flags);
  const quickStart = quickStartAllowlist(o);
  if (quickStart != null) o.privateAddressAllowlist = quickStart;
  const config = readConfig(process.env, o);
  // Listened for from the start: a process asked to stop while it starts stops cleanly once
  // started, instead of dying by the signal with its database and queue half set up.
  let stopRequested = false;
  let wake: (() => void) | undefined;
  const stop = () => {
    stopRequested = true;
    wake?.();
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  const cluster = await startCluster(config, { roles });
  const lines = [
    `taskweb ${VERSION} · cluster "${config.name}" (${roles.web && roles.worker ? "web + worker" : roles.web ? "web" : "worker"})`,
    `  database:  ${cluster.database.kind === "pglite" ? `embedded PGlite in ${config.dataDir}` : "PostgreSQL"}`,
    `  queue:     ${cluster.jobs.kind === "bullmq" ? "BullMQ on Redis" : "embedded (database)"}`,
    `  secrets:   ${
      cluster.secrets.keyId == null
        ? "unavailable: set TASKWEB_SECRETS_KEY"
        : `key ${cluster.secrets.keyId} from ${config.secretsKey != null ? "TASKWEB_SECRETS_KEY" : `${config.dataDir}/secrets.key`}`
    }`,
    `  outbound:  private addresses refused${
      config.privateAddressAllowlist.length > 0
        ? ` except ${config.privateAddressAllowlist.join(", ")}${quickStart != null ? " (embedded quick start on loopback)" : ""}`
        : ""
    }`,
  ];
  if (roles.web) {
    lines.push(
      `  actor:     ${cluster.urls.actor}`,
      `  API:       ${cluster.urls.origin}/api/v1  (token: ${config.adminToken != null ? "TASKWEB_ADMIN_TOKEN" : `${config.dataDir}/admin-token`})`,
      `  UI:        ${cluster.urls.origin}/`,
    );
  }
  if (cluster.metricsPort != null) {
    lines.push(
      `  metrics:   http://${config.host}:${cluster.metricsPort}/metrics (token as for the API)`,
    );
  }
  console.log(lines.join("\n"));
  if (!stopRequested) await new Promise<void>((resolve) => (wake = resolve));
  console.log("Stopping: letting running tasks finish…");
  await cluster.stop();
  return 0;
}

function apiTarget(flags: { url?: string; token?: string }): ApiTarget {
  const url = flags.url ?? process.env.TASKWEB_URL ?? "http://127.0.0.1:7300";
  const token = flags.token ?? process.env.TASKWEB_TOKEN;
  if (token == null)
    throw new CommanderError(2, "no-token", "Give the API token with --token or TASKWEB_TOKEN.");
  return { url, token };
}

function clientOptions(cmd: Command): Command {
  return cmd
    .option("--url <url>", "the cluster's base URL (env TASKWEB_URL)", undefined)
    .option("--token <token>", "API token (env TASKWEB_TOKEN)")
    .option("--json", "print JSON for scripts");
}

/** Parses `argv` (without node and script) and runs the command; resolves to the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  await setUpLogging({
    level: process.env.LOG_LEVEL,
    format: process.env.TASKWEB_LOG_FORMAT ?? process.env.LOG_FORMAT,
  });
  const program = new Command("taskweb")
    .description(
      "Federated automation clusters: tasks that depend on other clusters' tasks and artifacts.",
    )
    .version(VERSION)
    .addHelpText("after", EXIT_CODES_HELP)
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(text) });
  let result: Promise<number> = Promise.resolve(0);

  serverOptions(
    program.command("start").description("Run a whole cluster in one process (web + workers)"),
  ).action((flags: ServerFlags) => {
    result = serve(flags, { web: true, worker: true });
  });
  serverOptions(program.command("web").description("Run the HTTP and federation side only")).action(
    (flags: ServerFlags) => {
      result = serve(flags, { web: true, worker: false });
    },
  );
  serverOptions(
    program.command("worker").description("Run tasks, publishing and delivery only"),
  ).action((flags: ServerFlags) => {
    result = serve(flags, { web: false, worker: true });
  });
  serverOptions(
    program
      .command("migrate")
      .description(
        "Bring the database schema up to date and exit (safe to run while other processes start)",
      )
      .option("--json", "print the migrations applied as JSON"),
  ).action((flags: ServerFlags & { json?: boolean }) => {
    result = (async () => {
      const config = readConfig(process.env, overrides(flags));
      const spinner = createSpinner("Migrating the database…", {
        enabled: flags.json !== true && process.stderr.isTTY === true,
      });
      // A new data directory is created, as `taskweb start` would.
      const dataDir = config.dataDir ?? ".data";
      if (config.databaseUrl == null) await mkdir(dataDir, { recursive: true });
      const database = await openDatabase({
        url: config.databaseUrl,
        dataDir: config.databaseUrl == null ? join(dataDir, "pglite") : undefined,
        schema: config.databaseSchema,
      });
      try {
        const ran = await migrateToLatest(database.db);
        spinner.stop();
        console.log(
          flags.json === true
            ? JSON.stringify({ applied: ran })
            : ran.length === 0
              ? "The database is up to date."
              : `Applied: ${ran.join(", ")}`,
        );
      } finally {
        spinner.stop();
        await database.close();
      }
      return 0;
    })();
  });
  program
    .command("demo")
    .description(
      "Start seven clusters on loopback and narrate hooks, results flowing back, a join and relays",
    )
    .addOption(new Option("--keep", "keep the clusters running until Ctrl-C"))
    .action((flags: { keep?: boolean }) => {
      result = (async () => {
        // The narration is the output; the clusters' logs only when asked for.
        await setUpLogging({ level: process.env.LOG_LEVEL ?? "warning" });
        return await runDemo({ keep: flags.keep === true, print: (line) => console.log(line) });
      })();
    });
  registerFollowCommands(program, {
    clientOptions,
    apiTarget,
    run: (exitCode) => {
      result = exitCode;
    },
  });
  const task = program.command("task").description("Create and inspect tasks");
  clientOptions(
    task
      .command("create <file>")
      .description("Create a task from a JSON definition file ('-' for stdin)"),
  ).action((file: string, flags: { url?: string; token?: string; json?: boolean }) => {
    result = (async () => {
      const text = file === "-" ? await readStdin() : await readFile(file, "utf8");
      let definition: unknown;
      try {
        definition = JSON.parse(text);
      } catch (error) {
        throw new CommanderError(2, "bad-json", `${file} is not JSON: ${String(error)}`);
      }
      const body = (await apiRequest(apiTarget(flags), "POST", "/api/v1/tasks", definition)) as {
        taskId: string;
        url: string;
        state: string;
      };
      console.log(
        flags.json === true ? JSON.stringify(body) : `${body.taskId} ${body.state}  ${body.url}`,
      );
      return 0;
    })();
  });
  for (const [action, description] of [
    [
      "cancel",
      "Cancel a task (a running one is stopped); its dependents follow the requires rules",
    ],
    ["rerun", "Run a resolved task again as a new run"],
    ["activate", "Activate an inactive task (backfill): it runs once its dependencies allow"],
  ] as const) {
    clientOptions(task.command(`${action} <task-id>`).description(description)).action(
      (taskId: string, flags: { url?: string; token?: string; json?: boolean }) => {
        result = (async () => {
          const body = (await apiRequest(
            apiTarget(flags),
            "POST",
            `/api/v1/tasks/${encodeURIComponent(taskId)}/${action}`,
          )) as { state: string; runId?: number; changed?: boolean };
          if (flags.json === true) console.log(JSON.stringify(body));
          else if (action === "rerun") console.log(`${taskId}: run ${body.runId} is pending`);
          else if (action === "activate") console.log(`${taskId} is active: ${body.state}`);
          else
            console.log(
              body.changed === false
                ? `${taskId} had already resolved ${body.state}`
                : `${taskId} canceled`,
            );
          return 0;
        })();
      },
    );
  }
  clientOptions(
    task
      .command("resolve <task-id>")
      .description("Resolve a breakpoint task that is waiting: its dependents then go on")
      .addOption(
        new Option("--state <state>", "how it resolves")
          .choices(["completed", "failed"])
          .default("completed"),
      )
      .option("--note <text>", "a line kept as the run's log, e.g. who approved and why"),
  ).action(
    (
      taskId: string,
      flags: { url?: string; token?: string; json?: boolean; state: string; note?: string },
    ) => {
      result = (async () => {
        const body = (await apiRequest(
          apiTarget(flags),
          "POST",
          `/api/v1/tasks/${encodeURIComponent(taskId)}/resolve`,
          { state: flags.state, ...(flags.note != null ? { note: flags.note } : {}) },
        )) as { state: string; runId: number };
        console.log(
          flags.json === true
            ? JSON.stringify(body)
            : `${taskId}: run ${body.runId} resolved ${body.state}`,
        );
        return 0;
      })();
    },
  );
  clientOptions(
    task.command("show <task-id>").description("Show a task, its runs and artifacts"),
  ).action((taskId: string, flags: { url?: string; token?: string; json?: boolean }) => {
    result = (async () => {
      const body = (await apiRequest(
        apiTarget(flags),
        "GET",
        `/api/v1/tasks/${encodeURIComponent(taskId)}`,
      )) as {
        task_id: string;
        name: string;
        state: string;
        runs: { run_id: number; state: string; reason_resolved: string | null }[];
        artifacts: { name: string; size: number; sha256: string }[];
        join?: JoinProgress;
      };
      if (flags.json === true) {
        console.log(JSON.stringify(body));
      } else {
        console.log(`${body.task_id} (${body.name}): ${body.state}`);
        for (const r of body.runs)
          console.log(
            `  run ${r.run_id}: ${r.state}${r.reason_resolved ? ` (${r.reason_resolved})` : ""}`,
          );
        for (const a of body.artifacts)
          console.log(`  artifact ${a.name}  ${a.size} bytes  sha256:${a.sha256}`);
        if (body.join != null) for (const line of describeJoin(body.join)) console.log(line);
      }
      return 0;
    })();
  });
  registerTaskLogsCommand(task, {
    clientOptions,
    apiTarget,
    run: (exitCode) => {
      result = exitCode;
    },
  });
  registerGraphCommands(program, {
    clientOptions,
    apiTarget,
    run: (exitCode) => {
      result = exitCode;
    },
  });
  registerStatsCommand(program, {
    clientOptions,
    apiTarget,
    run: (exitCode) => {
      result = exitCode;
    },
  });
  registerProvenanceCommand(program, {
    run: (exitCode) => {
      result = exitCode;
    },
  });
  registerArtifactCommands(program, {
    run: (exitCode) => {
      result = exitCode;
    },
  });
  registerKeyCommands(program, {
    clientOptions,
    apiTarget,
    run: (exitCode) => {
      result = exitCode;
    },
  });
  registerSecretCommands(program, {
    clientOptions,
    apiTarget,
    run: (exitCode) => {
      result = exitCode;
    },
    readStdin,
    stdinIsTerminal: process.stdin.isTTY === true,
  });
  registerAccessCommands(program, { clientOptions, apiTarget, run: (c) => void (result = c) });
  registerFollowerCommands(program, { clientOptions, apiTarget, run: (c) => void (result = c) });
  registerHookCommands(program, {
    clientOptions,
    apiTarget,
    run: (exitCode) => {
      result = exitCode;
    },
  });

  try {
    await program.parseAsync(argv, { from: "user" });
    return await result;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (
        error.code === "commander.helpDisplayed" ||
        error.code === "commander.version" ||
        error.code === "commander.help"
      )
        return 0;
      if (!error.code.startsWith("commander.")) console.error(`taskweb: ${error.message}`);
      return error.exitCode === 0 ? EXIT_CODES.ok : EXIT_CODES.usage;
    }
    const message = error instanceof Error ? error.message : String(error);
    console.error(`taskweb: ${message}`);
    if (argv.includes("--json")) {
      console.log(JSON.stringify({ error: { code: errorCodeOf(error), message } }));
    }
    return exitCodeOf(error);
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}
