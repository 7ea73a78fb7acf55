/**
 * What each REST route needs. Every route of `/api/v1` is declared with {@link requireScopes};
 * the declaration is kept on the handler so that the route table can be listed (and walked
 * by a test) without reading the code.
 * @module
 */
import type { NextFunction, Request, RequestHandler, Response } from "express";

/** A handler that carries the scopes its route needs. */
export interface ScopedHandler extends RequestHandler {
  readonly requiredScopes: readonly string[];
}

/**
 * Middleware for one route: the authenticated client must satisfy every scope in `scopes`.
 * Until clients with scopes exist, the cluster's API token satisfies every scope, so the
 * check passes once the token has been checked.
 */
export function requireScopes(...scopes: string[]): ScopedHandler {
  const handler = (_req: Request, _res: Response, next: NextFunction): void => {
    next();
  };
  return Object.assign(handler, { requiredScopes: Object.freeze([...scopes]) });
}
