/**
 * REST routes that make an artifact private or public again, mounted under `/api/v1`
 * behind its authentication: `PUT /tasks/:taskId/private-artifacts/<name>` and
 * `DELETE …`. A private artifact is served only by authorized fetch (see
 * `authorized-fetch.ts`).
 * @module
 */
import express, {
  type NextFunction,
  type Request as ERequest,
  type Response as EResponse,
} from "express";
import type { Kysely } from "kysely";
import { ApiError } from "../domain/errors.ts";
import type { DatabaseSchema } from "../store/schema.ts";
import { requireScopes } from "./scopes.ts";

/** Options for {@link privateArtifactRoutes}. */
export interface PrivateArtifactRoutesOptions {
  readonly db: Kysely<DatabaseSchema>;
}

type Handler = (req: ERequest, res: EResponse) => Promise<void>;

function route(handler: Handler) {
  return (req: ERequest, res: EResponse, next: NextFunction): void => {
    handler(req, res).catch(next);
  };
}

function param(req: ERequest, name: string): string {
  const value = (req.params as Record<string, string | string[] | undefined>)[name];
  return Array.isArray(value) ? value.join("/") : (value ?? "");
}

/** The routes that set an artifact's visibility. */
export function privateArtifactRoutes(options: PrivateArtifactRoutesOptions): express.Router {
  const { db } = options;
  const router = express.Router();
  for (const [method, isPrivate] of [
    ["put", true],
    ["delete", false],
  ] as const) {
    router[method](
      "/tasks/:taskId/private-artifacts/*name",
      requireScopes("taskweb:artifact:set-visibility:<taskId>/<name>"),
      route(async (req, res) => {
        const taskId = param(req, "taskId");
        const name = param(req, "name");
        const row = await db
          .updateTable("artifacts")
          .set({ private: isPrivate })
          .where("task_id", "=", taskId)
          .where("name", "=", name)
          .returning(["task_id", "name", "private"])
          .executeTakeFirst();
        if (row == null) {
          throw new ApiError("ResourceNotFound", `Task ${taskId} has no artifact ${name}.`);
        }
        res.json({ taskId, name, private: row.private });
      }),
    );
  }
  return router;
}
