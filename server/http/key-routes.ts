/**
 * REST routes for the cluster's signing keys, mounted under `/api/v1` behind its
 * authentication: `POST /keys/rotate` replaces the RSA and Ed25519 key pairs with new ones
 * and tells every follower with an `Update` of the actor.
 * @module
 */
import express, {
  type NextFunction,
  type Request as ERequest,
  type Response as EResponse,
} from "express";
import type { ClusterFederation } from "../federation/federation.ts";
import { requireScopes } from "./scopes.ts";

/** Options for {@link keyRoutes}. */
export interface KeyRoutesOptions {
  readonly federation: ClusterFederation;
}

/** The key routes; mount under `/api/v1` after its authentication. */
export function keyRoutes(options: KeyRoutesOptions): express.Router {
  const router = express.Router();
  router.post(
    "/keys/rotate",
    requireScopes("taskweb:keys:rotate"),
    (_req: ERequest, res: EResponse, next: NextFunction) => {
      options.federation
        .rotateKeys()
        .then((result) => {
          res.json({
            keyIds: result.keyIds,
            rotatedAt: result.rotatedAt.toISOString(),
            replacedKeys: result.replaced.length,
            graceUntil: result.graceUntil.toISOString(),
          });
        })
        .catch(next);
    },
  );
  return router;
}
