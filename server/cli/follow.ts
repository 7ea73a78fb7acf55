/**
 * `taskweb follow`, `taskweb unfollow` and `taskweb following`: which clusters this one
 * listens to (`taskweb followers`, who listens to it, is in followers.ts).
 * @module
 */
import { CommanderError, type Command } from "commander";
import { apiRequest, type ApiTarget } from "./api-client.ts";
import { EXIT_CODES } from "./exit-codes.ts";
import type { ClientFlags } from "./graph.ts";
import { createSpinner } from "./progress.ts";

/** What the follow commands borrow from the `taskweb` program. */
export interface FollowCommandsOptions {
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

/** A row of the followers or following collection, as the API lists it. */
interface RelationRow {
  readonly actor_id: string;
  readonly inbox: string;
  readonly shared_inbox: string | null;
  readonly state: string;
  readonly created_at: string;
  readonly updated_at: string;
}

/** How often `follow --wait` asks whether the follow was answered. */
const WAIT_POLL_MS = 250;

function checkActorUrl(actor: string): void {
  let url: URL;
  try {
    url = new URL(actor);
  } catch {
    throw new CommanderError(2, "bad-actor", `${JSON.stringify(actor)} is not a URL.`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new CommanderError(2, "bad-actor", `${actor} is not an http(s) URL of a cluster.`);
  }
}

function seconds(value: string | boolean | undefined, flag: string): number | undefined {
  if (value == null || value === false) return undefined;
  if (value === true) return 60;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) {
    throw new CommanderError(2, "bad-seconds", `${flag} must be a positive number of seconds.`);
  }
  return n;
}

/** Registers `follow`, `unfollow` and `following` on `program`. */
export function registerFollowCommands(program: Command, options: FollowCommandsOptions): void {
  const print = options.print ?? ((line: string) => console.log(line));
  const printError = options.printError ?? ((line: string) => console.error(line));

  options
    .clientOptions(
      program
        .command("follow <actor-url>")
        .description(
          "Make the cluster follow another cluster (its completions and artifacts then reach this one)",
        )
        .option(
          "--wait [seconds]",
          "wait until the other cluster accepts (exit 0) or rejects (exit 1); default 60 s",
        ),
    )
    .action((actor: string, flags: ClientFlags & { wait?: string | boolean }) => {
      options.run(
        (async () => {
          checkActorUrl(actor);
          const wait = seconds(flags.wait, "--wait");
          const target = options.apiTarget(flags);
          const sent = (await apiRequest(target, "POST", "/api/v1/following", { actor })) as {
            actorId: string;
            state: string;
          };
          if (wait == null) {
            print(
              flags.json === true
                ? JSON.stringify(sent)
                : `Follow request sent to ${sent.actorId} (${sent.state}).`,
            );
            return EXIT_CODES.ok;
          }
          const spinner = createSpinner(`Waiting for ${sent.actorId} to answer…`, {
            enabled: flags.json !== true && process.stderr.isTTY === true,
          });
          const until = Date.now() + wait * 1000;
          let state = sent.state;
          try {
            while (state === "pending" && Date.now() < until) {
              await new Promise((r) => setTimeout(r, WAIT_POLL_MS));
              const { following } = (await apiRequest(target, "GET", "/api/v1/following")) as {
                following: RelationRow[];
              };
              state = following.find((f) => f.actor_id === sent.actorId)?.state ?? "gone";
            }
          } finally {
            spinner.stop();
          }
          if (flags.json === true) {
            print(JSON.stringify({ actorId: sent.actorId, state }));
          } else if (state === "accepted") {
            print(`${sent.actorId} accepted: this cluster follows it.`);
          } else if (state === "pending") {
            printError(`taskweb: ${sent.actorId} did not answer within ${wait} s; still pending.`);
          } else {
            printError(`taskweb: ${sent.actorId} did not accept the follow (${state}).`);
          }
          return state === "accepted" ? EXIT_CODES.ok : EXIT_CODES.failed;
        })(),
      );
    });

  options
    .clientOptions(
      program
        .command("unfollow <actor-url>")
        .description("Stop following a cluster (an Undo of the Follow is sent to it)"),
    )
    .action((actor: string, flags: ClientFlags) => {
      options.run(
        (async () => {
          checkActorUrl(actor);
          await apiRequest(
            options.apiTarget(flags),
            "DELETE",
            `/api/v1/following?actor=${encodeURIComponent(actor)}`,
          );
          print(
            flags.json === true
              ? JSON.stringify({ actorId: actor, unfollowed: true })
              : `No longer following ${actor}.`,
          );
          return EXIT_CODES.ok;
        })(),
      );
    });

  // `followers` (with approve and reject) is registered by followers.ts.
  for (const [collection, description] of [
    ["following", "List the clusters this one follows (and whether they accepted)"],
  ] as const) {
    options
      .clientOptions(
        program
          .command(collection)
          .description(description)
          .option("--state <state>", "only those in this state: accepted, pending or rejected"),
      )
      .action((flags: ClientFlags & { state?: string }) => {
        options.run(
          (async () => {
            if (flags.state != null && !["accepted", "pending", "rejected"].includes(flags.state)) {
              throw new CommanderError(
                2,
                "bad-state",
                "--state must be accepted, pending or rejected.",
              );
            }
            const body = (await apiRequest(
              options.apiTarget(flags),
              "GET",
              `/api/v1/${collection}`,
            )) as Record<string, RelationRow[]>;
            const rows = (body[collection] ?? []).filter(
              (r) => flags.state == null || r.state === flags.state,
            );
            if (flags.json === true) {
              print(JSON.stringify({ [collection]: rows }));
            } else if (rows.length === 0) {
              print("Not following any cluster.");
            } else {
              for (const r of rows) {
                print(`${r.actor_id}  ${r.state}  since ${new Date(r.created_at).toISOString()}`);
              }
            }
            return EXIT_CODES.ok;
          })(),
        );
      });
  }
}
