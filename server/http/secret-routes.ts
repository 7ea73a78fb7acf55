/**
 * REST routes for secrets, mounted under `/api/v1` behind its authentication:
 * `PUT /secrets/<name>` stores a value, `GET /secrets` lists names and times, and
 * `DELETE /secrets/<name>` removes one. No route ever returns a value.
 * @module
 */
import express, {
  type NextFunction,
  type Request as ERequest,
  type Response as EResponse,
} from "express";
import { ApiError } from "../domain/errors.ts";
import type { SecretStore } from "../domain/secrets.ts";
import { requireScopes } from "./scopes.ts";

/** Options for {@link secretRoutes}. */
export interface SecretRoutesOptions {
  readonly secrets: SecretStore;
}

type Handler = (req: ERequest, res: EResponse) => Promise<void>;

/** Wraps an async route so that every rejection reaches the error handler. */
function route(handler: Handler) {
  return (req: ERequest, res: EResponse, next: NextFunction): void => {
    handler(req, res).catch(next);
  };
}

/** The secret's name: the rest of the path, whose segments may contain `/`. */
function secretName(req: ERequest): string {
  const value = (req.params as Record<string, string | string[] | undefined>).name;
  return Array.isArray(value) ? value.join("/") : (value ?? "");
}

/** The `value` of a `{"value": "…"}` body; anything else in it is refused. */
function valueOf(body: unknown): unknown {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new ApiError("InputError", 'Send a JSON body {"value": "<the secret>"}.');
  }
  const extra = Object.keys(body).filter((k) => k !== "value");
  if (extra.length > 0) {
    throw new ApiError(
      "InputError",
      `Unknown field ${JSON.stringify(extra[0])}; send {"value": "<the secret>"} only.`,
    );
  }
  return (body as { value?: unknown }).value;
}

/**
 * The secret routes. The router expects to be mounted under `/api/v1` after the API's
 * authentication and JSON body parser.
 */
export function secretRoutes(options: SecretRoutesOptions): express.Router {
  const { secrets } = options;
  const router = express.Router();

  router.put(
    "/secrets/*name",
    requireScopes("taskweb:secret:set:<name>"),
    route(async (req, res) => {
      if (!req.is("application/json")) {
        throw new ApiError(
          "UnsupportedMediaType",
          'Send the value as application/json: {"value": "<the secret>"}.',
        );
      }
      const { created, ...summary } = await secrets.set(secretName(req), valueOf(req.body));
      res.status(created ? 201 : 200).json({ ...summary, created });
    }),
  );

  router.get(
    "/secrets",
    requireScopes("taskweb:secret:list"),
    route(async (_req, res) => {
      res.json({ secrets: await secrets.list() });
    }),
  );

  router.delete(
    "/secrets/*name",
    requireScopes("taskweb:secret:delete:<name>"),
    route(async (req, res) => {
      const name = secretName(req);
      if (!(await secrets.remove(name))) {
        throw new ApiError("ResourceNotFound", `No secret ${JSON.stringify(name)}.`);
      }
      res.status(204).end();
    }),
  );
  return router;
}
