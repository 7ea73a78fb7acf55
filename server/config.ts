/**
 * The cluster's configuration, read once from the environment (and CLI flags) at start.
 * Nothing below the composition root reads `process.env`.
 * @module
 */
import { resolve } from "node:path";
import { decodeSecretsKey } from "./domain/secret-cipher.ts";

/** Everything a cluster process needs to know about itself. */
export interface ClusterConfig {
  /** The actor's identifier: the cluster is `<publicUrl>/clusters/<name>`. @defaultValue `"main"` */
  readonly name: string;
  /** Address to listen on. @defaultValue `"127.0.0.1"` */
  readonly host: string;
  /** Port to listen on; 0 picks a free one. @defaultValue 7300 */
  readonly port: number;
  /**
   * The origin other clusters reach this one at (behind a TLS proxy: `https://ci.example`).
   * @defaultValue `http://<host>:<port>` once the port is known
   */
  readonly publicUrl: string | undefined;
  /** PGlite data directory when no database URL is set. @defaultValue `.data/<name>` */
  readonly dataDir: string | undefined;
  /** PostgreSQL URL (`DATABASE_URL`); absent means the embedded engine. */
  readonly databaseUrl: string | undefined;
  /** PostgreSQL schema (`DATABASE_SCHEMA`). @defaultValue `"public"` */
  readonly databaseSchema: string | undefined;
  /** Redis URL (`REDIS_URL`); absent means the embedded queue over the database. */
  readonly redisUrl: string | undefined;
  /** Prefix of every Redis key of this cluster (`REDIS_PREFIX`). @defaultValue `"taskweb"` */
  readonly redisPrefix: string;
  /** Tasks one worker process runs at once (`WORKER_CONCURRENCY`). @defaultValue 2 */
  readonly workerConcurrency: number;
  /**
   * Token for the REST API (`TASKWEB_ADMIN_TOKEN`). With the embedded engine one is created
   * on first start and kept in the data directory; on PostgreSQL it must be set.
   */
  readonly adminToken: string | undefined;
  /**
   * Let outbound fetches (keys, actors, remote tasks, artifacts) reach loopback and private
   * addresses (`TASKWEB_ALLOW_PRIVATE_ADDRESS=1`). Needed when clusters federate on one
   * machine; never set it on a cluster reachable from the internet.
   * @defaultValue true when `publicUrl` is a loopback URL, otherwise false
   */
  readonly allowPrivateAddress: boolean;
  /** How often remote tasks still waited on are dereferenced again, in ms. @defaultValue 300000 */
  readonly reconcileIntervalMs: number;
  /** Lease of a claimed run, renewed while it runs, in ms. @defaultValue 60000 */
  readonly claimLeaseMs: number;
  /**
   * On SIGTERM, how long a worker lets running tasks go on before it stops them and hands
   * them back to be retried elsewhere (`TASKWEB_SHUTDOWN_GRACE_MS`). @defaultValue 30000
   */
  readonly shutdownGraceMs: number;
  /** Where workers create task working directories. @defaultValue the OS temp dir */
  readonly workDir: string | undefined;
  /**
   * Key that encrypts secrets at rest (`TASKWEB_SECRETS_KEY`): the base64 of 32 bytes, the
   * same on every web and worker process. With the embedded engine one is created on first
   * start and kept in the data directory; on PostgreSQL secrets are unavailable without it.
   */
  readonly secretsKey: string | undefined;
  /**
   * Port on which a process without the web role serves `GET /metrics` (`TASKWEB_METRICS_PORT`),
   * so that a `taskweb worker`'s deliveries and run durations can be scraped.
   * @defaultValue undefined: a worker process serves no HTTP
   */
  readonly metricsPort: number | undefined;
}

/** Thrown for a configuration value that cannot be used; the message says which and why. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

function integer(name: string, raw: string | undefined, fallback: number, min: number): number {
  if (raw == null || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) {
    throw new ConfigError(`${name} must be an integer ≥ ${min}, got ${JSON.stringify(raw)}.`);
  }
  return value;
}

function isLoopbackUrl(url: string | undefined, host: string): boolean {
  const hostname = url == null ? host : new URL(url).hostname;
  return (
    hostname === "localhost" ||
    hostname === "[::1]" ||
    hostname === "::1" ||
    /^127\.\d+\.\d+\.\d+$/.test(hostname)
  );
}

/** Checks a secrets key given in the environment or as an override; empty means none. */
function secretsKey(raw: string | undefined): string | undefined {
  if (raw == null || raw === "") return undefined;
  const key = decodeSecretsKey(raw);
  if (typeof key === "string") {
    throw new ConfigError(
      `TASKWEB_SECRETS_KEY must be the base64 of 32 random bytes (openssl rand -base64 32), but ${key}.`,
    );
  }
  return raw.trim();
}

