/**
 * `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of the REST API (server/http/openapi.json).
 * It is public, like the actor document: it describes routes, not data, and tools such as
 * API explorers and client generators fetch it without a token. test/api/openapi.test.ts
 * holds it to the routes the cluster really serves and the scopes they declare.
 * @module
 */
import express from "express";
import openApiDocument from "./openapi.json" with { type: "json" };

/** The document as served. */
export const OPENAPI_DOCUMENT: Readonly<Record<string, unknown>> = openApiDocument;

/** The route serving the document; mount it on the app before the API's authentication. */
export function openApiRoutes(): express.Router {
  const router = express.Router();
  router.get("/api/v1/openapi.json", (_req, res) => {
    res.setHeader("Cache-Control", "public, max-age=300");
    res.json(OPENAPI_DOCUMENT);
  });
  return router;
}
