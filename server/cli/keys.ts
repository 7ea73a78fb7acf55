/**
 * `taskweb keys rotate`: replaces the cluster's signing keys with new ones. Followers are
 * sent an `Update` of the actor; the replaced keys stay published for the grace period
 * (`TASKWEB_KEY_GRACE_MS`), and deliveries still queued are signed with the new keys.
 * @module
 */
import type { Command } from "commander";
import { apiRequest, type ApiTarget } from "./api-client.ts";
import type { ClientFlags } from "./graph.ts";

/** What the key commands borrow from the `taskweb` program. */
export interface KeyCommandsOptions {
  /** Adds `--url`, `--token` and `--json` to a command. */
  clientOptions(cmd: Command): Command;
  /** The API to call, from the flags or TASKWEB_URL / TASKWEB_TOKEN. */
  apiTarget(flags: ClientFlags): ApiTarget;
  /** Receives the command's exit code, once it is known. */
  run(exitCode: Promise<number>): void;
  /** Prints a line of output. @defaultValue console.log */
  print?: (line: string) => void;
}

interface RotationBody {
  readonly keyIds: string[];
  readonly rotatedAt: string;
  readonly replacedKeys: number;
  readonly graceUntil: string;
}

/** Registers `keys rotate` on `program`. */
export function registerKeyCommands(program: Command, options: KeyCommandsOptions): void {
  const print = options.print ?? ((line: string) => console.log(line));
  const keys = program.command("keys").description("The cluster's signing keys");
  options
    .clientOptions(
      keys
        .command("rotate")
        .description(
          "Replace the RSA and Ed25519 keys with new ones, tell followers (Update of the actor), keep the old ones published under their own ids for the grace period",
        ),
    )
    .action((flags: ClientFlags & { json?: boolean }) => {
      options.run(
        (async () => {
          const body = (await apiRequest(
            options.apiTarget(flags),
            "POST",
            "/api/v1/keys/rotate",
            {},
          )) as RotationBody;
          if (flags.json === true) {
            print(JSON.stringify(body));
          } else {
            print(`Rotated at ${body.rotatedAt}; signing with ${body.keyIds.join(", ")}.`);
            print(
              `${body.replacedKeys} replaced keys stay published under their ids until ${body.graceUntil}; followers were sent an Update.`,
            );
          }
          return 0;
        })(),
      );
    });
}