/** Overrides from CLI flags; they win over the environment. */
export type ConfigOverrides = Partial<{ -readonly [K in keyof ClusterConfig]: ClusterConfig[K] }>;

/** Reads the configuration from `env`, then applies `overrides`. Throws {@link ConfigError}. */
export function readConfig(
  env: Record<string, string | undefined>,
  overrides: ConfigOverrides = {},
): ClusterConfig {
  const name = overrides.name ?? env.TASKWEB_NAME ?? "main";
  if (!/^[a-z][a-z0-9-]{0,62}$/.test(name)) {
    throw new ConfigError(
      `Cluster name ${JSON.stringify(name)} is invalid: use lowercase letters, digits and '-', starting with a letter.`,
    );
  }
  const host = overrides.host ?? env.HOST ?? "127.0.0.1";
  const port = overrides.port ?? integer("PORT", env.PORT, 7300, 0);
  const publicUrl = overrides.publicUrl ?? env.TASKWEB_PUBLIC_URL;
  if (publicUrl != null) {
    let parsed: URL;
    try {
      parsed = new URL(publicUrl);
    } catch {
      throw new ConfigError(`TASKWEB_PUBLIC_URL ${JSON.stringify(publicUrl)} is not a URL.`);
    }
    if (parsed.protocol !== "https:" && parsed.protocol !== "http:") {
      throw new ConfigError("TASKWEB_PUBLIC_URL must be an http(s) origin.");
    }
  }
  const databaseUrl = overrides.databaseUrl ?? env.DATABASE_URL;
  const dataDir =
    databaseUrl == null
      ? resolve(overrides.dataDir ?? env.TASKWEB_DATA_DIR ?? `.data/${name}`)
      : undefined;
  const allowPrivateRaw = env.TASKWEB_ALLOW_PRIVATE_ADDRESS;
  return {
    name,
    host,
    port,
    publicUrl: publicUrl?.replace(/\/+$/, ""),
    dataDir,
    databaseUrl,
    databaseSchema: overrides.databaseSchema ?? env.DATABASE_SCHEMA,
    redisUrl: overrides.redisUrl ?? env.REDIS_URL,
    redisPrefix: overrides.redisPrefix ?? env.REDIS_PREFIX ?? "taskweb",
    workerConcurrency:
      overrides.workerConcurrency ?? integer("WORKER_CONCURRENCY", env.WORKER_CONCURRENCY, 2, 1),
    adminToken: overrides.adminToken ?? env.TASKWEB_ADMIN_TOKEN,
    allowPrivateAddress:
      overrides.allowPrivateAddress ??
      (allowPrivateRaw != null ? allowPrivateRaw === "1" : isLoopbackUrl(publicUrl, host)),
    reconcileIntervalMs:
      overrides.reconcileIntervalMs ??
      integer("TASKWEB_RECONCILE_INTERVAL_MS", env.TASKWEB_RECONCILE_INTERVAL_MS, 300_000, 1000),
    claimLeaseMs:
      overrides.claimLeaseMs ??
      integer("TASKWEB_CLAIM_LEASE_MS", env.TASKWEB_CLAIM_LEASE_MS, 60_000, 1000),
    shutdownGraceMs:
      overrides.shutdownGraceMs ??
      integer("TASKWEB_SHUTDOWN_GRACE_MS", env.TASKWEB_SHUTDOWN_GRACE_MS, 30_000, 0),
    workDir: overrides.workDir ?? env.TASKWEB_WORK_DIR,
    secretsKey: secretsKey(overrides.secretsKey ?? env.TASKWEB_SECRETS_KEY),
    metricsPort:
      overrides.metricsPort ??
      (env.TASKWEB_METRICS_PORT == null || env.TASKWEB_METRICS_PORT === ""
        ? undefined
        : integer("TASKWEB_METRICS_PORT", env.TASKWEB_METRICS_PORT, 0, 0)),
  };
}
