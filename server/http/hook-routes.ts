/**
 * REST routes for hooks, mounted under `/api/v1` behind its authentication:
 * `PUT /hooks/:hookId` creates a hook (or a new version of its template),
 * `GET /hooks` and `GET /hooks/:hookId` read them, `DELETE /hooks/:hookId` removes one, and
 * `GET /hooks/:hookId/fires` lists what it fired. Scopes name the hook in `<hookId>`.
 * @module
 */
import express, {
  type NextFunction,
  type Request as ERequest,
  type Response as EResponse,
} from "express";
import { ApiError } from "../domain/errors.ts";
import type { HookService } from "../domain/hooks.ts";
import { requireScopes } from "./scopes.ts";

/** Options for {@link hookRoutes}. */
export interface HookRoutesOptions {
  readonly hooks: HookService;
}

type Handler = (req: ERequest, res: EResponse) => Promise<void>;

/** Wraps an async route so that every rejection reaches the error handler. */
function route(handler: Handler) {
  return (req: ERequest, res: EResponse, next: NextFunction): void => {
    handler(req, res).catch(next);
  };
}

function notFound(hookId: string): ApiError {
  return new ApiError(
    "ResourceNotFound",
    `No hook ${JSON.stringify(hookId)} on this cluster; create one with PUT /api/v1/hooks/${encodeURIComponent(hookId)}.`,
  );
}

/**
 * The hook routes. The router expects to be mounted under `/api/v1` after the API's
 * authentication and JSON body parser.
 */
export function hookRoutes(options: HookRoutesOptions): express.Router {
  const { hooks } = options;
  const router = express.Router();

  router.put(
    "/hooks/:hookId",
    requireScopes("taskweb:hook:create:<hookId>"),
    route(async (req, res) => {
      if (!req.is("application/json")) {
        throw new ApiError("UnsupportedMediaType", "Send the hook as application/json.");
      }
      const result = await hooks.put(String(req.params.hookId), req.body);
      res.status(result.created ? 201 : 200).json({
        ...result.hook,
        created: result.created,
        changed: result.changed,
      });
    }),
  );

  router.get(
    "/hooks",
    requireScopes("taskweb:hook:list"),
    route(async (_req, res) => {
      res.json({ hooks: await hooks.list() });
    }),
  );

  router.get(
    "/hooks/:hookId",
    requireScopes("taskweb:hook:get:<hookId>"),
    route(async (req, res) => {
      const hookId = String(req.params.hookId);
      const hook = await hooks.get(hookId);
      if (hook == null) throw notFound(hookId);
      res.json(hook);
    }),
  );

  router.get(
    "/hooks/:hookId/fires",
    requireScopes("taskweb:hook:get:<hookId>"),
    route(async (req, res) => {
      const hookId = String(req.params.hookId);
      const limit = Number(req.query.limit ?? 100);
      const fires = await hooks.fires(hookId, Number.isInteger(limit) ? limit : 100);
      if (fires == null) throw notFound(hookId);
      res.json({ hookId, fires });
    }),
  );

  router.delete(
    "/hooks/:hookId",
    requireScopes("taskweb:hook:delete:<hookId>"),
    route(async (req, res) => {
      const hookId = String(req.params.hookId);
      if (!(await hooks.remove(hookId))) throw notFound(hookId);
      res.status(204).end();
    }),
  );
  return router;
}
