/**
 * REST routes for the federation policy, mounted under `/api/v1` behind its authentication:
 * pending Follow requests approved or rejected (`/followers/approve`, `/followers/reject`),
 * the acceptance mode (`/federation/policy`), and the allowlist and blocklist
 * (`/federation/allowlist`, `/federation/blocklist`). Blocking an actor also drops it as a
 * follower, with a Reject.
 * @module
 */
import express, {
  type NextFunction,
  type Request as ERequest,
  type Response as EResponse,
} from "express";
import type { Kysely } from "kysely";
import { ApiError } from "../domain/errors.ts";
import type { ClusterFederation } from "../federation/federation.ts";
import {
  entryCovers,
  normalizeActorEntry,
  type FollowPolicy,
} from "../federation/follow-policy.ts";
import type { DatabaseSchema } from "../store/schema.ts";
import { requireScopes } from "./scopes.ts";

/** Options for {@link federationRoutes}. */
export interface FederationRoutesOptions {
  readonly db: Kysely<DatabaseSchema>;
  readonly federation: ClusterFederation;
  readonly policy: FollowPolicy;
}

type Handler = (req: ERequest, res: EResponse) => Promise<void>;

/** Wraps an async route so that every rejection reaches the error handler. */
function route(handler: Handler) {
  return (req: ERequest, res: EResponse, next: NextFunction): void => {
    handler(req, res).catch(next);
  };
}

function actorOf(req: ERequest): string {
  const body: unknown = req.body;
  const actor =
    typeof body === "object" && body !== null ? (body as { actor?: unknown }).actor : undefined;
  if (typeof actor !== "string") {
    throw new ApiError("InputError", 'Send {"actor": "<actor URL>"}.');
  }
  return actor;
}

function actorQuery(req: ERequest): string {
  const actor = req.query.actor;
  if (typeof actor !== "string") throw new ApiError("InputError", "Give ?actor=<actor URL>.");
  return actor;
}

/** The federation policy routes. */
export function federationRoutes(options: FederationRoutesOptions): express.Router {
  const { db, federation, policy } = options;
  const router = express.Router();

  router.post(
    "/followers/approve",
    requireScopes("taskweb:follower:manage"),
    route(async (req, res) => {
      const actor = actorOf(req);
      if (!(await federation.approveFollower(actor))) {
        throw new ApiError(
          "ResourceNotFound",
          `No pending follow from ${actor}; see GET /api/v1/followers?state=pending.`,
        );
      }
      res.json({ actor, state: "accepted" });
    }),
  );

  router.post(
    "/followers/reject",
    requireScopes("taskweb:follower:manage"),
    route(async (req, res) => {
      const actor = actorOf(req);
      if (!(await federation.rejectFollower(actor))) {
        throw new ApiError("ResourceNotFound", `${actor} is not a follower, pending or accepted.`);
      }
      res.json({ actor, state: "rejected" });
    }),
  );

  router.get(
    "/federation/policy",
    requireScopes("taskweb:federation:policy:read"),
    route(async (_req, res) => {
      res.json(await policy.view());
    }),
  );

  router.put(
    "/federation/policy",
    requireScopes("taskweb:federation:policy:set"),
    route(async (req, res) => {
      const acceptance = (req.body as { acceptance?: unknown } | undefined)?.acceptance;
      if (acceptance !== "auto" && acceptance !== "approval" && acceptance !== "allowlist") {
        throw new ApiError("InputError", 'Send {"acceptance": "auto" | "approval" | "allowlist"}.');
      }
      await policy.setAcceptance(acceptance);
      res.json(await policy.view());
    }),
  );

  for (const [path, list] of [
    ["/federation/allowlist", "allow"],
    ["/federation/blocklist", "block"],
  ] as const) {
    router.post(
      path,
      requireScopes("taskweb:federation:policy:set"),
      route(async (req, res) => {
        const entry = normalizeActorEntry(actorOf(req));
        await policy.add(list, entry);
        const dropped: string[] = [];
        if (list === "block") {
          const followers = await db.selectFrom("followers").select("actor_id").execute();
          for (const { actor_id } of followers) {
            if (entryCovers(entry, actor_id) && (await federation.rejectFollower(actor_id))) {
              dropped.push(actor_id);
            }
          }
        }
        res.status(201).json({ actor: entry, ...(list === "block" ? { dropped } : {}) });
      }),
    );
    router.delete(
      path,
      requireScopes("taskweb:federation:policy:set"),
      route(async (req, res) => {
        if (!(await policy.remove(list, actorQuery(req)))) {
          throw new ApiError(
            "ResourceNotFound",
            "No such entry set through the API (entries from the configuration stay until it changes).",
          );
        }
        res.status(204).end();
      }),
    );
  }
  return router;
}
