/**
 * `taskweb secret set NAME`, `taskweb secret list` and `taskweb secret delete NAME`. The
 * value of `set` is read from standard input, so that it never appears in the command line
 * (shell history, the process list).
 * @module
 */
import { CommanderError, type Command } from "commander";
import { isSecretName, SECRET_NAME_RULE } from "../domain/secrets.ts";
import { apiRequest, type ApiTarget } from "./api-client.ts";
import type { ClientFlags } from "./graph.ts";

/** What the secret commands borrow from the `taskweb` program. */
export interface SecretCommandsOptions {
  /** Adds `--url`, `--token` and `--json` to a command. */
  clientOptions(cmd: Command): Command;
  /** The API to call, from the flags or TASKWEB_URL / TASKWEB_TOKEN; a usage error without a token. */
  apiTarget(flags: ClientFlags): ApiTarget;
  /** Receives the command's exit code, once it is known. */
  run(exitCode: Promise<number>): void;
  /** Reads standard input to its end. */
  readStdin(): Promise<string>;
  /** Whether standard input is a terminal (then `set` says how to end the value). */
  readonly stdinIsTerminal: boolean;
  /** Prints a line of output. @defaultValue console.log */
  print?: (line: string) => void;
  /** Prints a line about the command's progress. @defaultValue console.error */
  printError?: (line: string) => void;
}

interface SecretBody {
  readonly name: string;
  readonly keyId: string;
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly created?: boolean;
}

/**
 * The API path of a secret. The name is checked first: a `.` or `..` segment would be
 * resolved away by URL parsing and name another secret.
 */
function secretPath(name: string): string {
  if (!isSecretName(name)) {
    throw new CommanderError(
      2,
      "bad-secret-name",
      `${JSON.stringify(name)} is not a secret name: use ${SECRET_NAME_RULE}.`,
    );
  }
  return `/api/v1/secrets/${name.split("/").map(encodeURIComponent).join("/")}`;
}

/** The value as piped in, without the one line break that `echo` or a file adds. */
function valueFromInput(input: string): string {
  const value = input.replace(/\r?\n$/, "");
  if (value === "") {
    throw new CommanderError(
      2,
      "no-secret-value",
      "No value on standard input: pipe it in, as in `taskweb secret set NAME < token.txt`.",
    );
  }
  return value;
}

/** Registers `secret set`, `secret list` and `secret delete` on `program`. */
export function registerSecretCommands(program: Command, options: SecretCommandsOptions): void {
  const print = options.print ?? ((line: string) => console.log(line));
  const printError = options.printError ?? ((line: string) => console.error(line));
  const secret = program
    .command("secret")
    .description("Manage the secrets tasks receive as environment variables (payload.secrets)");

  options
    .clientOptions(
      secret
        .command("set <name>")
        .description(
          "Store a secret; its value is read from standard input (one final line break is dropped)",
        ),
    )
    .action((name: string, flags: ClientFlags) => {
      options.run(
        (async () => {
          const path = secretPath(name);
          const target = options.apiTarget(flags);
          if (options.stdinIsTerminal) {
            printError(
              `Type the value of ${name} (it shows as you type; pipe it in to avoid that), then Enter and Ctrl-D:`,
            );
          }
          const value = valueFromInput(await options.readStdin());
          const body = (await apiRequest(target, "PUT", path, { value })) as SecretBody;
          print(
            flags.json === true
              ? JSON.stringify(body)
              : `Secret ${body.name} ${body.created === true ? "created" : "updated"}.`,
          );
          return 0;
        })(),
      );
    });

  options
    .clientOptions(
      secret.command("list").description("List the secrets' names and times (never values)"),
    )
    .action((flags: ClientFlags) => {
      options.run(
        (async () => {
          const body = (await apiRequest(options.apiTarget(flags), "GET", "/api/v1/secrets")) as {
            secrets: SecretBody[];
          };
          if (flags.json === true) print(JSON.stringify(body));
          else if (body.secrets.length === 0) print("No secrets.");
          else
            for (const s of body.secrets) {
              print(`${s.name}  updated ${s.updatedAt}  key ${s.keyId}`);
            }
          return 0;
        })(),
      );
    });

  options
    .clientOptions(secret.command("delete <name>").description("Delete a secret"))
    .action((name: string, flags: ClientFlags) => {
      options.run(
        (async () => {
          await apiRequest(options.apiTarget(flags), "DELETE", secretPath(name));
          print(
            flags.json === true
              ? JSON.stringify({ name, deleted: true })
              : `Secret ${name} deleted.`,
          );
          return 0;
        })(),
      );
    });
}
