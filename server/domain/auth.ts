/**
 * Who may do what: API clients with hashed tokens, roles, grants to remote clusters and
 * deny rules, over the database; the scope logic itself is in ./scopes.ts.
 *
 * Principals are strings: `client:<clientId>` for API clients and `actor:<actor URL>` for
 * remote clusters. Every principal implicitly holds `assume:<principal>`, so a role named
 * `client:ci` or `actor:https://hw.example/clusters/*` grants scopes to it. The cluster's
 * configured API token is the root client `admin`, which holds `*` and to which deny rules
 * do not apply (so that an operator can always undo a mistake).
 * @module
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { Kysely } from "kysely";
import type { DatabaseSchema } from "../store/schema.ts";
import { ApiError } from "./errors.ts";
import {
  createRoleSet,
  expandScopes,
  isValidScope,
  missingScopes,
  scopeCovers,
  type Role,
} from "./scopes.ts";

/** The client id of the cluster's configured API token. */
export const ROOT_CLIENT_ID = "admin";

/** How client ids and role ids are described in errors. */
export const CLIENT_ID_RULE =
  "1–100 characters of A–Z, a–z, 0–9, '_', '.', '/', '@', ':' or '-', starting with a letter or digit";

const CLIENT_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_./@:-]{0,99}$/;

/** A role id: like a scope (printable ASCII), at most 500 characters. */
const ROLE_ID_PATTERN = /^[\x21-\x7e]{1,500}$/;

/** Scopes one client, role or principal may hold. */
const MAX_SCOPES = 500;

/** `last_used_at` is written at most this often per client, in ms. */
const LAST_USED_RESOLUTION_MS = 60_000;

/** An authenticated API client. */
export interface AuthenticatedClient {
  readonly clientId: string;
  /** `client:<clientId>`. */
  readonly principal: string;
  /** The scopes granted to the client directly (roles add more). */
  readonly scopes: readonly string[];
}

/** Why a bearer token was not accepted. */
export type AuthenticationFailure = "missing" | "unknown" | "expired" | "disabled";

/** The result of {@link AuthService.authenticate}. */
export type AuthenticateResult =
  | { readonly ok: true; readonly client: AuthenticatedClient }
  | { readonly ok: false; readonly reason: AuthenticationFailure };

/** A client as listed: never its token. */
export interface ClientSummary {
  readonly clientId: string;
  readonly description: string;
  readonly scopes: readonly string[];
  readonly expires: string | null;
  readonly disabled: boolean;
  readonly created: string;
  readonly rotated: string | null;
  readonly lastUsed: string | null;
}

/** A new client or a rotated one: the token is shown here once and never again. */
export interface ClientWithToken {
  readonly client: ClientSummary;
  readonly token: string;
}

/** Options for {@link AuthService.createClient}. */
export interface CreateClientOptions {
  readonly clientId: string;
  readonly scopes: readonly string[];
  readonly description?: string;
  /** When the token stops working. @defaultValue never */
  readonly expires?: Date;
}

/** A role as listed. */
export interface RoleSummary {
  readonly roleId: string;
  readonly description: string;
  readonly scopes: readonly string[];
  readonly created: string;
  readonly updated: string;
}

/** A grant or deny rule as listed. */
export interface PrincipalScope {
  readonly principal: string;
  readonly scope: string;
}

/** The access-control service; see the module documentation. */
export interface AuthService {
  /** Checks a bearer token: the configured API token, or a client's. */
  authenticate(token: string | undefined): Promise<AuthenticateResult>;
  /** Whether `principal` holds every scope of `required`. */
  satisfies(principal: string, required: readonly string[]): Promise<boolean>;
  /** The scopes of `required` that `principal` does not hold (or is denied). */
  missingScopes(principal: string, required: readonly string[]): Promise<string[]>;
  /** The scopes granted to `principal` directly (for a client, its own scopes). */
  grantedScopes(principal: string): Promise<string[]>;
  /** The scopes granted to `principal` with every role expanded, for display. */
  expandedScopes(principal: string): Promise<string[]>;

