/**
 * API clients over real HTTP on loopback: tokens are checked (missing, unknown, rotated,
 * disabled, expired: 401), scopes are enforced (403 naming the missing scopes), roles,
 * parameterized roles and deny rules apply to clients and to remote clusters
 * (`actor:<url>` principals), and `whoami` answers what the web UI asks.
 */
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunningCluster } from "../../server/cluster.ts";
import { testBackends } from "../support/backends.ts";
import { startTestCluster, TEST_TOKEN, type TestCluster } from "../support/clusters.ts";

interface JsonResponse {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

describe("API clients and scopes on embedded", () => {
  let cluster: TestCluster;
  let C: RunningCluster;

  async function call(
    token: string | undefined,
    method: string,
    path: string,
    body?: unknown,
  ): Promise<JsonResponse> {
    const response = await fetch(`${C.urls.origin}/api/v1${path}`, {
      method,
      headers: {
        ...(token != null ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await response.text();
    return { status: response.status, body: text === "" ? {} : (JSON.parse(text) as never) };
  }

  beforeAll(async () => {
    const [embedded] = testBackends();
    if (embedded == null) throw new Error("no embedded backend");
    cluster = await startTestCluster(embedded, "auth");
    C = cluster.current();
  });
  afterAll(async () => {
    await cluster.destroy();
  });

  it("keeps the configured token as the root client holding *", async () => {
    const who = await call(TEST_TOKEN, "GET", "/whoami");
    expect(who).toEqual({ status: 200, body: { clientId: "admin", scopes: ["*"] } });
    expect(await C.auth.satisfies("client:admin", ["anything:at:all"])).toBe(true);
  });

  it("refuses a missing, unknown, rotated, disabled or expired token with 401", async () => {
    for (const token of [undefined, "", "tw_nope", `${TEST_TOKEN}x`]) {
      const r = await call(token, "GET", "/whoami");
      expect(r.status).toBe(401);
      expect(r.body.code).toBe("AuthenticationFailed");
    }
    const { token } = await C.auth.createClient({ clientId: "rotating", scopes: ["a"] });
    expect((await call(token, "GET", "/whoami")).status).toBe(200);
    const rotated = await C.auth.rotateClient("rotating");
    expect((await call(token, "GET", "/whoami")).status).toBe(401);
    expect((await call(rotated.token, "GET", "/whoami")).status).toBe(200);
    await C.auth.setClientDisabled("rotating", true);
    const disabled = await call(rotated.token, "GET", "/whoami");
    expect(disabled.status).toBe(401);
    expect(String(disabled.body.message)).toMatch(/disabled/);
    expect(await C.auth.satisfies("client:rotating", ["a"])).toBe(false);
    await C.auth.setClientDisabled("rotating", false);
    expect((await call(rotated.token, "GET", "/whoami")).status).toBe(200);

    const expired = await C.auth.createClient({
      clientId: "expired",
      scopes: ["*"],
      expires: new Date(Date.now() - 1000),
    });
    const r = await call(expired.token, "GET", "/cluster");
    expect(r.status).toBe(401);
    expect(String(r.body.message)).toMatch(/expired/);
    expect(await C.auth.satisfies("client:expired", ["taskweb:cluster:read"])).toBe(false);
  });

  it("stores only a hash of each token and records when a client was last used", async () => {
    const { token } = await C.auth.createClient({ clientId: "hashed", scopes: [] });
    expect((await call(token, "GET", "/whoami")).status).toBe(200);
    const { rows } = await sql<{ row: string }>`select t::text as row from auth_clients t`.execute(
      C.database.db,
    );
    expect(rows.length).toBeGreaterThan(0);
    expect(rows.some((r) => r.row.includes(token) || r.row.includes(token.slice(3)))).toBe(false);
    expect((await C.auth.getClient("hashed"))?.lastUsed).not.toBeNull();
  });

  it("answers 403 naming the missing scopes, and lets a client with them through", async () => {
    const { token } = await C.auth.createClient({
      clientId: "reader",
      scopes: ["taskweb:task:read:*", "taskweb:task:cancel:only-this"],
    });
    expect(await call(token, "GET", "/whoami")).toEqual({
      status: 200,
      body: {
        clientId: "reader",
        scopes: ["taskweb:task:read:*", "taskweb:task:cancel:only-this"],
      },
    });
    const denied = await call(token, "GET", "/tasks");
    expect(denied.status).toBe(403);
    expect(denied.body.code).toBe("InsufficientScopes");
    expect(denied.body.details).toEqual({
      clientId: "reader",
      required: ["taskweb:task:list"],
      missing: ["taskweb:task:list"],
    });
    expect(String(denied.body.message)).toContain("taskweb:task:list");
    // Per-resource scopes: the route parameter is part of the scope.
    expect((await call(token, "GET", "/tasks/no-such-task")).status).toBe(404);
    expect((await call(token, "POST", "/tasks/only-this/cancel")).status).toBe(404);
    const other = await call(token, "POST", "/tasks/another/cancel");
    expect(other.status).toBe(403);
    expect((other.body.details as { missing: string[] }).missing).toEqual([
      "taskweb:task:cancel:another",
    ]);
  });

  it("answers whoami/satisfies with one boolean per named check", async () => {
    const { token } = await C.auth.createClient({
      clientId: "ui",
      scopes: ["taskweb:task:rerun:*", "assume:viewer"],
    });
    await C.auth.setRole({ roleId: "viewer", scopes: ["taskweb:task:list"] });
    const r = await call(token, "POST", "/whoami/satisfies", {
      checks: {
        rerun: ["taskweb:task:rerun:abc"],
        list: ["taskweb:task:list"],
        both: ["taskweb:task:list", "taskweb:task:cancel:abc"],
        none: [],
      },
    });
    expect(r).toEqual({ status: 200, body: { rerun: true, list: true, both: false, none: true } });
    expect((await call(token, "POST", "/whoami/satisfies", { checks: ["x"] })).status).toBe(400);
    expect(
      (await call(token, "POST", "/whoami/satisfies", { checks: { a: "taskweb:task:list" } }))
        .status,
    ).toBe(400);
  });

  it("grants through roles and parameterized roles, and lets deny rules override", async () => {
    await C.auth.setRole({ roleId: "client:ops-*", scopes: ["taskweb:secret:set:<..>/*"] });
    const { token } = await C.auth.createClient({ clientId: "ops-web", scopes: [] });
    const put = (name: string) => call(token, "PUT", `/secrets/${name}`, { value: "a-value" });
    // The client implicitly assumes client:ops-web, which matches client:ops-* with "web".
    expect((await put("web/token")).status).not.toBe(403);
    expect((await put("api/token")).status).toBe(403);
    await C.auth.deny("client:ops-*", "taskweb:secret:set:web/prod*");
    const denied = await put("web/prod-key");
    expect(denied.status).toBe(403);
    expect((denied.body.details as { missing: string[] }).missing).toEqual([
      "taskweb:secret:set:web/prod-key",
    ]);
    // The root client is never denied.
    expect(await C.auth.satisfies("client:admin", ["taskweb:secret:set:web/prod-key"])).toBe(true);
  });

  it("checks remote clusters as actor: principals through grants and roles", async () => {
    const actor = "actor:https://hw.example/clusters/lab";
    expect(await C.auth.satisfies(actor, ["taskweb:hook:trigger:flash"])).toBe(false);
    await C.auth.grant(actor, ["taskweb:hook:trigger:flash"]);
    expect(await C.auth.satisfies(actor, ["taskweb:hook:trigger:flash"])).toBe(true);
    expect(await C.auth.satisfies(actor, ["taskweb:hook:trigger:other"])).toBe(false);
    await C.auth.setRole({
      roleId: "actor:https://hw.example/*",
      scopes: ["taskweb:artifact:read:*"],
    });
    expect(await C.auth.satisfies(actor, ["taskweb:artifact:read:x"])).toBe(true);
    expect(
      await C.auth.satisfies("actor:https://other.example/c", ["taskweb:artifact:read:x"]),
    ).toBe(false);
    expect(await C.auth.revoke(actor)).toBe(1);
    expect(await C.auth.satisfies(actor, ["taskweb:hook:trigger:flash"])).toBe(false);
  });
});
