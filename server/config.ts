/**
 * The cluster's configuration, read once from the environment (and CLI flags) at start.
 * Nothing below the composition root reads `process.env`.
 * @module
 */
import { resolve } from "node:path";
import { decodeSecretsKey } from "./domain/secret-cipher.ts";
import { AllowlistEntryError, parseAllowlist } from "./outbound/address-policy.ts";
import { DEFAULT_DELIVERY_POLICY, type DeliveryPolicy } from "./federation/delivery.ts";

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
   * Private and special-use addresses that outbound fetches (keys, actors, remote tasks,
   * artifacts) may still reach (`TASKWEB_PRIVATE_ADDRESS_ALLOWLIST`, comma-separated CIDRs,
   * addresses or `ip:port` entries). Every other private, loopback, link-local or
   * special-use address is refused; there is no switch that turns the check off. Clusters
   * federating on one machine list `127.0.0.1/32`; never list ranges a cluster reachable
   * from the internet must not reach.
   * @defaultValue `[]`
   */
  readonly privateAddressAllowlist: readonly string[];
  /**
   * Inbox requests one origin may send: a token bucket of `burst` requests refilled at
   * `perSecond` (`TASKWEB_INBOX_RATE_LIMIT=burst,perSecond`). Verified requests count against
   * the signer's origin; beyond it the inbox answers 429 with `Retry-After`.
   * @defaultValue `{ burst: 1000, perSecond: 100 }`
   */
  readonly inboxRateLimit: RateLimit;
  /**
   * Refused inbox requests (unsigned, forged, malformed) one client address may send before
   * its requests are answered 429 (`TASKWEB_INBOX_REFUSED_RATE_LIMIT=burst,perSecond`).
   * @defaultValue `{ burst: 120, perSecond: 2 }`
   */
  readonly inboxRefusedRateLimit: RateLimit;
  /** Remote requests one inbound activity may cause (`TASKWEB_INBOX_FETCH_BUDGET`). @defaultValue 10 */
  readonly inboxFetchBudget: number;
  /**
   * After its first fetch, a signing key is fetched again at most once per this many ms
   * (`TASKWEB_KEY_REFETCH_INTERVAL_MS`). @defaultValue 300000
   */
  readonly keyRefetchIntervalMs: number;
  /**
   * Days the ids of processed activities are kept to refuse replays
   * (`TASKWEB_DEDUPE_RETENTION_DAYS`); at least 30. @defaultValue 30
   */
  readonly dedupeRetentionDays: number;
  /**
   * After `taskweb keys rotate`, how long the replaced keys stay published so that
   * signatures and proofs made with them still verify (`TASKWEB_KEY_GRACE_MS`).
   * @defaultValue 604800000 (7 days)
   */
  readonly keyGraceMs: number;
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
   * How Follow requests from other clusters are answered (`TASKWEB_FOLLOWER_ACCEPTANCE`):
   * `auto` accepts every one, `approval` keeps them pending until an administrator approves,
   * `allowlist` accepts listed actors and rejects the rest. Changed at run time through
   * `PUT /api/v1/federation/policy`, which then wins. @defaultValue `"auto"`
   */
  readonly followerAcceptance: "auto" | "approval" | "allowlist";
  /**
   * Actor URLs or origins accepted as followers in `allowlist` (and `approval`) mode
   * (`TASKWEB_FOLLOWER_ALLOWLIST`, comma-separated), besides those added through the API.
   * @defaultValue none
   */
  readonly followerAllowlist: readonly string[];
  /**
   * Actor URLs or origins whose Follows are rejected and whose activities are refused
   * (`TASKWEB_BLOCKED_ACTORS`, comma-separated), besides those added through the API.
   * @defaultValue none
   */
  readonly blockedActors: readonly string[];
  /**
   * Retries of deliveries to followers and the per-inbox circuit breaker:
   * `TASKWEB_DELIVERY_HORIZON_DAYS` (give up this long after publishing, fractions allowed),
   * `TASKWEB_DELIVERY_INITIAL_DELAY_MS`, `TASKWEB_DELIVERY_MAX_DELAY_MS`,
   * `TASKWEB_DELIVERY_ATTEMPT_LEASE_MS`, `TASKWEB_CIRCUIT_FAILURES`, `TASKWEB_CIRCUIT_COOLDOWN_MS`.
   * @defaultValue {@link DEFAULT_DELIVERY_POLICY}: 3 days, 10 s doubling to 6 h, 5 failures, 5 min
   */
  readonly delivery: DeliveryPolicy;
  /**
   * Port on which a process without the web role serves `GET /metrics` (`TASKWEB_METRICS_PORT`),
   * so that a `taskweb worker`'s deliveries and run durations can be scraped.
   * @defaultValue undefined: a worker process serves no HTTP
   */
  readonly metricsPort: number | undefined;
}

