/**
 * `taskweb hook create HOOK_ID FILE`, `taskweb hook list`, `taskweb hook show HOOK_ID` and
 * `taskweb hook delete HOOK_ID`. A hook file (JSON or YAML) holds `filter`, `template`,
 * and optionally `description`, `coalesce` and `parameters`; see README "Hooks, offers and
 * relays".
 * @module
 */
import { readFile } from "node:fs/promises";
import { CommanderError, type Command } from "commander";
import type { HookFireView, HookView } from "../domain/hooks.ts";
import { parseTaskGraphSource } from "../domain/task-graph.ts";
import { apiRequest, type ApiTarget } from "./api-client.ts";
import type { ClientFlags } from "./graph.ts";

/** What the hook commands borrow from the `taskweb` program. */
export interface HookCommandsOptions {
  /** Adds `--url`, `--token` and `--json` to a command. */
  clientOptions(cmd: Command): Command;
  /** The API to call, from the flags or TASKWEB_URL / TASKWEB_TOKEN. */
  apiTarget(flags: ClientFlags): ApiTarget;
  /** Receives the command's exit code, once it is known. */
  run(exitCode: Promise<number>): void;
  /** Prints a line of output. @defaultValue console.log */
  print?: (line: string) => void;
}

const hookPath = (hookId: string) => `/api/v1/hooks/${encodeURIComponent(hookId)}`;

function describeHook(hook: HookView): string[] {
  const f = hook.filter;
  const on = [
    f.activity,
    `from ${f.cluster}`,
    ...(f.artifactName != null ? [`artifact ${f.artifactName}`] : []),
    ...(f.taskName != null ? [`task ${f.taskName}`] : []),
    ...Object.entries(f.tags ?? {}).map(([name, value]) => `tag ${name}=${value}`),
  ].join(", ");
  const lines = [
    `${hook.hookId}  template v${hook.templateVersion}  on ${on}`,
    ...(hook.description !== "" ? [`  ${hook.description}`] : []),
  ];
  if (hook.coalesce != null) {
    lines.push(
      `  coalesces within ${hook.coalesce.windowSeconds} s${hook.coalesce.key ? ` by ${hook.coalesce.key}` : ""}`,
    );
  }
  return lines;
}

function describeFire(fire: HookFireView): string {
  const what =
    fire.state === "fired"
      ? `task group ${fire.taskGroupId ?? "?"}`
      : fire.state === "superseded"
        ? `superseded by ${fire.supersededBy ?? "?"}`
        : fire.state === "failed"
          ? `failed: ${fire.error ?? ""}`
          : `pending until ${fire.dueAt ?? "?"}`;
  return `  ${fire.fireId}  ${fire.state}  ${what}  (${fire.activityId})`;
}

/** Registers the `hook` commands on `program`. */
export function registerHookCommands(program: Command, options: HookCommandsOptions): void {
  const print = options.print ?? ((line: string) => console.log(line));
  const hook = program
    .command("hook")
    .description("Manage hooks: graph templates submitted when a followed cluster publishes");

  options
    .clientOptions(
      hook
        .command("create <hookId> <file>")
        .description(
          "Create a hook from a JSON or YAML file, or give it a new template version (the same file again changes nothing)",
        ),
    )
    .action((hookId: string, file: string, flags: ClientFlags) => {
      options.run(
        (async () => {
          const text = await readFile(file, "utf8");
          const parsed = parseTaskGraphSource(text, /\.ya?ml$/i.test(file) ? "yaml" : "json");
          if (!parsed.ok) {
            throw new CommanderError(
              2,
              "bad-hook-file",
              `${file} could not be read: ${parsed.problems.map((p) => p.message).join("; ")}`,
            );
          }
          const body = (await apiRequest(
            options.apiTarget(flags),
            "PUT",
            hookPath(hookId),
            parsed.value,
          )) as HookView & { created: boolean; changed: boolean };
          if (flags.json === true) print(JSON.stringify(body));
          else
            print(
              `Hook ${body.hookId} ${body.created ? "created" : body.changed ? "updated" : "unchanged"} (template v${body.templateVersion}).`,
            );
          return 0;
        })(),
      );
    });

  options
    .clientOptions(hook.command("list").description("List the hooks"))
    .action((flags: ClientFlags) => {
      options.run(
        (async () => {
          const body = (await apiRequest(options.apiTarget(flags), "GET", "/api/v1/hooks")) as {
            hooks: HookView[];
          };
          if (flags.json === true) print(JSON.stringify(body));
          else if (body.hooks.length === 0) print("No hooks.");
          else for (const h of body.hooks) for (const line of describeHook(h)) print(line);
          return 0;
        })(),
      );
    });

  options
    .clientOptions(
      hook.command("show <hookId>").description("Show a hook and what it fired, newest first"),
    )
    .action((hookId: string, flags: ClientFlags) => {
      options.run(
        (async () => {
          const target = options.apiTarget(flags);
          const h = (await apiRequest(target, "GET", hookPath(hookId))) as HookView;
          const { fires } = (await apiRequest(target, "GET", `${hookPath(hookId)}/fires`)) as {
            fires: HookFireView[];
          };
          if (flags.json === true) print(JSON.stringify({ ...h, fires }));
          else {
            for (const line of describeHook(h)) print(line);
            print(fires.length === 0 ? "  no fires yet" : `  ${fires.length} fires:`);
            for (const f of fires) print(describeFire(f));
          }
          return 0;
        })(),
      );
    });

  options
    .clientOptions(
      hook.command("delete <hookId>").description("Delete a hook and its fire records"),
    )
    .action((hookId: string, flags: ClientFlags) => {
      options.run(
        (async () => {
          await apiRequest(options.apiTarget(flags), "DELETE", hookPath(hookId));
          print(
            flags.json === true
              ? JSON.stringify({ hookId, deleted: true })
              : `Hook ${hookId} deleted.`,
          );
          return 0;
        })(),
      );
    });
}
