/**
 * REST routes for task groups, mounted under `/api/v1` behind its authentication:
 * `POST /task-groups` creates a whole task graph sent as JSON or YAML, and
 * `GET /task-groups/:taskGroupId` lists its tasks with their states.
 * @module
 */
import express, {
  type NextFunction,
  type Request as ERequest,
  type Response as EResponse,
} from "express";
import type { Kysely } from "kysely";
import { ApiError } from "../domain/errors.ts";
import { parseTaskGraphSource, readTaskGroup, TASK_GRAPH_LIMITS } from "../domain/task-graph.ts";
import type { TaskService } from "../domain/task-service.ts";
import type { ClusterUrls } from "../federation/cluster-urls.ts";
import type { DatabaseSchema } from "../store/schema.ts";
import { requireScopes } from "./scopes.ts";

/** Media types under which a task graph is read as YAML. */
export const YAML_MEDIA_TYPES: readonly string[] = [
  "application/yaml",
  "application/x-yaml",
  "text/yaml",
];

/** Options for {@link graphRoutes}. */
export interface GraphRoutesOptions {
  readonly db: Kysely<DatabaseSchema>;
  readonly tasks: TaskService;
  readonly urls: ClusterUrls;
}

type Handler = (req: ERequest, res: EResponse) => Promise<void>;

/** Wraps an async route so that every rejection reaches the error handler. */
function route(handler: Handler) {
  return (req: ERequest, res: EResponse, next: NextFunction): void => {
    handler(req, res).catch(next);
  };
}

/**
 * The task group routes. The router expects to be mounted under `/api/v1` after the API's
 * authentication and JSON body parser; it reads YAML bodies itself, up to 5 MiB.
 */
export function graphRoutes(options: GraphRoutesOptions): express.Router {
  const { db, tasks, urls } = options;
  const router = express.Router();
  const yamlParser = express.text({
    type: [...YAML_MEDIA_TYPES],
    limit: TASK_GRAPH_LIMITS.maxSourceBytes,
  });
  // The API's error handler words body errors for its own 1 MiB JSON limit; YAML graphs
  // have their own limit and deserve their own message.
  const yamlBody = (req: ERequest, res: EResponse, next: NextFunction): void => {
    yamlParser(req, res, (error?: unknown) => {
      if (error == null) {
        next();
        return;
      }
      const type = (error as { type?: unknown }).type;
      next(
        type === "entity.too.large"
          ? new ApiError(
              "PayloadTooLarge",
              "The task graph is larger than 5 MiB; split it into several task groups.",
            )
          : new ApiError(
              "InputError",
              "The request body could not be read as UTF-8 YAML.",
              undefined,
              { cause: error },
            ),
      );
    });
  };

  router.post(
    "/task-groups",
    requireScopes("taskweb:task-group:create"),
    yamlBody,
    route(async (req, res) => {
      let graph: unknown;
      if (typeof req.body === "string" && req.is(YAML_MEDIA_TYPES as string[]) !== false) {
        const parsed = parseTaskGraphSource(req.body, "yaml");
        if (!parsed.ok) {
          throw new ApiError(
            "InputError",
            "The task graph could not be read; nothing was created.",
            {
              problems: parsed.problems,
            },
          );
        }
        graph = parsed.value;
      } else if (req.is("application/json") !== false && req.body !== undefined) {
        graph = req.body;
      } else {
        throw new ApiError(
          "UnsupportedMediaType",
          `Send the task graph as application/json or ${YAML_MEDIA_TYPES.join(", ")}.`,
        );
      }
      const result = await tasks.createTaskGroup(graph);
      res.status(result.created ? 201 : 200).json({
        taskGroupId: result.taskGroupId,
        tasks: result.tasks,
        created: result.created,
      });
    }),
  );

  router.get(
    "/task-groups/:taskGroupId",
    requireScopes("taskweb:task-group:read:<taskGroupId>"),
    route(async (req, res) => {
      const taskGroupId = String(req.params.taskGroupId);
      const view = await readTaskGroup(db, taskGroupId);
      if (view == null) {
        throw new ApiError(
          "ResourceNotFound",
          `No task group ${JSON.stringify(taskGroupId)} on this cluster; submit one with POST /api/v1/task-groups.`,
        );
      }
      res.json({ ...view, tasks: view.tasks.map((t) => ({ ...t, url: urls.task(t.taskId) })) });
    }),
  );
  return router;
}
