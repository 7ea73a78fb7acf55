/**
 * REST routes for relaying, mounted under `/api/v1`: `POST /relays` (`{"cluster": "<actor
 * URL>"}`) re-publishes that followed cluster's activities to this cluster's followers as
 * `Announce`s with their original proofs, `GET /relays` lists the relayed clusters and
 * `DELETE /relays?cluster=<actor URL>` stops one.
 * @module
 */
import express, {
  type NextFunction,
  type Request as ERequest,
  type Response as EResponse,
} from "express";
import { ApiError } from "../domain/errors.ts";
import type { RelayService } from "../federation/relays.ts";
import { requireScopes } from "./scopes.ts";

/** Options for {@link relayRoutes}. */
export interface RelayRoutesOptions {
  readonly relays: RelayService;
}

type Handler = (req: ERequest, res: EResponse) => Promise<void>;

/** Wraps an async route so that every rejection reaches the error handler. */
function route(handler: Handler) {
  return (req: ERequest, res: EResponse, next: NextFunction): void => {
    handler(req, res).catch(next);
  };
}

function actorUrl(value: unknown): string {
  try {
    const url = typeof value === "string" ? new URL(value) : undefined;
    if (url != null && (url.protocol === "https:" || url.protocol === "http:")) return url.href;
  } catch {
    // Reported below.
  }
  throw new ApiError("InputError", 'Name the cluster by its actor URL: {"cluster": "https://…"}.');
}

/** The relay routes, mounted under `/api/v1` after authentication and the JSON parser. */
export function relayRoutes(options: RelayRoutesOptions): express.Router {
  const { relays } = options;
  const router = express.Router();
  router.post(
    "/relays",
    requireScopes("taskweb:relay:manage"),
    route(async (req, res) => {
      const cluster = actorUrl((req.body as { cluster?: unknown } | undefined)?.cluster);
      await relays.addSource(cluster);
      res.status(201).json({ cluster });
    }),
  );
  router.get(
    "/relays",
    requireScopes("taskweb:relay:list"),
    route(async (_req, res) => {
      res.json({ relays: await relays.sources() });
    }),
  );
  router.delete(
    "/relays",
    requireScopes("taskweb:relay:manage"),
    route(async (req, res) => {
      const cluster = actorUrl(req.query.cluster);
      if (!(await relays.removeSource(cluster))) {
        throw new ApiError("ResourceNotFound", `${cluster} is not relayed.`);
      }
      res.status(204).end();
    }),
  );
  return router;
}
