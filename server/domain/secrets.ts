/**
 * Secrets: named values kept encrypted in the database, set and listed through the API
 * (never read back), and handed to the runs of tasks that name them in `payload.secrets`
 * as environment variables. Values never reach task definitions, queue jobs, activities or
 * public documents; the worker redacts them from logs (server/worker/redactor.ts).
 * @module
 */
import type { Kysely } from "kysely";
import type { DatabaseSchema } from "../store/schema.ts";
import { ApiError } from "./errors.ts";
import { SecretDecryptionError, type SecretCipher } from "./secret-cipher.ts";

/** Bounds of secret names and values. */
export const SECRET_LIMITS = {
  maxNameLength: 128,
  /**
   * Shorter values are refused: every occurrence of a value in a run's log is replaced by
   * `[secret]`, and a value of a few characters would turn up in ordinary output everywhere.
   */
  minValueLength: 4,
  /** Bytes of a value, UTF-8 encoded. */
  maxValueBytes: 64 * 1024,
  /** Secrets one task may name. */
  maxPerTask: 100,
} as const;

/** How a secret name is described in errors. */
export const SECRET_NAME_RULE =
  "1–128 characters of A–Z, a–z, 0–9, '_', '.', '/' or '-', in '/'-separated segments none of which is empty, '.' or '..' (such as npm/publish-token)";

/** What the secrets API and runs say when this process has no key. */
export const SECRETS_KEY_MISSING =
  "Secrets are unavailable: this cluster process has no secrets key. Set TASKWEB_SECRETS_KEY to the base64 of 32 random bytes (openssl rand -base64 32), the same on every web and worker process of the cluster.";

/** Whether `name` is a valid secret name. */
export function isSecretName(name: unknown): boolean {
  return (
    typeof name === "string" &&
    /^[A-Za-z0-9_./-]{1,128}$/.test(name) &&
    name.split("/").every((s) => s !== "" && s !== "." && s !== "..")
  );
}

/** What is wrong with a value submitted for a secret, or undefined when it may be stored. */
export function secretValueProblem(value: unknown): string | undefined {
  if (typeof value !== "string") {
    return 'Send {"value": "<the secret>"}: the value must be a string.';
  }
  if ([...value].length < SECRET_LIMITS.minValueLength) {
    return `The value must have at least ${SECRET_LIMITS.minValueLength} characters: every occurrence of a secret in a log is replaced by [secret], and a shorter one would mangle ordinary output.`;
  }
  if (Buffer.byteLength(value, "utf8") > SECRET_LIMITS.maxValueBytes) {
    return `The value must be at most ${SECRET_LIMITS.maxValueBytes} bytes (UTF-8); keep larger material in an artifact or a file the secret unlocks.`;
  }
  if (value.includes("\0")) {
    return "The value must not contain NUL characters: environment variables cannot hold them.";
  }
  return undefined;
}