  createClient(options: CreateClientOptions): Promise<ClientWithToken>;
  /** Replaces a client's token; the old one stops working at once. */
  rotateClient(clientId: string): Promise<ClientWithToken>;
  /** Disables (or enables again) a client; a disabled client's token is refused. */
  setClientDisabled(clientId: string, disabled: boolean): Promise<ClientSummary>;
  /** Replaces a client's scopes. */
  setClientScopes(clientId: string, scopes: readonly string[]): Promise<ClientSummary>;
  deleteClient(clientId: string): Promise<boolean>;
  getClient(clientId: string): Promise<ClientSummary | undefined>;
  listClients(): Promise<ClientSummary[]>;

  /** Creates or replaces a role. @returns whether it was created */
  setRole(role: {
    roleId: string;
    scopes: readonly string[];
    description?: string;
  }): Promise<{ role: RoleSummary; created: boolean }>;
  deleteRole(roleId: string): Promise<boolean>;
  listRoles(): Promise<RoleSummary[]>;

  /** Grants scopes to a principal such as `actor:<url>`. */
  grant(principal: string, scopes: readonly string[]): Promise<void>;
  /** Takes scopes back (all of them when `scopes` is undefined). @returns how many */
  revoke(principal: string, scopes?: readonly string[]): Promise<number>;
  listGrants(principal?: string): Promise<PrincipalScope[]>;

  /** Refuses `scope` to every principal `principal` covers (`*` suffix allowed). */
  deny(principal: string, scope: string): Promise<void>;
  removeDenyRule(principal: string, scope: string): Promise<boolean>;
  listDenyRules(): Promise<PrincipalScope[]>;
}

/** Options for {@link createAuthService}. */
export interface AuthServiceOptions {
  readonly db: Kysely<DatabaseSchema>;
  /** The cluster's configured API token: the root client `admin`. */
  readonly adminToken: string;
  /** Clock, for tests. @defaultValue `() => new Date()` */
  readonly now?: () => Date;
}

function sha256(value: string): string {
  return createHash("sha256").update(value).digest("hex");
}

function tokenMatches(given: string, expected: string): boolean {
  return timingSafeEqual(
    createHash("sha256").update(given).digest(),
    createHash("sha256").update(expected).digest(),
  );
}

/** A fresh token: `tw_` and 32 random bytes, base64url. */
function newToken(): string {
  return `tw_${randomBytes(32).toString("base64url")}`;
}

function iso(value: Date | string | null): string | null {
  return value == null ? null : new Date(value).toISOString();
}

/** Validates a list of scopes from a client of the API. */
export function checkScopes(scopes: unknown, field = "scopes"): string[] {
  if (!Array.isArray(scopes) || !scopes.every(isValidScope)) {
    throw new ApiError(
      "InputError",
      `${field} must be an array of scopes (strings of 1–500 printable ASCII characters, such as "taskweb:task:create").`,
    );
  }
  if (scopes.length > MAX_SCOPES) {
    throw new ApiError("InputError", `At most ${MAX_SCOPES} scopes; use a role to group them.`);
  }
  return [...new Set(scopes)];
}

/** Validates a principal: `client:<id>` or `actor:<http(s) URL>`, or a pattern of those. */
export function checkPrincipal(principal: unknown, pattern = false): string {
  const ok =
    typeof principal === "string" &&
    principal.length <= 1000 &&
    ((pattern && principal.endsWith("*")) ||
      (principal.startsWith("client:") && CLIENT_ID_PATTERN.test(principal.slice(7))) ||
      (principal.startsWith("actor:") && /^https?:\/\/[\x21-\x7e]+$/.test(principal.slice(6))));
  if (!ok) {
    throw new ApiError(
      "InputError",
      `${JSON.stringify(principal)} is not a principal: use client:<clientId> or actor:<actor URL>${pattern ? ", or a prefix ending in *" : ""}.`,
    );
  }
  return principal;
}

