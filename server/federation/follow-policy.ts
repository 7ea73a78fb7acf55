/**
 * The federation policy of a cluster: how Follow requests are answered (`auto`, `approval`,
 * `allowlist`), which actors are allowlisted, and which are blocked (their Follows are
 * rejected and their inbox activities refused). Entries are actor URLs, or origins
 * (`https://ci.example`) that cover every actor served there. The configured lists and mode
 * are the defaults; what is set through the API is kept in the database and adds to them
 * (the mode set through the API replaces the configured one).
 * @module
 */
import type { Kysely } from "kysely";
import { ApiError } from "../domain/errors.ts";
import type { DatabaseSchema } from "../store/schema.ts";

/** How Follow requests are answered. */
export type FollowerAcceptance = "auto" | "approval" | "allowlist";

/** What happens to one Follow request. */
export type FollowDecision = "accept" | "pending" | "reject";

/** The whole policy, as `GET /api/v1/federation/policy` shows it. */
export interface FederationPolicyView {
  readonly acceptance: FollowerAcceptance;
  /** Entries from the configuration and from the API, with where each comes from. */
  readonly allowlist: readonly { readonly actor: string; readonly source: "config" | "api" }[];
  readonly blocklist: readonly { readonly actor: string; readonly source: "config" | "api" }[];
}

/** The policy service; see the module documentation. */
export interface FollowPolicy {
  acceptance(): Promise<FollowerAcceptance>;
  setAcceptance(mode: FollowerAcceptance): Promise<void>;
  /** What to do with a Follow from `actorId`. */
  decide(actorId: string): Promise<FollowDecision>;
  /** Whether `actorId` (or its origin) is blocked. */
  isBlocked(actorId: string): Promise<boolean>;
  /** Adds an actor URL or origin to a list. */
  add(list: "allow" | "block", actor: string): Promise<void>;
  /** Removes an entry added through the API. @returns whether there was one */
  remove(list: "allow" | "block", actor: string): Promise<boolean>;
  view(): Promise<FederationPolicyView>;
}

/** Options for {@link createFollowPolicy}. */
export interface FollowPolicyOptions {
  readonly db: Kysely<DatabaseSchema>;
  /** @defaultValue `"auto"` */
  readonly acceptance?: FollowerAcceptance;
  readonly allowlist?: readonly string[];
  readonly blocklist?: readonly string[];
}

const ACCEPTANCE_KEY = "follower_acceptance";

/** Whether `value` is a follower acceptance mode. */
export function isFollowerAcceptance(value: unknown): value is FollowerAcceptance {
  return value === "auto" || value === "approval" || value === "allowlist";
}

/**
 * An entry as stored: an `http(s)` origin without a trailing slash, or an actor URL.
 * Throws `InputError` for anything else.
 */
export function normalizeActorEntry(entry: unknown): string {
  let url: URL;
  try {
    if (typeof entry !== "string" || entry.length > 1000) throw new Error("not a string");
    url = new URL(entry);
  } catch {
    throw new ApiError(
      "InputError",
      `${JSON.stringify(entry)} is not an actor URL or an origin (such as https://ci.example/clusters/main or https://ci.example).`,
    );
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new ApiError("InputError", "Actors and origins are http(s) URLs.");
  }
  const isOrigin = (url.pathname === "/" || url.pathname === "") && url.search === "";
  return isOrigin ? url.origin : url.href;
}

/** Whether `entry` (an actor URL or an origin) covers the actor `actorId`. */
export function entryCovers(entry: string, actorId: string): boolean {
  if (entry === actorId) return true;
  try {
    const actor = new URL(actorId);
    const e = new URL(entry);
    return (e.pathname === "/" || e.pathname === "") && e.origin === actor.origin;
  } catch {
    return false;
  }
}

/** Creates the {@link FollowPolicy}. */
export function createFollowPolicy(options: FollowPolicyOptions): FollowPolicy {
  const { db } = options;
  const configured = {
    allow: (options.allowlist ?? []).map(normalizeActorEntry),
    block: (options.blocklist ?? []).map(normalizeActorEntry),
  };

  const entries = async (list: "allow" | "block"): Promise<string[]> => {
    const rows = await db
      .selectFrom("federation_actor_rules")
      .select("pattern")
      .where("list", "=", list)
      .orderBy("pattern")
      .execute();
    return rows.map((r) => r.pattern);
  };
  const listed = async (list: "allow" | "block", actorId: string): Promise<boolean> =>
    [...configured[list], ...(await entries(list))].some((e) => entryCovers(e, actorId));

  const policy: FollowPolicy = {
    async acceptance() {
      const row = await db
        .selectFrom("federation_settings")
        .select("value")
        .where("key", "=", ACCEPTANCE_KEY)
        .executeTakeFirst();
      return isFollowerAcceptance(row?.value) ? row.value : (options.acceptance ?? "auto");
    },
    async setAcceptance(mode) {
      if (!isFollowerAcceptance(mode)) {
        throw new ApiError("InputError", "acceptance must be auto, approval or allowlist.");
      }
      await db
        .insertInto("federation_settings")
        .values({ key: ACCEPTANCE_KEY, value: mode, updated_at: new Date() })
        .onConflict((oc) => oc.column("key").doUpdateSet({ value: mode, updated_at: new Date() }))
        .execute();
    },
    async decide(actorId) {
      if (await listed("block", actorId)) return "reject";
      const mode = await policy.acceptance();
      if (mode === "auto") return "accept";
      if (await listed("allow", actorId)) return "accept";
      return mode === "approval" ? "pending" : "reject";
    },
    isBlocked: (actorId) => listed("block", actorId),
    async add(list, actor) {
      await db
        .insertInto("federation_actor_rules")
        .values({ list, pattern: normalizeActorEntry(actor) })
        .onConflict((oc) => oc.columns(["list", "pattern"]).doNothing())
        .execute();
    },
    async remove(list, actor) {
      const result = await db
        .deleteFrom("federation_actor_rules")
        .where("list", "=", list)
        .where("pattern", "=", normalizeActorEntry(actor))
        .executeTakeFirst();
      return Number(result.numDeletedRows) > 0;
    },
    async view() {
      const from = async (list: "allow" | "block") => [
        ...configured[list].map((actor) => ({ actor, source: "config" as const })),
        ...(await entries(list)).map((actor) => ({ actor, source: "api" as const })),
      ];
      return {
        acceptance: await policy.acceptance(),
        allowlist: await from("allow"),
        blocklist: await from("block"),
      };
    },
  };
  return policy;
}
