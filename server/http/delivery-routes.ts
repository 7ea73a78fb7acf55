/**
 * REST routes for delivery health, mounted under `/api/v1` behind its authentication:
 * `GET /deliveries/peers` lists every inbox this cluster delivers to with its last success,
 * last failure, consecutive failures, circuit state (`closed`, `open`, `half-open`), whether
 * it is gone (answered 404 or 410), and how many deliveries to it are still open.
 * @module
 */
import express, {
  type NextFunction,
  type Request as ERequest,
  type Response as EResponse,
} from "express";
import type { Delivery } from "../federation/delivery.ts";
import { requireScopes } from "./scopes.ts";

/** Options for {@link deliveryRoutes}. */
export interface DeliveryRoutesOptions {
  readonly delivery: Pick<Delivery, "peers">;
}

/** The delivery routes; mount under `/api/v1` after authentication. */
export function deliveryRoutes(options: DeliveryRoutesOptions): express.Router {
  const router = express.Router();
  router.get(
    "/deliveries/peers",
    requireScopes("taskweb:federation:read"),
    (_req: ERequest, res: EResponse, next: NextFunction) => {
      options.delivery
        .peers()
        .then((peers) => {
          res.json({ peers });
        })
        .catch(next);
    },
  );
  return router;
}
