/**
 * `taskweb client create|list|show|rotate|disable|enable|delete`,
 * `taskweb role create|list|delete` and `taskweb grant|revoke`: access control from the
 * command line, through the REST API. A new or rotated token is printed once, on standard
 * output, and never again.
 * @module
 */
import { CommanderError, type Command } from "commander";
import { apiRequest, type ApiTarget } from "./api-client.ts";
import type { ClientFlags } from "./graph.ts";

/** What the access-control commands borrow from the `taskweb` program. */
export interface AccessCommandsOptions {
  /** Adds `--url`, `--token` and `--json` to a command. */
  clientOptions(cmd: Command): Command;
  /** The API to call, from the flags or TASKWEB_URL / TASKWEB_TOKEN. */
  apiTarget(flags: ClientFlags): ApiTarget;
  /** Receives the command's exit code, once it is known. */
  run(exitCode: Promise<number>): void;
  /** Prints a line of output. @defaultValue console.log */
  print?: (line: string) => void;
  /** Prints a line about the command's progress. @defaultValue console.error */
  printError?: (line: string) => void;
}

interface ClientBody {
  readonly clientId: string;
  readonly description: string;
  readonly scopes: readonly string[];
  readonly expires: string | null;
  readonly disabled: boolean;
  readonly created: string;
  readonly lastUsed: string | null;
  readonly token?: string;
}

