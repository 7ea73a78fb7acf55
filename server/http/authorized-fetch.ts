/**
 * Authorized fetch of private artifacts: a private artifact's document and bytes are served
 * only to a GET carrying a valid HTTP signature (RFC 9421 or draft-cavage, inside the time
 * window) by a key its actor owns on its own origin, when that actor is an accepted
 * follower of this cluster, or holds `taskweb:artifact:read:<taskId>/<name>` (granted to
 * `actor:<url>`), and is not blocked.
 * @module
 */
import { verifyRequestDetailed, type DocumentLoader, type KeyCache } from "@fedify/fedify";
import type { Request as ERequest } from "express";
import type { Kysely } from "kysely";
import { sameOrigin } from "../../protocol/index.ts";
import type { AuthService } from "../domain/auth.ts";
import type { DatabaseSchema } from "../store/schema.ts";
import { toWebRequest } from "./fedify-adapter.ts";
import { INBOX_LIMITS } from "./inbox-guard.ts";

/** Options for {@link checkAuthorizedFetch}. */
export interface AuthorizedFetchOptions {
  readonly db: Kysely<DatabaseSchema>;
  readonly auth: AuthService;
  readonly origin: string;
  readonly documentLoader: () => DocumentLoader;
  readonly contextLoader: DocumentLoader;
  readonly keyCache: KeyCache;
  readonly isBlocked: (actorId: string) => Promise<boolean>;
}

/** The outcome of {@link checkAuthorizedFetch}, with a machine-readable reason. */
export type AuthorizedFetchResult =
  | { readonly ok: true; readonly actor: string }
  | {
      readonly ok: false;
      readonly status: 401 | 403;
      readonly reason:
        | "no-signature"
        | "invalid-signature"
        | "key-not-owned-by-actor"
        | "blocked-actor"
        | "not-a-follower";
      readonly message: string;
    };

/** The scope that lets a non-follower's actor read one private artifact. */
export function artifactReadScope(taskId: string, name: string): string {
  return `taskweb:artifact:read:${taskId}/${name}`;
}

/** Checks a GET for a private artifact; see the module documentation. */
export async function checkAuthorizedFetch(
  req: ERequest,
  options: AuthorizedFetchOptions,
  artifact: { taskId: string; name: string },
): Promise<AuthorizedFetchResult> {
  const signer = await verifySignedFetch(req, options);
  if (!signer.ok || (await mayReadPrivateArtifact(options, signer.actor, artifact))) return signer;
  return {
    ok: false,
    status: 403,
    reason: "not-a-follower",
    message:
      "This artifact is private: only accepted followers of this cluster (or actors granted its read scope) may fetch it.",
  };
}

/**
 * Checks who signed a GET: a valid HTTP signature by a key its actor owns on its own origin,
 * that actor not blocked. Says nothing yet of what the actor may read.
 */
export async function verifySignedFetch(
  req: ERequest,
  options: AuthorizedFetchOptions,
): Promise<AuthorizedFetchResult> {
  if (req.headers.signature == null && req.headers["signature-input"] == null) {
    return {
      ok: false,
      status: 401,
      reason: "no-signature",
      message:
        "This artifact is private: sign the GET with your cluster's key (HTTP signature, RFC 9421 or draft-cavage-12).",
    };
  }
  const result = await verifyRequestDetailed(toWebRequest(req, options.origin), {
    documentLoader: options.documentLoader(),
    contextLoader: options.contextLoader,
    keyCache: options.keyCache,
    timeWindow: { seconds: INBOX_LIMITS.signatureWindowSeconds },
  });
  if (!result.verified) {
    return {
      ok: false,
      status: 401,
      reason: "invalid-signature",
      message: `The HTTP signature does not verify (stale, altered or unknown key; window ±${INBOX_LIMITS.signatureWindowSeconds} s).`,
    };
  }
  const owner = result.key.ownerId?.href;
  if (owner == null || result.key.id == null || !sameOrigin(result.key.id.href, owner)) {
    return {
      ok: false,
      status: 401,
      reason: "key-not-owned-by-actor",
      message: "The signing key does not name an actor on its own origin.",
    };
  }
  if (await options.isBlocked(owner)) {
    return {
      ok: false,
      status: 403,
      reason: "blocked-actor",
      message: "This cluster does not serve your actor.",
    };
  }
  return { ok: true, actor: owner };
}

/**
 * Whether `actor` (verified by {@link verifySignedFetch}) may read a private artifact: it is
 * an accepted follower, or holds the artifact's read scope.
 */
export async function mayReadPrivateArtifact(
  options: Pick<AuthorizedFetchOptions, "db" | "auth">,
  actor: string,
  artifact: { taskId: string; name: string },
): Promise<boolean> {
  const follower = await options.db
    .selectFrom("followers")
    .select("actor_id")
    .where("actor_id", "=", actor)
    .where("state", "=", "accepted")
    .executeTakeFirst();
  return (
    follower != null ||
    (await options.auth.satisfies(`actor:${actor}`, [
      artifactReadScope(artifact.taskId, artifact.name),
    ]))
  );
}
