/**
 * `taskweb provenance <task URL>`: checks an aggregate's inputs as anyone outside every
 * cluster can (spec/v1/provenance.md). It fetches the task document, reads the relayed
 * originals from the outbox of the task's cluster, and for every input prints the cluster,
 * the task, the digest and whether what the input's own cluster published agrees.
 * @module
 */
import { CommanderError, type Command } from "commander";
import {
  parseHttpUrl,
  verifyProvenance,
  type InputVerification,
  type JsonLoader,
} from "../../protocol/index.ts";
import { EXIT_CODES } from "./exit-codes.ts";
import { createSpinner } from "./progress.ts";

/** What the provenance command borrows from the `taskweb` program. */
export interface ProvenanceCommandOptions {
  /** Receives the command's exit code, once it is known. */
  run(exitCode: Promise<number>): void;
  /** Prints a line of output. @defaultValue console.log */
  print?: (line: string) => void;
}

interface ProvenanceFlags {
  json?: boolean;
  requireProof?: boolean;
  timeout: string;
}

/** Fetches public ActivityPub documents over plain HTTP(S), as any reader would. */
export function createHttpJsonLoader(timeoutMs: number): JsonLoader {
  return async (url) => {
    const response = await fetch(url, {
      headers: { accept: "application/activity+json, application/ld+json" },
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return (await response.json()) as unknown;
  };
}

/** One line of the report for an input. */
export function formatInputVerification(result: InputVerification): string {
  const { input } = result;
  const head = `${result.ok ? "verified" : "REFUSED "}  ${input.attributedTo}  task ${input.task}  sha256 ${input.sha256}`;
  if (result.ok) {
    const how =
      result.evidence === "relayed-proof"
        ? `signed original ${result.source}, relayed by the aggregator`
        : `served by its cluster at ${result.source}`;
    return `${head}\n          ${input.artifact}\n          ${how}`;
  }
  return `${head}\n          ${input.artifact}\n          ${result.reason}: ${result.detail}`;
}

/** Registers `provenance` on `program`. */
export function registerProvenanceCommand(
  program: Command,
  options: ProvenanceCommandOptions,
): void {
  const print = options.print ?? ((line: string) => console.log(line));
  program
    .command("provenance")
    .description(
      "Verify the inputs an aggregate task lists against what each input's own cluster published",
    )
    .argument("<task-url>", "the URL (id) of the task, on any cluster")
    .option("--require-proof", "refuse inputs no relayed, signed original vouches for")
    .option("--timeout <seconds>", "time limit of each HTTP request", "30")
    .option("--json", "print one JSON document with every input's outcome")
    .addHelpText(
      "after",
      "\nNo token is needed: task documents, outboxes and actors are public.\nExit status 0 when every input verified, 1 when any was refused or none is listed.\n\nExample:\n  taskweb provenance https://state.example/clusters/state/tasks/aggregate-2026-12",
    )
    .action((taskUrl: string, flags: ProvenanceFlags) => {
      options.run(
        (async () => {
          const url = parseHttpUrl(taskUrl);
          if (!url.ok) throw new CommanderError(2, "bad-url", `${taskUrl} is not an http(s) URL`);
          const seconds = Number(flags.timeout);
          if (!Number.isFinite(seconds) || seconds <= 0)
            throw new CommanderError(2, "bad-timeout", "--timeout must be a positive number");
          const loadDocument = createHttpJsonLoader(seconds * 1000);
          const spinner = createSpinner(`Fetching ${url.value.href}…`, {
            enabled: flags.json !== true && process.stderr.isTTY === true,
          });
          let document: unknown;
          try {
            document = await loadDocument(url.value.href);
          } catch (error) {
            spinner.stop();
            const message = `${url.value.href}: ${String(error)}`;
            if (flags.json === true)
              print(JSON.stringify({ error: { code: "unavailable", message } }));
            else print(`Could not fetch the task: ${message}`);
            return EXIT_CODES.unavailable;
          }
          const result = await verifyProvenance(document, {
            loadDocument,
            ...(flags.requireProof === true ? { requireProof: true } : {}),
            onOutboxPage: (items) =>
              spinner.update(
                `Reading the aggregator's outbox for relayed originals: ${items} items…`,
              ),
            onInput: (input, done, total) => {
              spinner.update(`Checked ${done} of ${total} inputs…`);
              if (flags.json !== true) {
                spinner.stop();
                print(formatInputVerification(input));
              }
            },
          });
          spinner.stop();
          if (result.task == null) {
            const message = `${url.value.href} is not a task document: ${result.detail}`;
            if (flags.json === true)
              print(JSON.stringify({ error: { code: "bad-task", message } }));
            else print(message);
            return EXIT_CODES.failed;
          }
          const refused = result.inputs.filter((r) => !r.ok).length;
          if (flags.json === true) {
            print(
              JSON.stringify({
                task: result.task.id,
                cluster: result.task.attributedTo,
                ok: result.ok,
                inputs: result.inputs,
              }),
            );
          } else if (result.inputs.length === 0) {
            print(`${result.task.id} lists no inputs: there is no provenance to verify.`);
          } else {
            print(
              refused === 0
                ? `All ${result.inputs.length} inputs of ${result.task.id} verified.`
                : `${refused} of ${result.inputs.length} inputs of ${result.task.id} REFUSED.`,
            );
          }
          return result.ok ? EXIT_CODES.ok : EXIT_CODES.failed;
        })(),
      );
    });
}
