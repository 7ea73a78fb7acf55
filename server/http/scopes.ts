/**
 * What each REST route needs. Every route of `/api/v1` is declared with {@link requireScopes};
 * the declaration is kept on the handler so that the route table can be listed (and walked
 * by a test) without reading the code.
 *
 * A declared scope may name route parameters in angle brackets: `taskweb:task:rerun:<taskId>`
 * requires `taskweb:task:rerun:abc` for `POST /tasks/abc/rerun`. A parameter matched by a
 * wildcard path segment (`/secrets/*name`) is joined with `/`.
 * @module
 */
import type { NextFunction, Request, RequestHandler, Response } from "express";
import { ApiError } from "../domain/errors.ts";

/** Who made a request, as the `/api/v1` authentication set it on `res.locals.auth`. */
export interface RequestAuth {
  readonly clientId: string;
  /** `client:<clientId>`. */
  readonly principal: string;
  /** The scopes of `required` the caller does not hold. */
  missingScopes(required: readonly string[]): Promise<string[]>;
}

/** A handler that carries the scopes its route needs. */
export interface ScopedHandler extends RequestHandler {
  /** The scopes as declared, with `<param>` templates unexpanded. */
  readonly requiredScopes: readonly string[];
}

/** The authenticated caller of a request, or undefined before authentication. */
export function requestAuth(res: Response): RequestAuth | undefined {
  return (res.locals as { auth?: RequestAuth }).auth;
}

/** Sets the caller of a request; called by the API's authentication. */
export function setRequestAuth(res: Response, auth: RequestAuth): void {
  (res.locals as { auth?: RequestAuth }).auth = auth;
}

const TEMPLATE = /<([A-Za-z_][A-Za-z0-9_]*)>/g;

/** A declared scope with the request's route parameters filled in. */
export function expandScopeTemplate(scope: string, params: Request["params"]): string {
  return scope.replace(TEMPLATE, (whole, name: string) => {
    const value = (params as Record<string, string | string[] | undefined>)[name];
    if (value == null) return whole;
    return Array.isArray(value) ? value.join("/") : value;
  });
}

/**
 * Middleware for one route: the authenticated caller must satisfy every scope in `scopes`
 * (templates filled from the route's parameters), or the request ends with 403
 * `InsufficientScopes` naming the missing scopes. With no scopes, any authenticated client
 * passes (an explicit declaration, listed as such by the route walk).
 */
export function requireScopes(...scopes: string[]): ScopedHandler {
  const declared = Object.freeze([...scopes]);
  const handler = (req: Request, res: Response, next: NextFunction): void => {
    const auth = requestAuth(res);
    if (auth == null) {
      next(
        new ApiError(
          "AuthenticationFailed",
          "Send an API token as 'Authorization: Bearer <token>'.",
        ),
      );
      return;
    }
    if (declared.length === 0) {
      next();
      return;
    }
    const required = declared.map((s) => expandScopeTemplate(s, req.params));
    auth.missingScopes(required).then(
      (missing) => {
        if (missing.length === 0) {
          next();
          return;
        }
        next(
          new ApiError(
            "InsufficientScopes",
            `Client ${auth.clientId} lacks ${missing.length === 1 ? "the scope" : "the scopes"} ${missing.join(", ")} for ${req.method} ${req.baseUrl}${req.path}; ask an administrator to grant ${missing.length === 1 ? "it" : "them"} (taskweb client create/role create).`,
            { clientId: auth.clientId, required, missing },
          ),
        );
      },
      (error: unknown) => {
        next(error);
      },
    );
  };
  return Object.assign(handler, { requiredScopes: declared });
}

/** Whether a handler is a {@link ScopedHandler}. */
export function isScopedHandler(handler: unknown): handler is ScopedHandler {
  return (
    typeof handler === "function" &&
    Array.isArray((handler as { requiredScopes?: unknown }).requiredScopes)
  );
}
