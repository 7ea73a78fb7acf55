/**
 * `taskweb followers [--pending]`, `taskweb followers approve|reject <actor>` and
 * `taskweb federation policy|allow|unallow|block|unblock`: who may follow this cluster.
 * @module
 */
import { CommanderError, type Command } from "commander";
import { apiRequest, type ApiTarget } from "./api-client.ts";
import type { ClientFlags } from "./graph.ts";

/** What the federation policy commands borrow from the `taskweb` program. */
export interface FollowerCommandsOptions {
  /** Adds `--url`, `--token` and `--json` to a command. */
  clientOptions(cmd: Command): Command;
  /** The API to call, from the flags or TASKWEB_URL / TASKWEB_TOKEN. */
  apiTarget(flags: ClientFlags): ApiTarget;
  /** Receives the command's exit code, once it is known. */
  run(exitCode: Promise<number>): void;
  /** Prints a line of output. @defaultValue console.log */
  print?: (line: string) => void;
}

interface FollowerRow {
  readonly actor_id: string;
  readonly state: string;
  readonly created_at: string;
}

interface PolicyBody {
  readonly acceptance: string;
  readonly allowlist: readonly { actor: string; source: string }[];
  readonly blocklist: readonly { actor: string; source: string }[];
}

/** Registers `followers …` and `federation …` on `program`. */
export function registerFollowerCommands(program: Command, options: FollowerCommandsOptions): void {
  const print = options.print ?? ((line: string) => console.log(line));
  const act = (work: () => Promise<void>) => {
    options.run(
      (async () => {
        await work();
        return 0;
      })(),
    );
  };

  const followers = options
    .clientOptions(
      program
        .command("followers")
        .description("List the clusters that follow this one (approve or reject pending ones)")
        .option("--state <state>", "only those in this state: accepted or pending")
        .option("--pending", "only follow requests waiting for approval (--state pending)"),
    )
    .action((flags: ClientFlags & { pending?: boolean; state?: string }) => {
      const state = flags.pending === true ? "pending" : flags.state;
      if (state != null && !["accepted", "pending"].includes(state)) {
        throw new CommanderError(2, "bad-state", "--state must be accepted or pending.");
      }
      act(async () => {
        const query = state != null ? `?state=${state}` : "";
        const body = (await apiRequest(
          options.apiTarget(flags),
          "GET",
          `/api/v1/followers${query}`,
        )) as { followers: FollowerRow[] };
        if (flags.json === true) print(JSON.stringify(body));
        else if (body.followers.length === 0)
          print(state === "pending" ? "No pending follow requests." : "No followers.");
        else
          for (const f of body.followers) {
            print(`${f.actor_id}  ${f.state}  since ${new Date(f.created_at).toISOString()}`);
          }
      });
    });

  for (const [verb, description] of [
    ["approve", "Accept a pending follow request"],
    ["reject", "Reject a follow request, or drop an accepted follower"],
  ] as const) {
    options
      .clientOptions(followers.command(`${verb} <actor>`).description(description))
      .action((actor: string, flags: ClientFlags) => {
        act(async () => {
          const body = await apiRequest(
            options.apiTarget(flags),
            "POST",
            `/api/v1/followers/${verb}`,
            { actor },
          );
          print(
            flags.json === true
              ? JSON.stringify(body)
              : `${actor} ${verb === "approve" ? "accepted" : "rejected"}.`,
          );
        });
      });
  }

  const federation = program
    .command("federation")
    .description("The federation policy: follower acceptance, allowlist and blocklist");

  options
    .clientOptions(
      federation
        .command("policy")
        .description("Show the policy, or change how follow requests are answered")
        .option("--acceptance <mode>", "auto, approval or allowlist"),
    )
    .action((flags: ClientFlags & { acceptance?: string }) => {
      act(async () => {
        const body = (await (flags.acceptance != null
          ? apiRequest(options.apiTarget(flags), "PUT", "/api/v1/federation/policy", {
              acceptance: flags.acceptance,
            })
          : apiRequest(
              options.apiTarget(flags),
              "GET",
              "/api/v1/federation/policy",
            ))) as PolicyBody;
        if (flags.json === true) {
          print(JSON.stringify(body));
          return;
        }
        print(`Follow requests: ${body.acceptance}`);
        const show = (l: PolicyBody["allowlist"]) =>
          l.length === 0 ? "(none)" : l.map((e) => `${e.actor} (${e.source})`).join(", ");
        print(`Allowlist: ${show(body.allowlist)}`);
        print(`Blocklist: ${show(body.blocklist)}`);
      });
    });

  for (const [verb, method, list, description] of [
    ["allow", "POST", "allowlist", "Add an actor URL or origin to the allowlist"],
    ["unallow", "DELETE", "allowlist", "Remove an actor URL or origin from the allowlist"],
    ["block", "POST", "blocklist", "Block an actor URL or origin (drops it as a follower)"],
    ["unblock", "DELETE", "blocklist", "Unblock an actor URL or origin"],
  ] as const) {
    options
      .clientOptions(federation.command(`${verb} <actor>`).description(description))
      .action((actor: string, flags: ClientFlags) => {
        act(async () => {
          const path = `/api/v1/federation/${list}`;
          const body =
            method === "POST"
              ? await apiRequest(options.apiTarget(flags), "POST", path, { actor })
              : await apiRequest(
                  options.apiTarget(flags),
                  "DELETE",
                  `${path}?actor=${encodeURIComponent(actor)}`,
                );
          print(flags.json === true ? JSON.stringify(body) : `${actor}: ${verb}ed.`);
        });
      });
  }
}
