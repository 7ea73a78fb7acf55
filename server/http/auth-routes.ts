/**
 * REST routes for access control, mounted under `/api/v1` behind its authentication:
 * API clients (`/clients`), roles (`/roles`), grants to principals such as remote clusters
 * (`/grants`) and deny rules (`/deny-rules`). Nobody can hand out a scope they do not hold
 * themselves: creating a client or a role, or granting, checks the caller's own scopes too.
 * @module
 */
import express, {
  type NextFunction,
  type Request as ERequest,
  type Response as EResponse,
} from "express";
import { checkPrincipal, checkScopes, type AuthService } from "../domain/auth.ts";
import { ApiError } from "../domain/errors.ts";
import { requestAuth, requireScopes } from "./scopes.ts";

/** Options for {@link authRoutes}. */
export interface AuthRoutesOptions {
  readonly auth: AuthService;
}

type Handler = (req: ERequest, res: EResponse) => Promise<void>;

/** Wraps an async route so that every rejection reaches the error handler. */
function route(handler: Handler) {
  return (req: ERequest, res: EResponse, next: NextFunction): void => {
    handler(req, res).catch(next);
  };
}

function param(req: ERequest, name: string): string {
  const value = (req.params as Record<string, string | string[] | undefined>)[name];
  return Array.isArray(value) ? value.join("/") : (value ?? "");
}

function bodyOf(req: ERequest): Record<string, unknown> {
  const body: unknown = req.body;
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new ApiError("InputError", "Send a JSON object as the request body.");
  }
  return body as Record<string, unknown>;
}

function optionalString(body: Record<string, unknown>, field: string): string | undefined {
  const value = body[field];
  if (value === undefined) return undefined;
  if (typeof value !== "string" || value.length > 1000) {
    throw new ApiError("InputError", `${field} must be a string of at most 1000 characters.`);
  }
  return value;
}

/** Refuses to hand out scopes the caller does not hold (no escalation through the API). */
async function requireHeld(res: EResponse, scopes: readonly string[]): Promise<void> {
  const caller = requestAuth(res);
  if (caller == null) throw new ApiError("AuthenticationFailed", "Send an API token.");
  const missing = await caller.missingScopes(scopes);
  if (missing.length > 0) {
    throw new ApiError(
      "InsufficientScopes",
      `Client ${caller.clientId} cannot hand out scopes it does not hold: ${missing.join(", ")}.`,
      { clientId: caller.clientId, required: scopes, missing },
    );
  }
}

