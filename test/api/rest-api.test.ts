/**
 * The cluster's HTTP surface as a client sees it, over real HTTP on loopback: the REST API
 * under /api/v1 (token, creation with idempotency and conflicts, errors with their codes),
 * the public documents (task, actor, outbox pages), WebFinger, NodeInfo and health checks.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseTaskGroupObject, parseTaskObject } from "../../protocol/index.ts";
import type { RunningCluster } from "../../server/cluster.ts";
import { OUTBOX_PAGE_SIZE } from "../../server/federation/federation.ts";
import { describeEachBackend } from "../support/backends.ts";
import {
  snapshot,
  startTestCluster,
  TEST_TOKEN,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";

const AS = "application/activity+json";

function uid(label: string): string {
  return `${label}-${randomBytes(4).toString("hex")}`;
}

/** The id of a JSON-LD node given either as an IRI or as an object with an id. */
function idOf(node: unknown): string | undefined {
  if (typeof node === "string") return node;
  if (typeof node === "object" && node !== null && "id" in node) {
    const id = (node as { id: unknown }).id;
    return typeof id === "string" ? id : undefined;
  }
  return undefined;
}

interface JsonResponse {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Record<string, unknown>;
}

describeEachBackend("REST API", (backend) => {
  let cluster: TestCluster;
  let gates: string;
  let C: RunningCluster;
  let base: string;

  beforeAll(async () => {
    gates = await mkdtemp(join(tmpdir(), "taskweb-api-gates-"));
    cluster = await startTestCluster(backend, "api");
    C = cluster.current();
    base = `http://127.0.0.1:${C.port}`;
  });
  afterAll(async () => {
    await cluster?.destroy();
    await rm(gates, { recursive: true, force: true });
  });

  async function api(
    method: string,
    path: string,
    options: { body?: unknown; raw?: string; token?: string | null; headers?: HeadersInit } = {},
  ): Promise<JsonResponse> {
    const headers = new Headers(options.headers);
    const token = options.token === undefined ? TEST_TOKEN : options.token;
    if (token != null) headers.set("authorization", `Bearer ${token}`);
    let body: string | undefined = options.raw;
    if (options.body !== undefined) body = JSON.stringify(options.body);
    if (body !== undefined && !headers.has("content-type"))
      headers.set("content-type", "application/json");
    const response = await fetch(`${base}/api/v1${path}`, {
      method,
      headers,
      ...(body !== undefined ? { body } : {}),
    });
    const text = await response.text();
    let parsed: Record<string, unknown> = {};
    if ((response.headers.get("content-type") ?? "").includes("json") && text !== "") {
      parsed = JSON.parse(text) as Record<string, unknown>;
    }
    return { status: response.status, headers: response.headers, body: parsed };
  }

  /** Waits until no task is left to run, so that a snapshot sees only what a request changed. */
  async function settled(): Promise<void> {
    await waitFor("every task to resolve", async () => {
      const counts = await C.tasks.countByState();
      return (counts.unscheduled ?? 0) + (counts.pending ?? 0) + (counts.running ?? 0) === 0
        ? true
        : undefined;
    });
  }

  async function getJson(url: string, accept = AS): Promise<JsonResponse> {
    const response = await fetch(url, { headers: { accept } });
    const text = await response.text();
    return {
      status: response.status,
      headers: response.headers,
      body: text === "" ? {} : (JSON.parse(text) as Record<string, unknown>),
    };
  }

  describe("authentication", () => {
    const routes: [string, string, unknown?][] = [
      ["GET", "/cluster"],
      ["POST", "/tasks", { taskId: "unauthorised", payload: { command: ["true"] } }],
      ["GET", "/tasks"],
      ["GET", "/tasks/unauthorised"],
      ["GET", "/tasks/unauthorised/runs/0/log"],
      ["POST", "/tasks/unauthorised/cancel"],
      ["POST", "/tasks/unauthorised/rerun"],
      ["POST", "/tasks/unauthorised/activate"],
      ["POST", "/tasks/unauthorised/resolve", { state: "completed" }],
      ["POST", "/task-groups", { taskGroupId: "unauthorised", tasks: [] }],
      ["GET", "/task-groups/unauthorised"],
      ["POST", "/following", { actor: "http://127.0.0.1:9/clusters/x" }],
      ["DELETE", "/following?actor=http%3A%2F%2F127.0.0.1%3A9%2Fclusters%2Fx"],
      ["GET", "/following"],
      ["GET", "/followers"],
      ["PUT", "/secrets/unauthorised", { value: "not stored" }],
      ["GET", "/secrets"],
      ["DELETE", "/secrets/unauthorised"],
      ["GET", "/no-such-route"],
    ];
    const credentials: [string, Record<string, string>][] = [
      ["no Authorization header", {}],
      ["a wrong token", { authorization: "Bearer wrong-token-0123456789" }],
      [
        "the token minus its last character",
        { authorization: `Bearer ${TEST_TOKEN.slice(0, -1)}` },
      ],
      ["the token with another scheme", { authorization: `Basic ${TEST_TOKEN}` }],
      ["an empty Bearer token", { authorization: "Bearer " }],
    ];

    it("answers 401 AuthenticationFailed on every route without the right token, and changes nothing", async () => {
      await settled();
      const before = await snapshot(C);
      for (const [method, path, body] of routes) {
        for (const [what, headers] of credentials) {
          const response = await api(method, path, { token: null, headers, body });
          expect({ method, path, what, status: response.status }).toEqual({
            method,
            path,
            what,
            status: 401,
          });
          expect(response.body).toMatchObject({ code: "AuthenticationFailed" });
          expect(String(response.body.message)).toMatch(/Bearer/);
          expect(response.headers.get("www-authenticate")).toMatch(/^Bearer/);
        }
      }
      expect(await snapshot(C)).toEqual(before);
    });

    it("answers 401, not 413, to an oversized body sent without the token", async () => {
      const response = await api("POST", "/tasks", {
        token: null,
        raw: JSON.stringify({ filler: "x".repeat(2 * 1024 * 1024) }),
      });
      expect(response.status).toBe(401);
    });
  });

  describe("POST /api/v1/tasks", () => {
    it("answers 201 for a new task, 200 for an identical repeat and 409 for a different definition", async () => {
      const taskId = uid("create");
      const definition = {
        taskId,
        name: "created over HTTP",
        payload: { command: ["sh", "-c", "exit 0"], env: { B: "2", A: "1" } },
        retries: 2,
      };
      const first = await api("POST", "/tasks", { body: definition });
      expect(first.status).toBe(201);
      expect(first.body).toMatchObject({ taskId, url: C.urls.task(taskId), created: true });
      expect(["pending", "running", "completed"]).toContain(first.body.state);

      const repeat = await api("POST", "/tasks", { body: definition });
      expect(repeat.status).toBe(200);
      expect(repeat.body).toMatchObject({ taskId, url: C.urls.task(taskId), created: false });

      const different = await api("POST", "/tasks", {
        body: { ...definition, payload: { command: ["sh", "-c", "exit 1"] } },
      });
      expect(different.status).toBe(409);
      expect(different.body).toMatchObject({ code: "RequestConflict" });
      expect(String(different.body.message)).toContain(taskId);
      const stored = await C.tasks.getTask(taskId);
      expect((stored!.task.definition as { payload: unknown }).payload).toEqual({
        command: ["sh", "-c", "exit 0"],
        env: { B: "2", A: "1" },
        maxRunTime: 3600,
      });
    });

    it("generates a taskId when the definition has none", async () => {
      const response = await api("POST", "/tasks", { body: { payload: { command: ["true"] } } });
      expect(response.status).toBe(201);
      expect(response.body.taskId).toMatch(/^[A-Za-z0-9_-]{22}$/);
      expect(await C.tasks.getTask(String(response.body.taskId))).toBeDefined();
    });

    it("answers 400 InputError naming every bad field, and creates nothing", async () => {
      await settled();
      const before = await snapshot(C);
      const response = await api("POST", "/tasks", {
        body: {
          taskId: "not valid!",
          payload: { command: [], maxRunTime: 0 },
          inputs: [{ task: "x", artifact: "a", path: "../escape" }],
          colour: "blue",
        },
      });
      expect(response.status).toBe(400);
      expect(response.body.code).toBe("InputError");
      const problems = (response.body.details as { problems: { field: string; message: string }[] })
        .problems;
      expect(problems.map((p) => p.field)).toEqual(
        expect.arrayContaining([
          "colour",
          "taskId",
          "payload.command",
          "payload.maxRunTime",
          "inputs[0].path",
        ]),
      );
      for (const p of problems) expect(p.message).not.toBe("");
      expect(await snapshot(C)).toEqual(before);
    });

    it("answers 400 InputError naming a local dependency that does not exist", async () => {
      const missing = uid("missing");
      const response = await api("POST", "/tasks", {
        body: { dependencies: [missing], payload: { command: ["true"] } },
      });
      expect(response.status).toBe(400);
      expect(response.body.code).toBe("InputError");
      expect(JSON.stringify(response.body.details)).toContain(missing);
    });

    it("answers 400 InputError for a body that is not JSON", async () => {
      const response = await api("POST", "/tasks", { raw: '{"taskId": "broken", ' });
      expect(response.status).toBe(400);
      expect(response.body).toMatchObject({ code: "InputError" });
      expect(String(response.body.message)).toMatch(/JSON/);
    });

    it("answers 413 PayloadTooLarge for a body over 1 MiB", async () => {
      await settled();
      const before = await snapshot(C);
      const response = await api("POST", "/tasks", {
        body: {
          taskId: uid("huge"),
          payload: { command: ["echo", "x".repeat(1024 * 1024 + 1)] },
        },
      });
      expect(response.status).toBe(413);
      expect(response.body).toMatchObject({ code: "PayloadTooLarge" });
      expect(await snapshot(C)).toEqual(before);
    });
  });

  describe("reading tasks", () => {
    it("answers 404 ResourceNotFound for a task that does not exist", async () => {
      const missing = uid("nope");
      for (const path of [`/tasks/${missing}`, `/tasks/${missing}/runs/0/log`]) {
        const response = await api("GET", path);
        expect(response.status).toBe(404);
        expect(response.body).toMatchObject({ code: "ResourceNotFound" });
      }
      const document = await getJson(C.urls.task(missing));
      expect(document.status).toBe(404);
      expect(document.body).toMatchObject({ code: "ResourceNotFound" });
    });

    it("serves a task document that parses and follows the task's state", async () => {
      const taskId = uid("doc");
      const gate = join(gates, taskId);
      const created = await api("POST", "/tasks", {
        body: {
          taskId,
          payload: {
            command: [
              "sh",
              "-c",
              'while [ ! -f "$GATE" ]; do sleep 0.02; done; echo done > "$TASKWEB_ARTIFACTS/out.txt"',
            ],
            env: { GATE: gate },
          },
        },
      });
      expect(created.status).toBe(201);
      const url = C.urls.task(taskId);

      await waitFor(`${taskId} to run`, async () =>
        (await C.tasks.getTask(taskId))?.task.state === "running" ? true : undefined,
      );
      const running = await getJson(url);
      expect(running.status).toBe(200);
      expect(running.headers.get("content-type")).toContain(AS);
      const whileRunning = parseTaskObject(running.body, { fetchedFrom: url });
      expect(whileRunning.ok && whileRunning.value).toMatchObject({
        id: url,
        attributedTo: C.urls.actor,
        taskState: "running",
        runId: 0,
        artifacts: [],
      });

      await writeFile(gate, "");
      expect(await waitForResolution(C, taskId)).toBe("completed");
      const done = parseTaskObject((await getJson(url)).body, { fetchedFrom: url });
      expect(done.ok).toBe(true);
      if (!done.ok) return;
      expect(done.value).toMatchObject({ id: url, taskState: "completed", runId: 0 });
      expect(done.value.resolved).toBeDefined();
      expect(done.value.artifacts.map((a) => [a.name, a.id])).toEqual([
        ["out.txt", C.urls.artifact(taskId, "out.txt")],
      ]);

      // The API's own view agrees, and serves the run's log.
      const view = await api("GET", `/tasks/${taskId}`);
      expect(view.status).toBe(200);
      expect(view.body).toMatchObject({ task_id: taskId, state: "completed" });
      expect((view.body.runs as { state: string }[]).map((r) => r.state)).toEqual(["completed"]);
      const log = await fetch(`${base}/api/v1/tasks/${taskId}/runs/0/log`, {
        headers: { authorization: `Bearer ${TEST_TOKEN}` },
      });
      expect(log.status).toBe(200);
      expect(log.headers.get("content-type")).toContain("text/plain");
    });

    it("lists tasks newest first, filtered by state", async () => {
      const taskId = uid("listed");
      await api("POST", "/tasks", {
        body: { taskId, payload: { command: ["sh", "-c", "exit 4"] } },
      });
      expect(await waitForResolution(C, taskId)).toBe("failed");
      const all = await api("GET", "/tasks");
      const ids = (all.body.tasks as { task_id: string }[]).map((t) => t.task_id);
      expect(ids[0]).toBe(taskId);
      const failed = await api("GET", "/tasks?state=failed");
      const states = (failed.body.tasks as { state: string; task_id: string }[]).map(
        (t) => t.state,
      );
      expect(states.length).toBeGreaterThan(0);
      expect(new Set(states)).toEqual(new Set(["failed"]));
    });

    it("describes the cluster at /api/v1/cluster", async () => {
      const response = await api("GET", "/cluster");
      expect(response.status).toBe(200);
      expect(response.body).toMatchObject({
        name: "api",
        actor: C.urls.actor,
        database: C.database.kind,
        queue: C.jobs.kind,
      });
      const counts = response.body.tasks as Record<string, number>;
      expect(counts).toEqual(await C.tasks.countByState());
    });
  });

  describe("breakpoint tasks and task groups", () => {
    it("resolves a waiting breakpoint by POST …/resolve, refuses bad requests and changes nothing then", async () => {
      await settled();
      const group = uid("bp-group");
      const gate = `${group}-gate`;
      const after = `${group}-after`;
      const created = await api("POST", "/task-groups", {
        body: {
          taskGroupId: group,
          tasks: [
            { taskId: gate, breakpoint: true },
            { taskId: after, dependencies: [gate], payload: { command: ["true"] } },
          ],
        },
      });
      expect(created.status).toBe(201);
      expect(await C.tasks.getTask(gate)).toMatchObject({ task: { state: "running" } });
      // Nothing else moves: the gate waits for a person and its dependent for the gate.
      const before = await snapshot(C);
      for (const body of [
        {},
        { state: "exception" },
        { state: "completed", note: 12 },
        { state: "completed", note: "x".repeat(4097) },
        "completed",
      ]) {
        const refused = await api("POST", `/tasks/${gate}/resolve`, { body });
        expect({ body, status: refused.status }).toEqual({ body, status: 400 });
        expect(refused.body).toMatchObject({ code: "InputError" });
      }
      const notBreakpoint = await api("POST", `/tasks/${after}/resolve`, {
        body: { state: "completed" },
      });
      expect(notBreakpoint.status).toBe(409);
      expect(notBreakpoint.body).toMatchObject({ code: "RequestConflict" });
      const missing = await api("POST", `/tasks/${uid("none")}/resolve`, {
        body: { state: "completed" },
      });
      expect(missing.status).toBe(404);
      expect(await snapshot(C)).toEqual(before);

      const resolved = await api("POST", `/tasks/${gate}/resolve`, {
        body: { state: "completed", note: "go" },
      });
      expect(resolved.status).toBe(200);
      expect(resolved.body).toEqual({ taskId: gate, state: "completed", runId: 0 });
      expect(await waitForResolution(C, after)).toBe("completed");

      const again = await api("POST", `/tasks/${gate}/resolve`, { body: { state: "failed" } });
      expect(again.status).toBe(409);
      expect((await C.tasks.getTask(gate))?.task.state).toBe("completed");
    });

    it("serves a task group document and tells the group's resolution in the API", async () => {
      const group = uid("tally");
      const created = await api("POST", "/task-groups", {
        body: {
          taskGroupId: group,
          tasks: [
            { taskId: `${group}-ok`, payload: { command: ["true"] } },
            { taskId: `${group}-no`, payload: { command: ["false"] } },
            { taskId: `${group}-later`, inactive: true, payload: { command: ["true"] } },
          ],
        },
      });
      expect(created.status).toBe(201);
      const resolvedAt = await waitFor(`${group} to resolve`, async () => {
        const view = await api("GET", `/task-groups/${group}`);
        return typeof view.body.resolvedAt === "string" ? view.body : undefined;
      });
      expect(resolvedAt).toMatchObject({
        total: 3,
        resolved: 2,
        inactive: 1,
        resolutions: 1,
        counts: { completed: 1, failed: 1, unscheduled: 1 },
      });

      const url = C.urls.taskGroup(group);
      const document = await getJson(url);
      expect(document.status).toBe(200);
      expect(document.headers.get("content-type")).toContain(AS);
      const parsed = parseTaskGroupObject(document.body, { fetchedFrom: url });
      expect(parsed.ok && parsed.value).toEqual({
        id: url,
        attributedTo: C.urls.actor,
        taskCount: 3,
        completedCount: 1,
        failedCount: 1,
        exceptionCount: 0,
        resolved: resolvedAt.resolvedAt,
      });
      expect((await getJson(C.urls.taskGroup(uid("no-group")))).status).toBe(404);
      // Leave nothing unresolved for the tests after this one.
      expect((await api("POST", `/tasks/${group}-later/cancel`)).status).toBe(200);
    });
  });

  describe("federation documents", () => {
    it("serves the actor document", async () => {
      const response = await getJson(C.urls.actor);
      expect(response.status).toBe(200);
      expect(response.body).toMatchObject({
        id: C.urls.actor,
        type: "Service",
        preferredUsername: "api",
        inbox: C.urls.inbox,
        outbox: C.urls.outbox,
        followers: C.urls.followers,
      });
      // Each key has its own id for life (`#key-<n>`), not a position in the list.
      expect(idOf(response.body.publicKey)).toMatch(new RegExp(`^${C.urls.actor}#key-\\d+$`));
    });

    it("answers WebFinger for acct:<name>@<host:port> with the actor's URL", async () => {
      const resource = `acct:api@127.0.0.1:${C.port}`;
      const response = await getJson(
        `${base}/.well-known/webfinger?resource=${encodeURIComponent(resource)}`,
        "application/jrd+json",
      );
      expect(response.status).toBe(200);
      expect(response.body.subject).toBe(resource);
      expect(response.body.links).toContainEqual(
        expect.objectContaining({ rel: "self", type: AS, href: C.urls.actor }),
      );
      const unknown = await fetch(
        `${base}/.well-known/webfinger?resource=${encodeURIComponent(`acct:nobody@127.0.0.1:${C.port}`)}`,
      );
      expect(unknown.status).toBe(404);
    });

    it("points /.well-known/nodeinfo at /nodeinfo/2.1, which names the software taskweb", async () => {
      const wellKnown = await getJson(`${base}/.well-known/nodeinfo`, "application/json");
      expect(wellKnown.status).toBe(200);
      const links = wellKnown.body.links as { rel: string; href: string }[];
      const link = links.find((l) => l.href.endsWith("/nodeinfo/2.1"));
      expect(link).toBeDefined();
      expect(link!.rel).toBe("http://nodeinfo.diaspora.software/ns/schema/2.1");
      const nodeinfo = await getJson(link!.href, "application/json");
      expect(nodeinfo.status).toBe(200);
      expect(nodeinfo.body).toMatchObject({
        software: { name: "taskweb" },
        protocols: ["activitypub"],
      });
      const usage = nodeinfo.body.usage as { localPosts: number };
      const counts = Object.values(await C.tasks.countByState()).reduce((a, b) => a + b, 0);
      expect(usage.localPosts).toBe(counts);
    });

    it("pages the outbox newest first, with every activity of the cluster", async () => {
      // One failing task and enough dependents to need two pages: each resolves at once.
      const root = uid("root");
      await C.tasks.createTask({ taskId: root, payload: { command: ["false"] } });
      for (let i = 0; i <= OUTBOX_PAGE_SIZE; i++) {
        await C.tasks.createTask({
          taskId: uid(`dependent-${i}`),
          dependencies: [root],
          payload: { command: ["true"] },
        });
      }
      expect(await waitForResolution(C, root)).toBe("failed");
      await settled();
      const expected = (
        await C.database.db
          .selectFrom("outbox")
          .select("activity_id")
          .orderBy("seq", "desc")
          .execute()
      ).map((r) => r.activity_id);
      expect(expected.length).toBeGreaterThan(OUTBOX_PAGE_SIZE);

      const collection = await getJson(C.urls.outbox);
      expect(collection.status).toBe(200);
      expect(collection.body.type).toBe("OrderedCollection");
      expect(collection.body.totalItems).toBe(expected.length);
      let next = idOf(collection.body.first);
      expect(next).toBe(`${C.urls.outbox}?cursor=`);

      const seen: string[] = [];
      const pageSizes: number[] = [];
      while (next != null && pageSizes.length < 10) {
        const page = await getJson(next);
        expect(page.status).toBe(200);
        expect(page.body.type).toBe("OrderedCollectionPage");
        const items = (page.body.orderedItems as unknown[]).map(idOf);
        pageSizes.push(items.length);
        seen.push(...items.map(String));
        next = idOf(page.body.next);
      }
      expect(pageSizes[0]).toBe(OUTBOX_PAGE_SIZE);
      expect(pageSizes.length).toBeGreaterThanOrEqual(2);
      expect(seen).toEqual(expected);
      // Every item dereferences to the activity the cluster wrote.
      const newest = await getJson(seen[0]!);
      expect(newest.status).toBe(200);
      expect(newest.body.id).toBe(seen[0]);
    });
  });

  describe("metrics", () => {
    async function scrape(token: string | null = TEST_TOKEN) {
      const response = await fetch(`${base}/metrics`, {
        headers: token == null ? {} : { authorization: `Bearer ${token}` },
      });
      return { status: response.status, text: await response.text(), response };
    }

    /** The value of one sample, e.g. `taskweb_tasks{state="completed"}`. */
    function sample(text: string, name: string): number | undefined {
      const line = text.split("\n").find((l) => l.startsWith(`${name} `));
      return line == null ? undefined : Number(line.slice(name.length + 1));
    }

    it("serves Prometheus metrics to the token's holder only", async () => {
      expect((await scrape(null)).status).toBe(401);
      expect((await scrape("wrong-token-0123456789")).status).toBe(401);
      const ok = await scrape();
      expect(ok.status).toBe(200);
      expect(ok.response.headers.get("content-type")).toContain("text/plain");
    });

    it("counts tasks by state from the database, queues, runs and inbox outcomes", async () => {
      const taskId = uid("metrics");
      await api("POST", "/tasks", { body: { taskId, payload: { command: ["true"] } } });
      expect(await waitForResolution(C, taskId)).toBe("completed");
      await settled();
      const refusedBefore =
        sample(
          (await scrape()).text,
          'taskweb_inbox_requests_total{outcome="refused:no-signature"}',
        ) ?? 0;
      const unsigned = await fetch(C.urls.inbox, {
        method: "POST",
        headers: { "content-type": "application/activity+json" },
        body: JSON.stringify({
          "@context": "https://www.w3.org/ns/activitystreams",
          id: "http://127.0.0.1:9/clusters/x/follows/1",
          type: "Follow",
          actor: "http://127.0.0.1:9/clusters/x",
          object: C.urls.actor,
        }),
      });
      expect(unsigned.status).toBe(401);

      const { text } = await scrape();
      const counts = await C.tasks.countByState();
      for (const state of ["completed", "failed", "exception", "pending"]) {
        expect({ state, value: sample(text, `taskweb_tasks{state="${state}"}`) }).toEqual({
          state,
          value: counts[state] ?? 0,
        });
      }
      expect(sample(text, 'taskweb_queue_depth{queue="tasks"}')).toBe(0);
      expect(sample(text, "taskweb_outbox_undelivered")).toBeGreaterThanOrEqual(0);
      expect(
        sample(text, 'taskweb_runs_resolved{state="completed",reason="completed"}'),
      ).toBeGreaterThanOrEqual(1);
      expect(
        sample(text, 'taskweb_run_duration_seconds_count{state="completed"}'),
      ).toBeGreaterThanOrEqual(1);
      expect(sample(text, 'taskweb_run_pending_seconds{quantile="0.5"}')).toBeGreaterThanOrEqual(0);
      expect(sample(text, 'taskweb_inbox_requests_total{outcome="refused:no-signature"}')).toBe(
        refusedBefore + 1,
      );
    });
  });

  describe("health", () => {
    it("answers /healthz with 200", async () => {
      const response = await getJson(`${base}/healthz`, "application/json");
      expect(response.status).toBe(200);
      expect(response.body).toEqual({ status: "ok" });
    });

    it("answers /readyz with 200 once the database and the queue answer", async () => {
      const response = await getJson(`${base}/readyz`, "application/json");
      expect(response.status).toBe(200);
      expect(response.body).toEqual({
        status: "ready",
        checks: { database: "ok", queue: "ok" },
      });
    });
  });
});
