/**
 * REST routes for offers of task graphs sent to other clusters, mounted under `/api/v1`:
 * `POST /offers` sends one (`{"to": "<actor URL>", "graph": {…}}`), `GET /offers` lists
 * them and `GET /offers/:offerId` shows one with its answer and, once accepted, the task
 * group's URL on the other cluster (a task of this cluster may depend on it).
 * @module
 */
import express, {
  type NextFunction,
  type Request as ERequest,
  type Response as EResponse,
} from "express";
import { ApiError } from "../domain/errors.ts";
import type { ClusterUrls } from "../federation/cluster-urls.ts";
import type { OfferService } from "../federation/offers.ts";
import { requireScopes } from "./scopes.ts";

/** Options for {@link offerRoutes}. */
export interface OfferRoutesOptions {
  readonly offers: OfferService;
  readonly urls: ClusterUrls;
}

type Handler = (req: ERequest, res: EResponse) => Promise<void>;

/** Wraps an async route so that every rejection reaches the error handler. */
function route(handler: Handler) {
  return (req: ERequest, res: EResponse, next: NextFunction): void => {
    handler(req, res).catch(next);
  };
}

/** The offer routes, mounted under `/api/v1` after authentication and the JSON parser. */
export function offerRoutes(options: OfferRoutesOptions): express.Router {
  const { offers, urls } = options;
  const router = express.Router();

  router.post(
    "/offers",
    requireScopes("taskweb:offer:send"),
    route(async (req, res) => {
      const body = req.body as { to?: unknown; graph?: unknown } | undefined;
      const to = body?.to;
      let target: URL | undefined;
      try {
        target = typeof to === "string" ? new URL(to) : undefined;
      } catch {
        target = undefined;
      }
      if (target == null || (target.protocol !== "https:" && target.protocol !== "http:")) {
        throw new ApiError(
          "InputError",
          'Send {"to": "<the other cluster\'s actor URL>", "graph": {taskGroupId, tasks}}.',
        );
      }
      if (target.href === urls.actor) {
        throw new ApiError("InputError", "Submit a graph to this cluster with POST /task-groups.");
      }
      res.status(201).json(await offers.send(target.href, body?.graph));
    }),
  );

  router.get(
    "/offers",
    requireScopes("taskweb:offer:list"),
    route(async (_req, res) => {
      res.json({ offers: await offers.list() });
    }),
  );

  router.get(
    "/offers/:offerId",
    requireScopes("taskweb:offer:get:<offerId>"),
    route(async (req, res) => {
      const offerId = String(req.params.offerId);
      const offer = await offers.get(`${urls.actor}/offers/${offerId}`);
      if (offer == null) {
        throw new ApiError("ResourceNotFound", `No offer ${JSON.stringify(offerId)} was sent.`);
      }
      res.json(offer);
    }),
  );
  return router;
}
