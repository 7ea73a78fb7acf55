/**
 * `taskweb artifact get <artifact-url>`: reads the artifact's published metadata from its
 * cluster, then downloads the content with the worker's downloader (retries, resumption,
 * checked redirects) and keeps it only when its size and sha256 match what was published.
 * @module
 */
import { isIP } from "node:net";
import { parseAllowlist, unbracket } from "../outbound/address-policy.ts";
import { createOutboundFetch } from "../outbound/checked-fetch.ts";
import { basename, resolve } from "node:path";
import { CommanderError, Option, type Command } from "commander";
import { parseArtifactObject, type ArtifactObject } from "../../protocol/index.ts";
import { downloadVerified, type DownloadProgress } from "../worker/download.ts";

/** What the artifact commands borrow from the `taskweb` program. */
export interface ArtifactCommandsOptions {
  /** Receives the command's exit code, once it is known. */
  run(exitCode: Promise<number>): void;
  /** Prints a line of output. @defaultValue console.log */
  print?: (line: string) => void;
  /** Shows progress; `line` replaces the previous one on a terminal. @defaultValue stderr */
  progress?: (line: string, final: boolean) => void;
}

const ACTIVITY_JSON =
  'application/activity+json, application/ld+json; profile="https://www.w3.org/ns/activitystreams"';

/** Fetches and checks an artifact document. */
async function fetchArtifact(url: string): Promise<ArtifactObject> {
  let response: Response;
  try {
    response = await fetch(url, {
      headers: { accept: ACTIVITY_JSON },
      signal: AbortSignal.timeout(30_000),
    });
  } catch (error) {
    throw new Error(`could not reach ${url}: ${String(error)}`, { cause: error });
  }
  if (!response.ok) {
    throw new Error(`${url} answered HTTP ${response.status}; is it an artifact's id?`);
  }
  let json: unknown;
  try {
    json = await response.json();
  } catch {
    throw new Error(`${url} did not answer with JSON; is it an artifact's id?`);
  }
  const parsed = parseArtifactObject(json, { fetchedFrom: response.url || url });
  if (!parsed.ok) {
    throw new Error(
      `${url} is not a valid artifact document (${parsed.reason.code}: ${parsed.reason.message}).`,
    );
  }
  return parsed.value;
}

function megabytes(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function defaultProgress(): (line: string, final: boolean) => void {
  if (process.stderr.isTTY) {
    return (line, final) => process.stderr.write(`\r\x1b[2K${line}${final ? "\n" : ""}`);
  }
  // Not a terminal: a line at each quarter, so that logs show it moving without flooding.
  let shown = -1;
  return (line, final) => {
    const quarter = Number(/(\d+)%/.exec(line)?.[1] ?? 0) / 25;
    if (final || Math.floor(quarter) > shown) {
      shown = Math.floor(quarter);
      process.stderr.write(`${line}\n`);
    }
  };
}

/**
 * The addresses `artifact get` may reach besides public ones: the entries of
 * `TASKWEB_PRIVATE_ADDRESS_ALLOWLIST`, and the address the user typed when it is loopback
 * (they asked for it). A redirect elsewhere inward is still refused.
 */
function cliAllowlist(url: string): string[] {
  const entries = (process.env.TASKWEB_PRIVATE_ADDRESS_ALLOWLIST ?? "")
    .split(",")
    .filter((e) => e.trim() !== "");
  const host = unbracket(new URL(url).hostname);
  if (host === "localhost") entries.push("127.0.0.1/32", "::1/128");
  else if (isIP(host) !== 0 && /^(127\.|::1$)/.test(host)) entries.push(host);
  return entries;
}

/** Registers `artifact get` on `program`. */
export function registerArtifactCommands(program: Command, options: ArtifactCommandsOptions): void {
  const print = options.print ?? ((line: string) => console.log(line));
  const artifact = program.command("artifact").description("Download artifacts");
  artifact
    .command("get <artifact-url>")
    .description(
      "Download an artifact by its id, resuming and retrying as needed; keep it only if its size and sha256 match what its cluster published",
    )
    .option("-o, --output <file>", "where to save it (default: its name's last part, here)")
    .addOption(new Option("--attempts <n>", "tries before giving up").default("5"))
    .option("--json", "print the result as JSON")
    .action((url: string, flags: { output?: string; attempts: string; json?: boolean }) => {
      options.run(
        (async () => {
          const attempts = Number(flags.attempts);
          if (!Number.isInteger(attempts) || attempts < 1 || attempts > 100) {
            throw new CommanderError(2, "bad-attempts", "--attempts must be from 1 to 100.");
          }
          const meta = await fetchArtifact(url);
          const dest = resolve(flags.output ?? basename(meta.name));
          const progress = options.progress ?? defaultProgress();
          const show = (p: DownloadProgress) => {
            const percent = meta.size === 0 ? 100 : Math.floor((p.received / meta.size) * 100);
            const retry = p.attempt > 1 ? ` (attempt ${p.attempt})` : "";
            progress(
              `${meta.name}: ${percent}% of ${megabytes(meta.size)}${retry}`,
              p.received === meta.size,
            );
          };
          await downloadVerified(meta.url, dest, {
            expected: { sha256: meta.sha256, size: meta.size },
            attempts,
            fetch: createOutboundFetch({ allowlist: parseAllowlist(cliAllowlist(url)) }),
            onProgress: show,
          });
          if (meta.size === 0) show({ received: 0, total: 0, attempt: 1 });
          print(
            flags.json === true
              ? JSON.stringify({ path: dest, size: meta.size, sha256: meta.sha256, url: meta.url })
              : `${dest}  ${meta.size} bytes  sha256:${meta.sha256} (verified)`,
          );
          return 0;
        })(),
      );
    });
}