interface RoleBody {
  readonly roleId: string;
  readonly description: string;
  readonly scopes: readonly string[];
  readonly created?: boolean;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function segment(id: string): string {
  return encodeURIComponent(id);
}

/** A role id in a path: its `/`-separated parts each encoded. */
function rolePath(roleId: string): string {
  return `/api/v1/roles/${roleId.split("/").map(encodeURIComponent).join("/")}`;
}

function describeClient(c: ClientBody): string {
  const state = c.disabled
    ? "disabled"
    : c.expires != null && new Date(c.expires) <= new Date()
      ? "expired"
      : "active";
  const expires = c.expires != null ? `  expires ${c.expires}` : "";
  const used = c.lastUsed != null ? `  last used ${c.lastUsed}` : "  never used";
  return `${c.clientId}  ${state}${expires}${used}\n  scopes: ${c.scopes.length === 0 ? "(none)" : c.scopes.join(" ")}`;
}

/** Registers `client …`, `role …`, `grant` and `revoke` on `program`. */
export function registerAccessCommands(program: Command, options: AccessCommandsOptions): void {
  const print = options.print ?? ((line: string) => console.log(line));
  const printError = options.printError ?? ((line: string) => console.error(line));
  const act = (work: () => Promise<void>) => {
    options.run(
      (async () => {
        await work();
        return 0;
      })(),
    );
  };

  const client = program
    .command("client")
    .description("Manage API clients: tokens with scopes (see README, Access control)");

  options
    .clientOptions(
      client
        .command("create <client-id>")
        .description("Create a client; its token is printed once")
        .option("--scope <scope>", "a scope to grant (repeat for more)", collect, [])
        .option("--description <text>", "what the client is for")
        .option("--expires <date>", "when the token stops working (ISO 8601)"),
    )
    .action(
      (
        clientId: string,
        flags: ClientFlags & { scope: string[]; description?: string; expires?: string },
      ) => {
        act(async () => {
          const body = (await apiRequest(
            options.apiTarget(flags),
            "PUT",
            `/api/v1/clients/${segment(clientId)}`,
            {
              scopes: flags.scope,
              ...(flags.description != null ? { description: flags.description } : {}),
              ...(flags.expires != null ? { expires: flags.expires } : {}),
            },
          )) as ClientBody;
          if (flags.json === true) {
            print(JSON.stringify(body));
            return;
          }
          printError(
            `Client ${body.clientId} created. Its token follows; it is shown only now, so keep it.`,
          );
          print(body.token ?? "");
        });
      },
    );

  options
    .clientOptions(client.command("list").description("List clients (never their tokens)"))
    .action((flags: ClientFlags) => {
      act(async () => {
        const body = (await apiRequest(options.apiTarget(flags), "GET", "/api/v1/clients")) as {
          clients: ClientBody[];
        };
        if (flags.json === true) print(JSON.stringify(body));
        else if (body.clients.length === 0)
          print("No clients (the cluster's API token is the client admin).");
        else for (const c of body.clients) print(describeClient(c));
      });
    });

  options
    .clientOptions(
      client
        .command("show <client-id>")
        .description("Show a client and its scopes with roles expanded"),
    )
    .action((clientId: string, flags: ClientFlags) => {
      act(async () => {
        const body = (await apiRequest(
          options.apiTarget(flags),
          "GET",
          `/api/v1/clients/${segment(clientId)}`,
        )) as ClientBody & { expandedScopes: string[] };
        if (flags.json === true) print(JSON.stringify(body));
        else {
          print(describeClient(body));
          print(`  with roles: ${body.expandedScopes.join(" ")}`);
        }
      });
    });

  options
    .clientOptions(
      client
        .command("rotate <client-id>")
        .description("Replace a client's token; the old one stops working at once"),
    )
    .action((clientId: string, flags: ClientFlags) => {
      act(async () => {
        const body = (await apiRequest(
          options.apiTarget(flags),
          "POST",
          `/api/v1/clients/${segment(clientId)}/rotate`,
        )) as ClientBody;
        if (flags.json === true) {
          print(JSON.stringify(body));
          return;
        }
        printError(`Client ${body.clientId} has a new token; it is shown only now.`);
        print(body.token ?? "");
      });
    });

  for (const [verb, description] of [
    ["disable", "Disable a client: its token is refused until enabled again"],
    ["enable", "Enable a disabled client"],
  ] as const) {
    options
      .clientOptions(client.command(`${verb} <client-id>`).description(description))
      .action((clientId: string, flags: ClientFlags) => {
        act(async () => {
          const body = (await apiRequest(
            options.apiTarget(flags),
            "POST",
            `/api/v1/clients/${segment(clientId)}/${verb}`,
          )) as ClientBody;
          print(flags.json === true ? JSON.stringify(body) : `Client ${clientId} ${verb}d.`);
        });
      });
  }

  options
    .clientOptions(client.command("delete <client-id>").description("Delete a client"))
    .action((clientId: string, flags: ClientFlags) => {
      act(async () => {
        await apiRequest(
          options.apiTarget(flags),
          "DELETE",
          `/api/v1/clients/${segment(clientId)}`,
        );
        print(
          flags.json === true
            ? JSON.stringify({ clientId, deleted: true })
            : `Client ${clientId} deleted.`,
        );
      });
    });

  const role = program
    .command("role")
    .description("Manage roles: assume:<role-id> grants the role's scopes");

  options
    .clientOptions(
      role
        .command("create <role-id>")
        .description(
          "Create or replace a role; a role id ending in * is parameterized (<..> in its scopes)",
        )
        .option("--scope <scope>", "a scope of the role (repeat for more)", collect, [])
        .option("--description <text>", "what the role is for"),
    )
    .action((roleId: string, flags: ClientFlags & { scope: string[]; description?: string }) => {
      act(async () => {
        const body = (await apiRequest(options.apiTarget(flags), "PUT", rolePath(roleId), {
          scopes: flags.scope,
          ...(flags.description != null ? { description: flags.description } : {}),
        })) as RoleBody;
        print(
          flags.json === true
            ? JSON.stringify(body)
            : `Role ${body.roleId} ${body.created === true ? "created" : "updated"}: ${body.scopes.join(" ") || "(no scopes)"}.`,
        );
      });
    });

  options
    .clientOptions(role.command("list").description("List roles and their scopes"))
    .action((flags: ClientFlags) => {
      act(async () => {
        const body = (await apiRequest(options.apiTarget(flags), "GET", "/api/v1/roles")) as {
          roles: RoleBody[];
        };
        if (flags.json === true) print(JSON.stringify(body));
        else if (body.roles.length === 0) print("No roles.");
        else for (const r of body.roles) print(`${r.roleId}: ${r.scopes.join(" ") || "(none)"}`);
      });
    });

  options
    .clientOptions(role.command("delete <role-id>").description("Delete a role"))
    .action((roleId: string, flags: ClientFlags) => {
      act(async () => {
        await apiRequest(options.apiTarget(flags), "DELETE", rolePath(roleId));
        print(
          flags.json === true
            ? JSON.stringify({ roleId, deleted: true })
            : `Role ${roleId} deleted.`,
        );
      });
    });

  options
    .clientOptions(
      program
        .command("grant <principal> <scopes...>")
        .description(
          "Grant scopes to a principal, such as a remote cluster: actor:<actor URL> (taskweb grant actor:https://ci.example/clusters/main taskweb:hook:trigger:nightly)",
        ),
    )
    .action((principal: string, scopes: string[], flags: ClientFlags) => {
      act(async () => {
        const body = (await apiRequest(options.apiTarget(flags), "POST", "/api/v1/grants", {
          principal,
          scopes,
        })) as { principal: string; scopes: string[] };
        print(
          flags.json === true
            ? JSON.stringify(body)
            : `${body.principal} now holds: ${body.scopes.join(" ")}.`,
        );
      });
    });

  options
    .clientOptions(
      program
        .command("revoke <principal> [scope]")
        .description("Take back one scope granted to a principal, or all of them"),
    )
    .action((principal: string, scope: string | undefined, flags: ClientFlags) => {
      act(async () => {
        if (!principal.startsWith("actor:") && !principal.startsWith("client:")) {
          throw new CommanderError(2, "bad-principal", "Use actor:<actor URL> or client:<id>.");
        }
        const query = new URLSearchParams({ principal, ...(scope != null ? { scope } : {}) });
        const body = (await apiRequest(
          options.apiTarget(flags),
          "DELETE",
          `/api/v1/grants?${query.toString()}`,
        )) as { removed: number };
        print(
          flags.json === true
            ? JSON.stringify(body)
            : `Took back ${body.removed} scope${body.removed === 1 ? "" : "s"} from ${principal}.`,
        );
      });
    });
}
