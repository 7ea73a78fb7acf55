/**
 * `taskweb artifact get <artifact-url>`: reads the artifact's published metadata from its
 * cluster, then downloads the content with the worker's downloader (retries, resumption,
 * checked redirects) and keeps it only when its size and sha256 match what was published.
 * With `--sign`, both requests carry this cluster's HTTP signature (its active RSA key, read
 * from its database as `taskweb migrate` finds it), as a worker's downloads do, so that an
 * upstream that accepted this cluster as a follower, or granted it the read scope, serves a
 * private artifact.
 * @module
 */
import { join } from "node:path";
import { isIP } from "node:net";
import { readConfig } from "../config.ts";
import { createClusterUrls } from "../federation/cluster-urls.ts";
import { loadOrCreateKeyPairs } from "../federation/key-store.ts";
import { signerFor } from "../outbound/document-loader.ts";
import { openDatabase } from "../store/database.ts";
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

/** Signs a request as this cluster. */
type Signer = (request: Request) => Promise<Request>;

/**
 * Builds the signer of this cluster from its database, configured as for `taskweb start`
 * (`DATABASE_URL`/`DATABASE_SCHEMA`, or the embedded database in `--data`, and the actor's
 * origin from `TASKWEB_PUBLIC_URL`, `HOST` and `PORT`). The embedded database is opened by
 * one process at a time: run this while that cluster is stopped, or on PostgreSQL.
 */
async function clusterSigner(flags: { data?: string; name?: string }): Promise<Signer> {
  const config = readConfig(process.env, {
    ...(flags.data != null ? { dataDir: flags.data } : {}),
    ...(flags.name != null ? { name: flags.name } : {}),
  });
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;
  const origin = config.publicUrl ?? `http://${host}:${config.port}`;
  const database = await openDatabase({
    url: config.databaseUrl,
    dataDir: config.databaseUrl == null ? join(config.dataDir ?? ".data", "pglite") : undefined,
    schema: config.databaseSchema,
  });
  try {
    // The keys the cluster signs with (created now if it never used them, as it would).
    const pairs = await loadOrCreateKeyPairs(database.db, config.name).catch((error: unknown) => {
      throw new Error(
        `could not read the keys of cluster ${JSON.stringify(config.name)} from its database (${String(error)}); run taskweb migrate or start it once.`,
        { cause: error },
      );
    });
    const rsa = pairs.find((p) => p.privateKey.algorithm.name === "RSASSA-PKCS1-v1_5");
    if (rsa == null) throw new Error(`cluster ${JSON.stringify(config.name)} has no RSA key.`);
    const keyId = new URL(`${createClusterUrls(origin, config.name).actor}#${rsa.fragment}`);
    return signerFor({ keyId, privateKey: rsa.privateKey }, "rfc9421");
  } finally {
    await database.close();
  }
}

/** Fetches and checks an artifact document. */
async function fetchArtifact(url: string, sign?: Signer): Promise<ArtifactObject> {
  let response: Response;
  try {
    const request = new Request(url, { headers: { accept: ACTIVITY_JSON } });
    response = await fetch(sign != null ? await sign(request) : request, {
      signal: AbortSignal.timeout(30_000),
    });
  } catch (error) {
    throw new Error(`could not reach ${url}: ${String(error)}`, { cause: error });
  }
  if (response.status === 401 || response.status === 403) {
    throw new Error(
      `${url} answered HTTP ${response.status}: the artifact is private${
        sign == null
          ? "; sign the request as your cluster with --sign"
          : "; its cluster has not accepted yours as a follower nor granted it the read scope"
      }.`,
    );
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
    .option(
      "--sign",
      "sign the requests with your cluster's key, for a private artifact (reads the key from the cluster's database: DATABASE_URL, or --data)",
    )
    .option("-d, --data <dir>", "with --sign: data directory of the embedded database")
    .option("-n, --name <name>", "with --sign: the cluster's name (env TASKWEB_NAME)")
    .option("--json", "print the result as JSON")
    .action(
      (
        url: string,
        flags: {
          output?: string;
          attempts: string;
          json?: boolean;
          sign?: boolean;
          data?: string;
          name?: string;
        },
      ) => {
        options.run(
          (async () => {
            const attempts = Number(flags.attempts);
            if (!Number.isInteger(attempts) || attempts < 1 || attempts > 100) {
              throw new CommanderError(2, "bad-attempts", "--attempts must be from 1 to 100.");
            }
            const sign = flags.sign === true ? await clusterSigner(flags) : undefined;
            const meta = await fetchArtifact(url, sign);
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
              ...(sign != null ? { sign } : {}),
            });
            if (meta.size === 0) show({ received: 0, total: 0, attempt: 1 });
            print(
              flags.json === true
                ? JSON.stringify({
                    path: dest,
                    size: meta.size,
                    sha256: meta.sha256,
                    url: meta.url,
                  })
                : `${dest}  ${meta.size} bytes  sha256:${meta.sha256} (verified)`,
            );
            return 0;
          })(),
        );
      },
    );
}
