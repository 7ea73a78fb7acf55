/**
 * Every REST route declares its scopes, and they are enforced. The test lists the routes of
 * a real running cluster by walking its Express router stack (so routes added later are
 * walked too), fails on an `/api/v1` route without a declaration, then calls every route as
 * clients that lack its scopes — one with no scopes at all, one with every other route's
 * scopes and the same scopes for other resources — and proves each gets 403 and that
 * nothing changed (every table, the embedded queue's jobs included). A client holding
 * exactly the declared scopes (and any scopes the request hands out) gets past authorization
 * on every route.
 */
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunningCluster } from "../../server/cluster.ts";
import { scopeCovers } from "../../server/domain/scopes.ts";
import { expandScopeTemplate, isScopedHandler } from "../../server/http/scopes.ts";
import { testBackends } from "../support/backends.ts";
import {
  startTestCluster,
  TEST_TOKEN,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";

/** A route as the walk finds it. */
interface WalkedRoute {
  readonly method: string;
  readonly path: string;
  /** Declared scopes, or undefined when the route has no {@link requireScopes}. */
  readonly scopes: readonly string[] | undefined;
}

interface RouterLayer {
  readonly route?: {
    readonly path: string;
    readonly methods: Record<string, boolean>;
    readonly stack: readonly { readonly handle: unknown }[];
  };
  readonly handle: { readonly stack?: readonly RouterLayer[] };
  readonly rawPath?: unknown;
  readonly slash?: boolean;
}

/** Every route of an Express 5 app, with the path of the routers it is mounted under. */
function walkRoutes(stack: readonly RouterLayer[], prefix = ""): WalkedRoute[] {
  const found: WalkedRoute[] = [];
  for (const layer of stack) {
    if (layer.route != null) {
      const scoped = layer.route.stack.map((l) => l.handle).find(isScopedHandler);
      for (const [method, on] of Object.entries(layer.route.methods)) {
        if (!on || method === "_all") continue;
        found.push({
          method: method.toUpperCase(),
          path: prefix + layer.route.path,
          scopes: scoped?.requiredScopes,
        });
      }
    } else if (layer.handle.stack != null) {
      const mount = typeof layer.rawPath === "string" && layer.slash !== true ? layer.rawPath : "";
      found.push(...walkRoutes(layer.handle.stack, prefix + mount));
    }
  }
  return found;
}

/** Routes any authenticated client may call: they say who the caller is, nothing more. */
const OPEN_TO_EVERY_CLIENT = ["GET /api/v1/whoami", "POST /api/v1/whoami/satisfies"];

/** Served to anyone, without a token (test/api/openapi.test.ts proves it): no scopes apply. */
const PUBLIC_WITHOUT_TOKEN = ["GET /api/v1/openapi.json"];

/** The value given to each route parameter: resources the fixtures create. */
const PARAMETER_VALUES: Record<string, string> = {
  taskId: "walk-task",
  runId: "0",
  taskGroupId: "walk-group",
  name: "walk/secret",
  clientId: "walk-client",
  roleId: "walk-role",
};
const WALK_ACTOR = "actor:https://walk.example/clusters/c";
/** A follow request waiting for approval, from a cluster that does not exist. */
const PENDING_FOLLOWER = "http://127.0.0.1:9/clusters/pending";

/** Query strings and bodies that would act, were authorization skipped. */
const REQUESTS: Record<string, { query?: string; body?: unknown; handsOut?: string[] }> = {
  "POST /api/v1/tasks": { body: { taskId: "walk-new", payload: { command: ["true"] } } },
  "POST /api/v1/tasks/:taskId/resolve": { body: { state: "completed" } },
  "POST /api/v1/following": { body: { actor: "http://127.0.0.1:9/clusters/none" } },
  "DELETE /api/v1/following": { query: "actor=http://127.0.0.1:9/clusters/none" },
  "POST /api/v1/task-groups": {
    body: { taskGroupId: "walk-new-group", tasks: [{ taskId: "walk-g1", command: ["true"] }] },
  },
  "PUT /api/v1/secrets/*name": { body: { value: "walk-value-1234" } },
  "PUT /api/v1/clients/:clientId": { body: { scopes: [] } },
  "POST /api/v1/clients/:clientId/scopes": { body: { scopes: ["x"] }, handsOut: ["x"] },
  "PUT /api/v1/roles/*roleId": { body: { scopes: ["y"] }, handsOut: ["y"] },
  "POST /api/v1/grants": { body: { principal: WALK_ACTOR, scopes: ["z"] }, handsOut: ["z"] },
  "DELETE /api/v1/grants": { query: `principal=${encodeURIComponent(WALK_ACTOR)}` },
  "POST /api/v1/deny-rules": { body: { principal: "client:walk-*", scope: "w" } },
  "POST /api/v1/followers/approve": { body: { actor: PENDING_FOLLOWER } },
  "POST /api/v1/followers/reject": { body: { actor: PENDING_FOLLOWER } },
  "PUT /api/v1/federation/policy": { body: { acceptance: "allowlist" } },
  "POST /api/v1/federation/allowlist": { body: { actor: "https://walk-new.example" } },
  "DELETE /api/v1/federation/allowlist": { query: "actor=https://walk.example" },
  "POST /api/v1/federation/blocklist": { body: { actor: "http://127.0.0.1:9" } },
  "DELETE /api/v1/federation/blocklist": { query: "actor=https://walk-blocked.example" },
  "DELETE /api/v1/deny-rules": {
    query: `principal=${encodeURIComponent("client:walk-client")}&scope=walk-denied`,
  },
};

function concretePath(path: string): string {
  return path.replace(/[:*]([A-Za-z_][A-Za-z0-9_]*)/g, (_m, name: string) =>
    (PARAMETER_VALUES[name] ?? "walk").split("/").map(encodeURIComponent).join("/"),
  );
}

function concreteParams(path: string): Record<string, string> {
  const params: Record<string, string> = {};
  for (const m of path.matchAll(/[:*]([A-Za-z_][A-Za-z0-9_]*)/g)) {
    const name = m[1] as string;
    params[name] = PARAMETER_VALUES[name] ?? "walk";
  }
  return params;
}

/** The scopes a route requires when called with {@link PARAMETER_VALUES}. */
function requiredFor(route: WalkedRoute): string[] {
  const params = concreteParams(route.path);
  return (route.scopes ?? []).map((s) => expandScopeTemplate(s, params));
}

/** The same scopes for another resource: `taskweb:task:cancel:walk-task` → `…:other`. */
function forOtherResources(route: WalkedRoute): string[] {
  const other = Object.fromEntries(
    Object.keys(concreteParams(route.path)).map((k) => [k, `other-${k}`]),
  );
  return (route.scopes ?? []).map((s) => expandScopeTemplate(s, other));
}

describe("route scopes on embedded", () => {
  let cluster: TestCluster;
  let C: RunningCluster;
  let routes: WalkedRoute[];

  async function call(token: string, route: WalkedRoute) {
    const key = `${route.method} ${route.path}`;
    const extra = REQUESTS[key] ?? {};
    const body =
      extra.body ?? (["POST", "PUT", "PATCH"].includes(route.method) ? { walk: true } : undefined);
    const url = `${C.urls.origin}${concretePath(route.path)}${extra.query != null ? `?${extra.query}` : ""}`;
    const response = await fetch(url, {
      method: route.method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await response.text();
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      // Not JSON (metrics, logs): the status says enough.
    }
    return { status: response.status, body: json };
  }

  async function admin(method: string, path: string, body?: unknown): Promise<void> {
    const response = await fetch(`${C.urls.origin}/api/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${TEST_TOKEN}`, "content-type": "application/json" },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    expect(response.status, `${method} ${path}`).toBeLessThan(300);
  }

  /** Every row of every table, as PostgreSQL prints rows. */
  async function everything(): Promise<Record<string, string[]>> {
    const db = C.database.db;
    const { rows: tables } = await sql<{ name: string }>`
      select table_name as name from information_schema.tables
      where table_schema = current_schema() and table_type = 'BASE TABLE'
      order by table_name`.execute(db);
    const result: Record<string, string[]> = {};
    for (const { name } of tables) {
      // Authenticating a client records when it was last used; nothing else may move.
      const { rows } =
        name === "auth_clients"
          ? await sql<{ row: string }>`select (client_id, token_hash, scopes, expires_at,
              disabled, rotated_at, description)::text as row from auth_clients`.execute(db)
          : await sql<{ row: string }>`select t::text as row from ${sql.table(name)} t`.execute(db);
      result[name] = rows.map((r) => r.row).sort();
    }
    return result;
  }

  beforeAll(async () => {
    const [embedded] = testBackends();
    if (embedded == null) throw new Error("no embedded backend");
    cluster = await startTestCluster(embedded, "scopes");
    C = cluster.current();
    routes = walkRoutes((C.app as unknown as { router: { stack: RouterLayer[] } }).router.stack);

    // Resources every route's parameters name, so that a route that let the request through
    // would change something visible.
    await admin("POST", "/tasks", { taskId: "walk-task", payload: { command: ["true"] } });
    expect(await waitForResolution(C, "walk-task")).toBe("completed");
    await admin("PUT", "/secrets/walk/secret", { value: "walk-secret-value" });
    await C.auth.createClient({ clientId: "walk-client", scopes: ["a"] });
    await C.auth.setRole({ roleId: "walk-role", scopes: ["b"] });
    await C.auth.grant(WALK_ACTOR, ["c"]);
    await C.auth.deny("client:walk-client", "walk-denied");
    await C.followPolicy.add("allow", "https://walk.example");
    await C.followPolicy.add("block", "https://walk-blocked.example");
    await C.database.db
      .insertInto("followers")
      .values({
        actor_id: PENDING_FOLLOWER,
        inbox: `${PENDING_FOLLOWER}/inbox`,
        shared_inbox: null,
        follow_id: `${PENDING_FOLLOWER}#follows/1`,
        state: "pending",
        updated_at: new Date(),
      })
      .execute();
    // Let the task's publication and any queued work settle.
    let last = "";
    await waitFor("the cluster to settle", async () => {
      const now = JSON.stringify(await everything());
      const settled = now === last;
      last = now;
      await new Promise((r) => setTimeout(r, 300));
      return settled ? true : undefined;
    });
  });
  afterAll(async () => {
    await cluster.destroy();
  });

  it("finds every route, and a declaration on each /api/v1 route", () => {
    const api = routes.filter(
      (r) =>
        r.path.startsWith("/api/v1/") && !PUBLIC_WITHOUT_TOKEN.includes(`${r.method} ${r.path}`),
    );
    // The walk must see the routes known today; new ones join automatically.
    expect(api.map((r) => `${r.method} ${r.path}`)).toEqual(
      expect.arrayContaining([
        "GET /api/v1/cluster",
        "POST /api/v1/tasks",
        "POST /api/v1/tasks/:taskId/rerun",
        "POST /api/v1/task-groups",
        "PUT /api/v1/secrets/*name",
        "PUT /api/v1/clients/:clientId",
        "PUT /api/v1/roles/*roleId",
        "POST /api/v1/grants",
        "POST /api/v1/followers/approve",
        "PUT /api/v1/federation/policy",
      ]),
    );
    const undeclared = api.filter((r) => r.scopes == null).map((r) => `${r.method} ${r.path}`);
    expect(undeclared).toEqual([]);
    const open = api.filter((r) => r.scopes?.length === 0).map((r) => `${r.method} ${r.path}`);
    expect(open.sort()).toEqual([...OPEN_TO_EVERY_CLIENT].sort());
    expect(routes.find((r) => r.path === "/metrics")?.scopes).toEqual(["taskweb:metrics:read"]);
  });

  it("answers 403 to clients lacking a route's scopes on every route, and changes nothing", async () => {
    const guarded = routes.filter((r) => (r.scopes?.length ?? 0) > 0);
    expect(guarded.length).toBeGreaterThan(20);
    const everyScope = guarded.flatMap((r) => [...requiredFor(r), ...forOtherResources(r)]);
    const clients: { route: WalkedRoute; tokens: string[] }[] = [];
    for (const [i, route] of guarded.entries()) {
      const required = requiredFor(route);
      const nearMiss = everyScope.filter((s) => !required.some((r) => scopeCovers(s, r)));
      const none = await C.auth.createClient({ clientId: `lacking-${i}`, scopes: [] });
      const near = await C.auth.createClient({ clientId: `near-${i}`, scopes: nearMiss });
      clients.push({ route, tokens: [none.token, near.token] });
    }
    const before = await everything();
    for (const { route, tokens } of clients) {
      for (const token of tokens) {
        const response = await call(token, route);
        expect({ route: `${route.method} ${route.path}`, status: response.status }).toEqual({
          route: `${route.method} ${route.path}`,
          status: 403,
        });
        if (route.path.startsWith("/api/v1/")) {
          expect(response.body.code).toBe("InsufficientScopes");
          expect((response.body.details as { missing: string[] }).missing).toEqual(
            requiredFor(route),
          );
        }
      }
    }
    expect(await everything()).toEqual(before);
  });

  it("lets a client holding exactly the declared scopes past authorization on every route", async () => {
    const guarded = routes.filter((r) => (r.scopes?.length ?? 0) > 0);
    const refused: string[] = [];
    for (const [i, route] of guarded.entries()) {
      const holder = await C.auth.createClient({
        clientId: `holder-${i}`,
        // Handing out a scope needs it too (no escalation through the API).
        scopes: [
          ...requiredFor(route),
          ...(REQUESTS[`${route.method} ${route.path}`]?.handsOut ?? []),
        ],
      });
      const response = await call(holder.token, route);
      if (response.status === 401 || response.status === 403) {
        refused.push(
          `${route.method} ${route.path}: ${response.status} ${JSON.stringify(response.body)}`,
        );
      }
    }
    expect(refused).toEqual([]);
  });
});