/** The access-control routes. */
export function authRoutes(options: AuthRoutesOptions): express.Router {
  const { auth } = options;
  const router = express.Router();

  router.get(
    "/clients",
    requireScopes("taskweb:client:list"),
    route(async (_req, res) => {
      res.json({ clients: await auth.listClients() });
    }),
  );

  router.get(
    "/clients/:clientId",
    requireScopes("taskweb:client:read:<clientId>"),
    route(async (req, res) => {
      const client = await auth.getClient(param(req, "clientId"));
      if (client == null) throw new ApiError("ResourceNotFound", "No such client.");
      res.json({
        ...client,
        expandedScopes: await auth.expandedScopes(`client:${client.clientId}`),
      });
    }),
  );

  router.put(
    "/clients/:clientId",
    requireScopes("taskweb:client:create:<clientId>"),
    route(async (req, res) => {
      const body = bodyOf(req);
      const scopes = checkScopes(body.scopes ?? []);
      const expiresText = optionalString(body, "expires");
      const expires = expiresText != null ? new Date(expiresText) : undefined;
      if (expires != null && Number.isNaN(expires.getTime())) {
        throw new ApiError("InputError", "expires must be an ISO 8601 date and time.");
      }
      await requireHeld(res, scopes);
      const description = optionalString(body, "description");
      const created = await auth.createClient({
        clientId: param(req, "clientId"),
        scopes,
        ...(description != null ? { description } : {}),
        ...(expires != null ? { expires } : {}),
      });
      res.status(201).json({ ...created.client, token: created.token });
    }),
  );

  router.post(
    "/clients/:clientId/scopes",
    requireScopes("taskweb:client:update:<clientId>"),
    route(async (req, res) => {
      const scopes = checkScopes(bodyOf(req).scopes);
      await requireHeld(res, scopes);
      res.json(await auth.setClientScopes(param(req, "clientId"), scopes));
    }),
  );

  router.post(
    "/clients/:clientId/rotate",
    requireScopes("taskweb:client:rotate:<clientId>"),
    route(async (req, res) => {
      const rotated = await auth.rotateClient(param(req, "clientId"));
      res.json({ ...rotated.client, token: rotated.token });
    }),
  );

  router.post(
    "/clients/:clientId/disable",
    requireScopes("taskweb:client:disable:<clientId>"),
    route(async (req, res) => {
      res.json(await auth.setClientDisabled(param(req, "clientId"), true));
    }),
  );

  router.post(
    "/clients/:clientId/enable",
    requireScopes("taskweb:client:enable:<clientId>"),
    route(async (req, res) => {
      res.json(await auth.setClientDisabled(param(req, "clientId"), false));
    }),
  );

  router.delete(
    "/clients/:clientId",
    requireScopes("taskweb:client:delete:<clientId>"),
    route(async (req, res) => {
      if (!(await auth.deleteClient(param(req, "clientId")))) {
        throw new ApiError("ResourceNotFound", "No such client.");
      }
      res.status(204).end();
    }),
  );

  router.get(
    "/roles",
    requireScopes("taskweb:role:list"),
    route(async (_req, res) => {
      res.json({ roles: await auth.listRoles() });
    }),
  );

  router.put(
    "/roles/*roleId",
    requireScopes("taskweb:role:set:<roleId>"),
    route(async (req, res) => {
      const body = bodyOf(req);
      const scopes = checkScopes(body.scopes);
      await requireHeld(res, scopes);
      const description = optionalString(body, "description");
      const { role, created } = await auth.setRole({
        roleId: param(req, "roleId"),
        scopes,
        ...(description != null ? { description } : {}),
      });
      res.status(created ? 201 : 200).json({ ...role, created });
    }),
  );

  router.delete(
    "/roles/*roleId",
    requireScopes("taskweb:role:delete:<roleId>"),
    route(async (req, res) => {
      if (!(await auth.deleteRole(param(req, "roleId")))) {
        throw new ApiError("ResourceNotFound", "No such role.");
      }
      res.status(204).end();
    }),
  );

  router.get(
    "/grants",
    requireScopes("taskweb:grant:list"),
    route(async (req, res) => {
      const principal = typeof req.query.principal === "string" ? req.query.principal : undefined;
      res.json({ grants: await auth.listGrants(principal) });
    }),
  );

  router.post(
    "/grants",
    requireScopes("taskweb:grant:create"),
    route(async (req, res) => {
      const body = bodyOf(req);
      const principal = checkPrincipal(body.principal);
      const scopes = checkScopes(body.scopes);
      await requireHeld(res, scopes);
      await auth.grant(principal, scopes);
      res.status(201).json({ principal, scopes: await auth.grantedScopes(principal) });
    }),
  );

  router.delete(
    "/grants",
    requireScopes("taskweb:grant:delete"),
    route(async (req, res) => {
      const principal = checkPrincipal(req.query.principal);
      const scope = req.query.scope;
      if (scope !== undefined && typeof scope !== "string") {
        throw new ApiError("InputError", "Give at most one scope=… to take back.");
      }
      const removed = await auth.revoke(principal, scope != null ? [scope] : undefined);
      res.json({ principal, removed });
    }),
  );

  router.get(
    "/deny-rules",
    requireScopes("taskweb:deny:list"),
    route(async (_req, res) => {
      res.json({ denyRules: await auth.listDenyRules() });
    }),
  );

  router.post(
    "/deny-rules",
    requireScopes("taskweb:deny:create"),
    route(async (req, res) => {
      const body = bodyOf(req);
      const principal = checkPrincipal(body.principal, true);
      const [scope] = checkScopes([body.scope], "scope");
      await auth.deny(principal, scope as string);
      res.status(201).json({ principal, scope });
    }),
  );

  router.delete(
    "/deny-rules",
    requireScopes("taskweb:deny:delete"),
    route(async (req, res) => {
      const { principal, scope } = req.query;
      if (typeof principal !== "string" || typeof scope !== "string") {
        throw new ApiError("InputError", "Give principal=… and scope=… of the rule to remove.");
      }
      if (!(await auth.removeDenyRule(principal, scope))) {
        throw new ApiError("ResourceNotFound", "No such deny rule.");
      }
      res.status(204).end();
    }),
  );

  return router;
}
