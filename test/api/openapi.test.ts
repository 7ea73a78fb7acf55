/**
 * The OpenAPI document against the routes a running cluster really serves: every REST and
 * operational route is in the document with the scopes its handler declares (`x-scopes`,
 * from `requireScopes`), and the document names no route that does not exist. Routes are
 * read from the Express router stack, so a route added anywhere is seen.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OPENAPI_DOCUMENT } from "../../server/http/openapi-routes.ts";
import { testBackends } from "../support/backends.ts";
import { startTestCluster, type TestCluster } from "../support/clusters.ts";

const backend = testBackends().at(-1)!;

/** Where the document applies: the REST API and the operational endpoints. */
function documented(path: string): boolean {
  return path.startsWith("/api/v1/") || ["/metrics", "/healthz", "/readyz"].includes(path);
}

const HTTP_METHODS = ["get", "put", "post", "delete", "patch", "options", "head", "trace"];

interface Layer {
  rawPath?: unknown;
  route?: { methods: Record<string, boolean>; stack: { handle: { requiredScopes?: unknown } }[] };
  handle?: { stack?: Layer[] };
}

interface ServedRoute {
  readonly key: string;
  readonly scopes: readonly string[] | undefined;
}

/** Every (method, path) of the router stack, paths in OpenAPI form (`{param}`). */
function servedRoutes(stack: readonly Layer[], prefix = ""): ServedRoute[] {
  const routes: ServedRoute[] = [];
  for (const layer of stack) {
    const raw = layer.rawPath;
    if (layer.route == null && !Array.isArray(layer.handle?.stack)) continue;
    if (typeof raw !== "string")
      throw new Error(`A route path that is not a string: ${String(raw)}`);
    const path = `${prefix}${raw === "/" && layer.route == null ? "" : raw}`;
    if (layer.route != null) {
      const declared = layer.route.stack
        .map((l) => l.handle.requiredScopes)
        .find((s): s is string[] => Array.isArray(s));
      const openApiPath = path.replace(/[:*]([A-Za-z_]\w*)/g, "{$1}");
      for (const method of Object.keys(layer.route.methods)) {
        if (method === "_all") throw new Error(`${path} answers every method; list them.`);
        routes.push({ key: `${method.toUpperCase()} ${openApiPath}`, scopes: declared });
      }
    } else {
      routes.push(...servedRoutes(layer.handle!.stack!, path));
    }
  }
  return routes;
}

describe("the OpenAPI document", () => {
  let cluster: TestCluster;

  beforeAll(async () => {
    cluster = await startTestCluster(backend, "openapi");
  }, 120_000);
  afterAll(async () => {
    await cluster?.destroy();
  });

  it("lists every route the cluster serves with its scopes, and nothing else", () => {
    const app = cluster.current().app as unknown as { router: { stack: Layer[] } };
    const served = servedRoutes(app.router.stack).filter((r) =>
      documented(r.key.slice(r.key.indexOf(" ") + 1)),
    );
    expect(served.length).toBeGreaterThan(20);
    const paths = OPENAPI_DOCUMENT.paths as Record<string, Record<string, Record<string, unknown>>>;
    const inDocument = new Map<string, Record<string, unknown>>();
    for (const [path, item] of Object.entries(paths)) {
      for (const [method, operation] of Object.entries(item)) {
        if (HTTP_METHODS.includes(method))
          inDocument.set(`${method.toUpperCase()} ${path}`, operation);
      }
    }
    const servedKeys = new Set(served.map((r) => r.key));
    const missing = [...servedKeys].filter((k) => !inDocument.has(k)).sort();
    const extra = [...inDocument.keys()].filter((k) => !servedKeys.has(k)).sort();
    expect({ missing, extra }).toEqual({ missing: [], extra: [] });

    const wrongScopes = served.flatMap((r) => {
      const documentedScopes = inDocument.get(r.key)?.["x-scopes"];
      return JSON.stringify(documentedScopes) === JSON.stringify(r.scopes)
        ? []
        : [
            `${r.key}: declares ${JSON.stringify(r.scopes)}, documented ${JSON.stringify(documentedScopes)}`,
          ];
    });
    expect(wrongScopes).toEqual([]);
    // The stats route is one that declares scopes, so the comparison above compares something.
    expect(served.find((r) => r.key === "GET /api/v1/stats")?.scopes).toEqual([
      "taskweb:stats:read",
    ]);

    const ids = [...inDocument.values()].map((o) => o.operationId);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("is served without a token, as OpenAPI 3.1", async () => {
    const response = await fetch(`${cluster.current().urls.origin}/api/v1/openapi.json`);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^application\/json/);
    const body = (await response.json()) as Record<string, unknown>;
    expect(body).toEqual(OPENAPI_DOCUMENT);
    expect(body.openapi).toBe("3.1.0");
    // The rest of the API still needs the token.
    const other = await fetch(`${cluster.current().urls.origin}/api/v1/cluster`);
    expect(other.status).toBe(401);
  });
});