/** A secret as the API lists it: never its value. */
export interface SecretSummary {
  readonly name: string;
  /** Fingerprint of the key that sealed the value. */
  readonly keyId: string;
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** What a run gets from {@link SecretStore.resolveForRun}. */
export type RunSecrets =
  | {
      readonly ok: true;
      /** Environment variables to add to the run's environment. */
      readonly env: Readonly<Record<string, string>>;
      /** The values, to be redacted from the run's log. */
      readonly values: readonly string[];
    }
  | {
      readonly ok: false;
      /** The run's `reasonResolved`. */
      readonly reason: "missing-secret" | "secrets-unavailable";
      /** A line for the run's log, naming secrets, never showing a value. */
      readonly log: string;
    };

/** Options for {@link createSecretStore}. */
export interface SecretStoreOptions {
  readonly db: Kysely<DatabaseSchema>;
  /** Undefined when the process has no secrets key: every operation then fails, saying so. */
  readonly cipher: SecretCipher | undefined;
}

/** The cluster's secrets. */
export type SecretStore = ReturnType<typeof createSecretStore>;

function iso(value: Date | string): string {
  return new Date(value).toISOString();
}

/** Creates the secret store. */
export function createSecretStore(options: SecretStoreOptions) {
  const { db, cipher } = options;

  function requireCipher(): SecretCipher {
    if (cipher == null) throw new ApiError("ServiceUnavailable", SECRETS_KEY_MISSING);
    return cipher;
  }

  function requireName(name: string): void {
    if (!isSecretName(name)) {
      throw new ApiError(
        "InputError",
        `${JSON.stringify(name.slice(0, 200))} is not a secret name: use ${SECRET_NAME_RULE}.`,
      );
    }
  }

  return {
    /** Fingerprint of this process's key, or undefined without one. */
    keyId: cipher?.keyId,

    /**
     * Stores `value` under `name`, encrypted, replacing any earlier value.
     * @throws {ApiError} `InputError` for a bad name or value (nothing is written);
     *   `ServiceUnavailable` without a key.
     */
    async set(name: string, value: unknown): Promise<SecretSummary & { created: boolean }> {
      requireName(name);
      const problem = secretValueProblem(value);
      if (problem != null) throw new ApiError("InputError", problem);
      const sealed = requireCipher().seal(name, value as string);
      const row = {
        key_id: sealed.keyId,
        iv: sealed.iv,
        ciphertext: sealed.ciphertext,
        auth_tag: sealed.authTag,
      };
      const now = new Date();
      return await db.transaction().execute(async (trx) => {
        const existing = await trx
          .selectFrom("secrets")
          .select("created_at")
          .where("name", "=", name)
          .forUpdate()
          .executeTakeFirst();
        // A concurrent first PUT of the same name may insert between the select and the
        // insert: the insert then updates, and the last value wins.
        const saved =
          existing == null
            ? await trx
                .insertInto("secrets")
                .values({ name, ...row, updated_at: now })
                .onConflict((oc) => oc.column("name").doUpdateSet({ ...row, updated_at: now }))
                .returning(["created_at", "updated_at"])
                .executeTakeFirstOrThrow()
            : await trx
                .updateTable("secrets")
                .set({ ...row, updated_at: now })
                .where("name", "=", name)
                .returning(["created_at", "updated_at"])
                .executeTakeFirstOrThrow();
        return {
          name,
          keyId: sealed.keyId,
          createdAt: iso(saved.created_at),
          updatedAt: iso(saved.updated_at),
          created: existing == null,
        };
      });
    },

    /** Every secret's name, key id and times, by name. @throws {ApiError} without a key. */
    async list(): Promise<SecretSummary[]> {
      requireCipher();
      const rows = await db
        .selectFrom("secrets")
        .select(["name", "key_id", "created_at", "updated_at"])
        .orderBy("name")
        .execute();
      return rows.map((r) => ({
        name: r.name,
        keyId: r.key_id,
        createdAt: iso(r.created_at),
        updatedAt: iso(r.updated_at),
      }));
    },

    /**
     * Deletes a secret; runs that name it afterwards resolve `missing-secret`.
     * @returns false when there was no such secret. @throws {ApiError} without a key.
     */
    async remove(name: string): Promise<boolean> {
      requireName(name);
      requireCipher();
      const result = await db.deleteFrom("secrets").where("name", "=", name).executeTakeFirst();
      return Number(result.numDeletedRows) > 0;
    },

    /**
     * Decrypts the secrets a run needs, by the environment variable each one fills. A
     * missing secret comes first in what is reported: it needs no key to see.
     */
    async resolveForRun(mapping: Readonly<Record<string, string>>): Promise<RunSecrets> {
      const wanted = Object.entries(mapping);
      if (wanted.length === 0) return { ok: true, env: {}, values: [] };
      const names = [...new Set(wanted.map(([, name]) => name))];
      const rows = await db.selectFrom("secrets").selectAll().where("name", "in", names).execute();
      const byName = new Map(rows.map((r) => [r.name, r]));
      const missing = wanted.filter(([, name]) => !byName.has(name));
      if (missing.length > 0) {
        const list = missing.map(([env, name]) => `${JSON.stringify(name)} (for ${env})`);
        return {
          ok: false,
          reason: "missing-secret",
          log: `[taskweb] the task needs secret${missing.length === 1 ? "" : "s"} ${list.join(", ")} that this cluster does not have; set ${missing.length === 1 ? "it" : "them"} with \`taskweb secret set NAME\` and rerun the task.\n`,
        };
      }
      if (cipher == null) {
        return {
          ok: false,
          reason: "secrets-unavailable",
          log: `[taskweb] ${SECRETS_KEY_MISSING}\n`,
        };
      }
      const env: Record<string, string> = {};
      for (const [variable, name] of wanted) {
        const row = byName.get(name);
        if (row == null) continue;
        try {
          env[variable] = cipher.open(name, {
            keyId: row.key_id,
            iv: row.iv,
            ciphertext: row.ciphertext,
            authTag: row.auth_tag,
          });
        } catch (error) {
          if (!(error instanceof SecretDecryptionError)) throw error;
          return {
            ok: false,
            reason: "secrets-unavailable",
            log: `[taskweb] could not decrypt the task's secrets: ${error.message}. Give every process of the cluster the TASKWEB_SECRETS_KEY the secrets were stored with, or set them again.\n`,
          };
        }
      }
      return { ok: true, env, values: [...new Set(Object.values(env))] };
    },

    /** How many secrets were sealed by keys other than this process's, by key id. */
    async foreignKeys(): Promise<{ keyId: string; count: number }[]> {
      let query = db
        .selectFrom("secrets")
        .select((eb) => ["key_id", eb.fn.countAll<string | number>().as("n")])
        .groupBy("key_id");
      if (cipher != null) query = query.where("key_id", "!=", cipher.keyId);
      const rows = await query.execute();
      return rows.map((r) => ({ keyId: r.key_id, count: Number(r.n) }));
    },
  };
}
