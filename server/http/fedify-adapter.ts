/**
 * Express ⇄ Fedify. Fedify works on web `Request`/`Response`; this converts at the edge and,
 * unlike `@fedify/express`, catches every failure so that one bad request can never take
 * the process down. Inbox POSTs arrive here already buffered and checked by the inbox guard.
 * @module
 */
import type { Federation } from "@fedify/fedify";
import { getLogger } from "@logtape/logtape";
import type { NextFunction, Request as ERequest, Response as EResponse } from "express";

const logger = getLogger(["taskweb", "http", "fedify"]);

/** Builds the web `Request` for an Express request, on this cluster's own origin. */
export function toWebRequest(req: ERequest, origin: string, body?: Uint8Array): Request {
  const headers = new Headers();
  for (const [key, value] of Object.entries(req.headers)) {
    for (const v of [value].flat()) if (typeof v === "string") headers.append(key, v);
  }
  const init: RequestInit = { method: req.method, headers };
  if (body != null && req.method !== "GET" && req.method !== "HEAD") {
    init.body = body as BodyInit;
  }
  return new Request(`${origin}${req.originalUrl}`, init);
}

/**
 * True for the errors that reading untrusted JSON-LD throws (a value of the wrong shape, a
 * bad IRI, an invalid context), as opposed to a failure of this cluster (its database).
 */
export function isMalformedInput(error: unknown): boolean {
  if (error instanceof TypeError || error instanceof SyntaxError || error instanceof RangeError) {
    return true;
  }
  const name = (error as { name?: unknown } | null)?.name;
  return typeof name === "string" && name.startsWith("jsonld.");
}

/** Express middleware that serves what Fedify routes and passes everything else on. */
export function fedifyMiddleware(federation: Federation<null>, origin: string) {
  return (req: ERequest, res: EResponse, next: NextFunction): void => {
    const body = (req as ERequest & { rawBody?: Uint8Array }).rawBody;
    let request: Request;
    try {
      request = toWebRequest(req, origin, body);
    } catch (error) {
      next(error);
      return;
    }
    let passed = false;
    federation
      .fetch(request, {
        contextData: null,
        onNotFound: () => {
          passed = true;
          next();
          return new Response(null, { status: 404 });
        },
        onNotAcceptable: () => {
          passed = true;
          next();
          return new Response(null, { status: 406 });
        },
      })
      .then(async (response) => {
        if (passed) return;
        res.status(response.status);
        response.headers.forEach((value, key) => res.setHeader(key, value));
        res.end(Buffer.from(await response.arrayBuffer()));
      })
      .catch((error: unknown) => {
        logger.error("Federation request {method} {url} failed: {error}", {
          method: req.method,
          url: req.originalUrl,
          error: String(error),
        });
        if (passed || res.headersSent) return;
        // An activity the inbox guard let through (its signature verified) that the
        // ActivityPub library then fails to read is the sender's error: 400 stops its
        // retries, where 500 would ask for them forever.
        if (req.method === "POST" && "rawBody" in req && isMalformedInput(error)) {
          res.status(400).json({
            code: "malformed",
            message: "The activity could not be read as ActivityStreams JSON-LD.",
          });
          return;
        }
        res.status(500).json({ code: "InternalServerError", message: "The request failed." });
      });
  };
}