/** A token bucket: `burst` requests at once, refilled at `perSecond`. */
export interface RateLimit {
  readonly burst: number;
  readonly perSecond: number;
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

function rateLimit(name: string, raw: string | undefined, fallback: RateLimit): RateLimit {
  if (raw == null || raw === "") return fallback;
  const [burst, perSecond] = raw.split(",").map((p) => Number(p.trim()));
  if (
    burst == null ||
    perSecond == null ||
    !Number.isInteger(burst) ||
    burst < 1 ||
    !(perSecond > 0) ||
    raw.split(",").length !== 2
  ) {
    throw new ConfigError(
      `${name} must be "<burst>,<perSecond>" (a positive integer and a positive number), got ${JSON.stringify(raw)}.`,
    );
  }
  return { burst, perSecond };
}

function positive(name: string, raw: string | undefined, fallback: number): number {
  if (raw == null || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) {
    throw new ConfigError(`${name} must be a number > 0, got ${JSON.stringify(raw)}.`);
  }
  return value;
}

function deliveryPolicy(env: Record<string, string | undefined>): DeliveryPolicy {
  const d = DEFAULT_DELIVERY_POLICY;
  const day = 24 * 3600_000;
  return {
    horizonMs: Math.round(
      positive(
        "TASKWEB_DELIVERY_HORIZON_DAYS",
        env.TASKWEB_DELIVERY_HORIZON_DAYS,
        d.horizonMs / day,
      ) * day,
    ),
    initialDelayMs: integer(
      "TASKWEB_DELIVERY_INITIAL_DELAY_MS",
      env.TASKWEB_DELIVERY_INITIAL_DELAY_MS,
      d.initialDelayMs,
      1,
    ),
    maxDelayMs: integer(
      "TASKWEB_DELIVERY_MAX_DELAY_MS",
      env.TASKWEB_DELIVERY_MAX_DELAY_MS,
      d.maxDelayMs,
      1,
    ),
    attemptLeaseMs: integer(
      "TASKWEB_DELIVERY_ATTEMPT_LEASE_MS",
      env.TASKWEB_DELIVERY_ATTEMPT_LEASE_MS,
      d.attemptLeaseMs,
      100,
    ),
    circuitFailures: integer(
      "TASKWEB_CIRCUIT_FAILURES",
      env.TASKWEB_CIRCUIT_FAILURES,
      d.circuitFailures,
      1,
    ),
    circuitCooldownMs: integer(
      "TASKWEB_CIRCUIT_COOLDOWN_MS",
      env.TASKWEB_CIRCUIT_COOLDOWN_MS,
      d.circuitCooldownMs,
      1,
    ),
  };
}

/** Checks allowlist entries now, so that a typo stops the start rather than a fetch. */
function allowlist(raw: readonly string[]): readonly string[] {
  try {
    parseAllowlist(raw);
  } catch (error) {
    if (error instanceof AllowlistEntryError) {
      throw new ConfigError(`TASKWEB_PRIVATE_ADDRESS_ALLOWLIST: ${error.message}`);
    }
    throw error;
  }
  return raw.map((e) => e.trim()).filter((e) => e !== "");
}

/** The shortest dedupe retention a cluster may be configured with, in days. */
export const MIN_DEDUPE_RETENTION_DAYS = 30;

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

/** A comma-separated list of actor URLs or origins. */
function actorList(name: string, raw: string | undefined): string[] {
  const items = (raw ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  for (const item of items) {
    if (!/^https?:\/\/[^\s/]+(\/\S*)?$/.test(item)) {
      throw new ConfigError(`${name}: ${JSON.stringify(item)} is not an actor URL or an origin.`);
    }
  }
  return items;
}

function acceptance(raw: string | undefined): "auto" | "approval" | "allowlist" {
  if (raw == null || raw === "") return "auto";
  if (raw === "auto" || raw === "approval" || raw === "allowlist") return raw;
  throw new ConfigError(
    `TASKWEB_FOLLOWER_ACCEPTANCE must be auto, approval or allowlist, got ${JSON.stringify(raw)}.`,
  );
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
  const dedupeRetentionDays =
    overrides.dedupeRetentionDays ??
    integer(
      "TASKWEB_DEDUPE_RETENTION_DAYS",
      env.TASKWEB_DEDUPE_RETENTION_DAYS,
      MIN_DEDUPE_RETENTION_DAYS,
      MIN_DEDUPE_RETENTION_DAYS,
    );
  if (!(dedupeRetentionDays >= MIN_DEDUPE_RETENTION_DAYS)) {
    throw new ConfigError(
      `The dedupe retention must be at least ${MIN_DEDUPE_RETENTION_DAYS} days (senders retry for days), got ${dedupeRetentionDays}.`,
    );
  }
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
    privateAddressAllowlist: allowlist(
      overrides.privateAddressAllowlist ?? (env.TASKWEB_PRIVATE_ADDRESS_ALLOWLIST ?? "").split(","),
    ),
    inboxRateLimit:
      overrides.inboxRateLimit ??
      rateLimit("TASKWEB_INBOX_RATE_LIMIT", env.TASKWEB_INBOX_RATE_LIMIT, {
        burst: 1000,
        perSecond: 100,
      }),
    inboxRefusedRateLimit:
      overrides.inboxRefusedRateLimit ??
      rateLimit("TASKWEB_INBOX_REFUSED_RATE_LIMIT", env.TASKWEB_INBOX_REFUSED_RATE_LIMIT, {
        burst: 120,
        perSecond: 2,
      }),
    inboxFetchBudget:
      overrides.inboxFetchBudget ??
      integer("TASKWEB_INBOX_FETCH_BUDGET", env.TASKWEB_INBOX_FETCH_BUDGET, 10, 1),
    keyRefetchIntervalMs:
      overrides.keyRefetchIntervalMs ??
      integer("TASKWEB_KEY_REFETCH_INTERVAL_MS", env.TASKWEB_KEY_REFETCH_INTERVAL_MS, 300_000, 0),
    dedupeRetentionDays,
    keyGraceMs:
      overrides.keyGraceMs ??
      integer("TASKWEB_KEY_GRACE_MS", env.TASKWEB_KEY_GRACE_MS, 7 * 86_400_000, 0),
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
    delivery: overrides.delivery ?? deliveryPolicy(env),
    followerAcceptance: overrides.followerAcceptance ?? acceptance(env.TASKWEB_FOLLOWER_ACCEPTANCE),
    followerAllowlist:
      overrides.followerAllowlist ??
      actorList("TASKWEB_FOLLOWER_ALLOWLIST", env.TASKWEB_FOLLOWER_ALLOWLIST),
    blockedActors:
      overrides.blockedActors ?? actorList("TASKWEB_BLOCKED_ACTORS", env.TASKWEB_BLOCKED_ACTORS),
    metricsPort:
      overrides.metricsPort ??
      (env.TASKWEB_METRICS_PORT == null || env.TASKWEB_METRICS_PORT === ""
        ? undefined
        : integer("TASKWEB_METRICS_PORT", env.TASKWEB_METRICS_PORT, 0, 0)),
  };
}