function checkClientId(clientId: unknown): string {
  if (typeof clientId !== "string" || !CLIENT_ID_PATTERN.test(clientId)) {
    throw new ApiError("InputError", `The client id must be ${CLIENT_ID_RULE}.`);
  }
  return clientId;
}

/** Creates the {@link AuthService}. */
export function createAuthService(options: AuthServiceOptions): AuthService {
  const { db, adminToken } = options;
  const now = options.now ?? (() => new Date());

  type ClientRow = {
    client_id: string;
    description: string;
    scopes: string[];
    expires_at: Date | string | null;
    disabled: boolean;
    created_at: Date | string;
    rotated_at: Date | string | null;
    last_used_at: Date | string | null;
  };
  const clientColumns = [
    "client_id",
    "description",
    "scopes",
    "expires_at",
    "disabled",
    "created_at",
    "rotated_at",
    "last_used_at",
  ] as const;
  const summary = (row: ClientRow): ClientSummary => ({
    clientId: row.client_id,
    description: row.description,
    scopes: row.scopes,
    expires: iso(row.expires_at),
    disabled: row.disabled,
    created: iso(row.created_at) ?? "",
    rotated: iso(row.rotated_at),
    lastUsed: iso(row.last_used_at),
  });
  const usable = (row: { disabled: boolean; expires_at: Date | string | null }): boolean =>
    !row.disabled && (row.expires_at == null || new Date(row.expires_at) > now());

  const getClientRow = (clientId: string) =>
    db
      .selectFrom("auth_clients")
      .select(clientColumns)
      .where("client_id", "=", clientId)
      .executeTakeFirst();

  const getClientOrThrow = async (clientId: string): Promise<ClientRow> => {
    const row = await getClientRow(clientId);
    if (row == null) {
      throw new ApiError(
        "ResourceNotFound",
        `No client ${JSON.stringify(clientId)}; see GET /api/v1/clients.`,
      );
    }
    return row;
  };

  /** Scopes the principal holds before roles, or undefined for the root client. */
  const directScopes = async (principal: string): Promise<string[] | undefined> => {
    if (principal === `client:${ROOT_CLIENT_ID}`) return undefined;
    if (principal.startsWith("client:")) {
      const row = await getClientRow(principal.slice(7));
      if (row == null || !usable(row)) return [];
      return [...row.scopes, `assume:${principal}`];
    }
    if (principal.startsWith("actor:")) {
      const rows = await db
        .selectFrom("auth_grants")
        .select("scope")
        .where("principal", "=", principal)
        .execute();
      return [...rows.map((r) => r.scope), `assume:${principal}`];
    }
    return [];
  };

  const roleSet = async () => {
    const rows = await db.selectFrom("auth_roles").select(["role_id", "scopes"]).execute();
    return createRoleSet(rows.map((r): Role => ({ roleId: r.role_id, scopes: r.scopes })));
  };

  const denyFor = async (principal: string): Promise<string[]> => {
    const rows = await db.selectFrom("auth_deny_rules").select(["principal", "scope"]).execute();
    return rows.filter((r) => scopeCovers(r.principal, principal)).map((r) => r.scope);
  };

  const missing = async (principal: string, required: readonly string[]): Promise<string[]> => {
    if (required.length === 0) return [];
    const granted = await directScopes(principal);
    if (granted == null) return [];
    const [roles, deny] = await Promise.all([roleSet(), denyFor(principal)]);
    return missingScopes(granted, required, { roles, deny });
  };

  const roleSummary = (row: {
    role_id: string;
    description: string;
    scopes: string[];
    created_at: Date | string;
    updated_at: Date | string;
  }): RoleSummary => ({
    roleId: row.role_id,
    description: row.description,
    scopes: row.scopes,
    created: iso(row.created_at) ?? "",
    updated: iso(row.updated_at) ?? "",
  });

  return {
    async authenticate(token) {
      if (token == null || token === "") return { ok: false, reason: "missing" };
      if (tokenMatches(token, adminToken)) {
        return {
          ok: true,
          client: {
            clientId: ROOT_CLIENT_ID,
            principal: `client:${ROOT_CLIENT_ID}`,
            scopes: ["*"],
          },
        };
      }
      const row = await db
        .selectFrom("auth_clients")
        .select(["client_id", "scopes", "disabled", "expires_at", "last_used_at"])
        .where("token_hash", "=", sha256(token))
        .executeTakeFirst();
      if (row == null) return { ok: false, reason: "unknown" };
      if (row.disabled) return { ok: false, reason: "disabled" };
      if (row.expires_at != null && new Date(row.expires_at) <= now()) {
        return { ok: false, reason: "expired" };
      }
      const at = now();
      if (
        row.last_used_at == null ||
        at.getTime() - new Date(row.last_used_at).getTime() > LAST_USED_RESOLUTION_MS
      ) {
        await db
          .updateTable("auth_clients")
          .set({ last_used_at: at })
          .where("client_id", "=", row.client_id)
          .execute();
      }
      return {
        ok: true,
        client: {
          clientId: row.client_id,
          principal: `client:${row.client_id}`,
          scopes: row.scopes,
        },
      };
    },

    async satisfies(principal, required) {
      return (await missing(principal, required)).length === 0;
    },
    missingScopes: missing,

    async grantedScopes(principal) {
      return (await directScopes(principal))?.filter((s) => s !== `assume:${principal}`) ?? ["*"];
    },

    async expandedScopes(principal) {
      const granted = await directScopes(principal);
      if (granted == null) return ["*"];
      return expandScopes(granted, await roleSet());
    },

    async createClient(input) {
      const clientId = checkClientId(input.clientId);
      if (clientId === ROOT_CLIENT_ID) {
        throw new ApiError(
          "RequestConflict",
          `The client id ${ROOT_CLIENT_ID} is the cluster's own API token.`,
        );
      }
      const scopes = checkScopes(input.scopes);
      if (input.expires != null && Number.isNaN(input.expires.getTime())) {
        throw new ApiError("InputError", "expires must be an ISO 8601 date and time.");
      }
      const token = newToken();
      const inserted = await db
        .insertInto("auth_clients")
        .values({
          client_id: clientId,
          description: input.description ?? "",
          token_hash: sha256(token),
          scopes: JSON.stringify(scopes),
          expires_at: input.expires ?? null,
          rotated_at: null,
          last_used_at: null,
        })
        .onConflict((oc) => oc.column("client_id").doNothing())
        .returning(clientColumns)
        .executeTakeFirst();
      if (inserted == null) {
        throw new ApiError(
          "RequestConflict",
          `A client ${JSON.stringify(clientId)} exists; rotate its token or delete it first.`,
        );
      }
      return { client: summary(inserted), token };
    },

    async rotateClient(clientId) {
      await getClientOrThrow(clientId);
      const token = newToken();
      const row = await db
        .updateTable("auth_clients")
        .set({ token_hash: sha256(token), rotated_at: now() })
        .where("client_id", "=", clientId)
        .returning(clientColumns)
        .executeTakeFirstOrThrow();
      return { client: summary(row), token };
    },

    async setClientDisabled(clientId, disabled) {
      await getClientOrThrow(clientId);
      const row = await db
        .updateTable("auth_clients")
        .set({ disabled })
        .where("client_id", "=", clientId)
        .returning(clientColumns)
        .executeTakeFirstOrThrow();
      return summary(row);
    },

    async setClientScopes(clientId, scopes) {
      const checked = checkScopes(scopes);
      await getClientOrThrow(clientId);
      const row = await db
        .updateTable("auth_clients")
        .set({ scopes: JSON.stringify(checked) })
        .where("client_id", "=", clientId)
        .returning(clientColumns)
        .executeTakeFirstOrThrow();
      return summary(row);
    },

    async deleteClient(clientId) {
      const result = await db
        .deleteFrom("auth_clients")
        .where("client_id", "=", clientId)
        .executeTakeFirst();
      return Number(result.numDeletedRows) > 0;
    },

    async getClient(clientId) {
      const row = await getClientRow(clientId);
      return row == null ? undefined : summary(row);
    },

    async listClients() {
      const rows = await db
        .selectFrom("auth_clients")
        .select(clientColumns)
        .orderBy("client_id")
        .execute();
      return rows.map(summary);
    },

    async setRole(input) {
      if (typeof input.roleId !== "string" || !ROLE_ID_PATTERN.test(input.roleId)) {
        throw new ApiError(
          "InputError",
          "The role id must be 1–500 printable ASCII characters without spaces.",
        );
      }
      const scopes = checkScopes(input.scopes);
      const existing = await db
        .selectFrom("auth_roles")
        .select("role_id")
        .where("role_id", "=", input.roleId)
        .executeTakeFirst();
      const row = await db
        .insertInto("auth_roles")
        .values({
          role_id: input.roleId,
          description: input.description ?? "",
          scopes: JSON.stringify(scopes),
          updated_at: now(),
        })
        .onConflict((oc) =>
          oc.column("role_id").doUpdateSet({
            scopes: JSON.stringify(scopes),
            description: input.description ?? "",
            updated_at: now(),
          }),
        )
        .returning(["role_id", "description", "scopes", "created_at", "updated_at"])
        .executeTakeFirstOrThrow();
      return { role: roleSummary(row), created: existing == null };
    },

    async deleteRole(roleId) {
      const result = await db
        .deleteFrom("auth_roles")
        .where("role_id", "=", roleId)
        .executeTakeFirst();
      return Number(result.numDeletedRows) > 0;
    },

    async listRoles() {
      const rows = await db
        .selectFrom("auth_roles")
        .select(["role_id", "description", "scopes", "created_at", "updated_at"])
        .orderBy("role_id")
        .execute();
      return rows.map(roleSummary);
    },

    async grant(principal, scopes) {
      checkPrincipal(principal);
      const checked = checkScopes(scopes);
      if (checked.length === 0) return;
      await db
        .insertInto("auth_grants")
        .values(checked.map((scope) => ({ principal, scope })))
        .onConflict((oc) => oc.columns(["principal", "scope"]).doNothing())
        .execute();
    },

    async revoke(principal, scopes) {
      let query = db.deleteFrom("auth_grants").where("principal", "=", principal);
      if (scopes != null) {
        if (scopes.length === 0) return 0;
        query = query.where("scope", "in", [...scopes]);
      }
      const result = await query.executeTakeFirst();
      return Number(result.numDeletedRows);
    },

    async listGrants(principal) {
      let query = db.selectFrom("auth_grants").select(["principal", "scope"]);
      if (principal != null) query = query.where("principal", "=", principal);
      return query.orderBy("principal").orderBy("scope").execute();
    },

    async deny(principal, scope) {
      checkPrincipal(principal, true);
      const [checked] = checkScopes([scope], "scope");
      await db
        .insertInto("auth_deny_rules")
        .values({ principal, scope: checked as string })
        .onConflict((oc) => oc.columns(["principal", "scope"]).doNothing())
        .execute();
    },

    async removeDenyRule(principal, scope) {
      const result = await db
        .deleteFrom("auth_deny_rules")
        .where("principal", "=", principal)
        .where("scope", "=", scope)
        .executeTakeFirst();
      return Number(result.numDeletedRows) > 0;
    },

    async listDenyRules() {
      return db
        .selectFrom("auth_deny_rules")
        .select(["principal", "scope"])
        .orderBy("principal")
        .orderBy("scope")
        .execute();
    },
  };
}
