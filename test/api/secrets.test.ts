/**
 * Secrets over real HTTP on loopback, on both backends: set through the API and the
 * command line, handed to a task's environment, and found nowhere else — not in the run's
 * log (live or final), the task's documents, the outbox, the queue's jobs (database rows or
 * Redis keys) or any table in clear. Bad input changes nothing; a missing secret, a missing
 * key and a wrong key each resolve the run `exception` with a log line saying why.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunningCluster } from "../../server/cluster.ts";
import { SECRET_LIMITS } from "../../server/domain/secrets.ts";
import { generateSecretsKey } from "../../server/domain/secret-cipher.ts";
import { describeEachBackend } from "../support/backends.ts";
import { runTaskweb } from "../support/cli.ts";
import {
  startTestCluster,
  TEST_TOKEN,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";

function uid(label: string): string {
  return `${label}-${randomBytes(4).toString("hex")}`;
}

/** A secret value that cannot turn up in output by chance. */
function newValue(): string {
  return `tw-${randomBytes(16).toString("hex")}`;
}

function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

interface JsonResponse {
  readonly status: number;
  readonly text: string;
  readonly body: Record<string, unknown>;
}

/** Every way `value` could be written down in a table or a key: as text, hex and base64. */
function encodings(value: string): string[] {
  const bytes = Buffer.from(value, "utf8");
  return [value, bytes.toString("hex"), bytes.toString("base64")];
}

/** Every row of every table of the cluster's schema, as PostgreSQL prints rows. */
async function databaseText(cluster: RunningCluster): Promise<string> {
  const db = cluster.database.db;
  const { rows: tables } = await sql<{ name: string }>`
    select table_name as name from information_schema.tables
    where table_schema = current_schema() and table_type = 'BASE TABLE'`.execute(db);
  expect(tables.map((t) => t.name)).toEqual(expect.arrayContaining(["secrets", "jobs", "runs"]));
  const parts: string[] = [];
  for (const { name } of tables) {
    const { rows } = await sql<{ row: string }>`select t::text as row from ${sql.table(
      name,
    )} t`.execute(db);
    parts.push(`${name}: ${rows.map((r) => r.row).join("\n")}`);
  }
  return parts.join("\n");
}

/** Whatever a Redis key holds, whatever its type. */
async function keyContent(redis: Redis, key: string): Promise<unknown> {
  const type = await redis.type(key);
  switch (type) {
    case "string":
      return await redis.get(key);
    case "hash":
      return await redis.hgetall(key);
    case "list":
      return await redis.lrange(key, 0, -1);
    case "set":
      return await redis.smembers(key);
    case "zset":
      return await redis.zrange(key, "0", "-1");
    case "stream":
      return await redis.xrange(key, "-", "+");
    default:
      return type;
  }
}

/** What the cluster's queue holds: the embedded jobs table, or every Redis key under its prefix. */
async function queueText(cluster: RunningCluster): Promise<string> {
  if (cluster.config.redisUrl == null) {
    return JSON.stringify(await cluster.database.db.selectFrom("jobs").selectAll().execute());
  }
  const redis = new Redis(cluster.config.redisUrl);
  try {
    const parts: string[] = [];
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(
        cursor,
        "MATCH",
        `${cluster.config.redisPrefix}:*`,
        "COUNT",
        1000,
      );
      cursor = next;
      for (const key of keys) {
        const content = await keyContent(redis, key);
        parts.push(`${key} ${JSON.stringify(content)}`);
      }
    } while (cursor !== "0");
    return parts.join("\n");
  } finally {
    redis.disconnect();
  }
}

/** Fails when `text` holds `value` in any of its {@link encodings}. */
function expectAbsent(what: string, text: string, value: string): void {
  for (const encoded of encodings(value)) {
    expect(text.includes(encoded), `${what} contains the secret`).toBe(false);
  }
}

describeEachBackend("secrets", (backend) => {
  const KEY = generateSecretsKey();
  let cluster: TestCluster;
  let C: RunningCluster;
  let base: string;
  let gates: string;

  beforeAll(async () => {
    gates = await mkdtemp(join(tmpdir(), "taskweb-secret-gates-"));
    cluster = await startTestCluster(backend, "secrets", { config: { secretsKey: KEY } });
    C = cluster.current();
    base = C.urls.origin;
  });
  afterAll(async () => {
    await cluster?.destroy();
    await rm(gates, { recursive: true, force: true });
  });

  async function api(
    method: string,
    path: string,
    options: { body?: unknown; raw?: string; token?: string | null; type?: string } = {},
  ): Promise<JsonResponse> {
    const headers = new Headers();
    const token = options.token === undefined ? TEST_TOKEN : options.token;
    if (token != null) headers.set("authorization", `Bearer ${token}`);
    const body = options.body !== undefined ? JSON.stringify(options.body) : options.raw;
    if (body !== undefined) headers.set("content-type", options.type ?? "application/json");
    const response = await fetch(`${base}/api/v1${path}`, {
      method,
      headers,
      ...(body !== undefined ? { body } : {}),
    });
    const text = await response.text();
    const json = (response.headers.get("content-type") ?? "").includes("json") && text !== "";
    return {
      status: response.status,
      text,
      body: json ? (JSON.parse(text) as Record<string, unknown>) : {},
    };
  }

  async function secretRows() {
    return await C.database.db.selectFrom("secrets").selectAll().orderBy("name").execute();
  }

  async function lastRun(taskId: string) {
    const view = await C.tasks.getTask(taskId);
    const run = view?.runs.at(-1);
    if (run == null) throw new Error(`${taskId} has no run`);
    return run;
  }

  describe("a task that uses a secret", () => {
    const value = newValue();
    const name = "deploy/api-token";
    const taskId = uid("uses-secret");
    let gate: string;
    let midRun: { liveLog: string; queue: string; database: string };
    let followed: string;

    it("stores a secret with PUT and answers with its name and times, never its value", async () => {
      const response = await api("PUT", `/secrets/${name}`, { body: { value } });
      expect(response.status).toBe(201);
      expect(response.body).toMatchObject({ name, created: true, keyId: C.secrets.keyId });
      expect(Object.keys(response.body).sort()).toEqual([
        "created",
        "createdAt",
        "keyId",
        "name",
        "updatedAt",
      ]);
      expectAbsent("the PUT answer", response.text, value);
    });

    it("runs the task with the value in its environment and redacts it from the live log", async () => {
      gate = join(gates, taskId);
      const script = [
        "set -e",
        `printf 'full=%s\\n' "$API_TOKEN"`,
        `printf 'stderr=%s\\n' "$API_TOKEN" >&2`,
        // Half the value, then a wait (the test looks at everything), then the other half:
        // the value arrives in two chunks.
        `printf 'split=%s' "$(printf %s "$API_TOKEN" | cut -c1-12)"`,
        `while [ ! -e "$GATE" ]; do sleep 0.05; done`,
        `printf '%s\\n' "$(printf %s "$API_TOKEN" | cut -c13-)"`,
        `printf %s "$API_TOKEN" | sha256sum | cut -c1-64 > "$TASKWEB_ARTIFACTS/token.sha256"`,
        `[ "$(printf %s "$API_TOKEN" | sha256sum | cut -c1-64)" = "$EXPECTED" ]`,
        "echo done",
      ].join("\n");
      const created = await api("POST", "/tasks", {
        body: {
          taskId,
          payload: {
            command: ["sh", "-c", script],
            env: { GATE: gate, EXPECTED: sha256(value) },
            secrets: { API_TOKEN: name },
          },
        },
      });
      expect(created.status).toBe(201);

      await waitFor("the run to start", async () =>
        (await C.tasks.getTask(taskId))?.task.state === "running" ? true : undefined,
      );
      const following = fetch(`${base}/api/v1/tasks/${taskId}/runs/0/log?follow=1`, {
        headers: { authorization: `Bearer ${TEST_TOKEN}` },
      }).then((r) => r.text());
      // The live log reaches the database with everything before the half value.
      const liveLog = await waitFor("the live log to show the split line", async () => {
        const log = (await lastRun(taskId)).log ?? "";
        return log.includes("split=") && log.includes("stderr=") ? log : undefined;
      });
      midRun = { liveLog, queue: await queueText(C), database: await databaseText(C) };
      await writeFile(gate, "");
      expect(await waitForResolution(C, taskId)).toBe("completed");
      followed = await following;
    });

    it("kept the value and even its first half out of the live log while the task ran", () => {
      expect(midRun.liveLog).toContain("full=[secret]\n");
      expect(midRun.liveLog).toContain("stderr=[secret]\n");
      // stdout and stderr interleave: "split=" may be followed by stderr's line, never by
      // the half value, held back until the rest shows whether it is the secret.
      expect(midRun.liveLog).toContain("split=");
      expect(midRun.liveLog).not.toContain("split=tw");
      expectAbsent("the live log", midRun.liveLog, value);
      expect(midRun.liveLog).not.toContain(value.slice(0, 12));
    });

    it("kept the value out of the queue's jobs and every table while the task ran", () => {
      // The run's job is still in the queue while it runs: the scan saw it.
      expect(midRun.queue).toContain(taskId);
      expectAbsent("the queue", midRun.queue, value);
      expectAbsent("the database", midRun.database, value);
    });

    it("redacts the value from the final log, also where it arrived in two chunks", async () => {
      const log = await api("GET", `/tasks/${taskId}/runs/0/log`);
      expect(log.status).toBe(200);
      // stderr's line comes through whole, wherever it lands among stdout's.
      expect(log.text).toContain("stderr=[secret]\n");
      expect(log.text.replace("stderr=[secret]\n", "")).toBe(
        "full=[secret]\nsplit=[secret]\ndone\n",
      );
      expectAbsent("the final log", log.text, value);
      expect(log.text).not.toContain(value.slice(0, 12));
      expect(log.text).not.toContain(value.slice(12));
      expect(followed.replace("stderr=[secret]\n", "")).toContain("split=[secret]\n");
      expectAbsent("the followed log", followed, value);
    });

    it("gave the task the value: its artifact holds the value's sha256", async () => {
      const response = await fetch(`${C.urls.artifactContent(taskId, "token.sha256")}`);
      expect(response.status).toBe(200);
      expect((await response.text()).trim()).toBe(sha256(value));
    });

    it("keeps the value out of the task's documents, the outbox and every table", async () => {
      const rest = await api("GET", `/tasks/${taskId}`);
      expect(rest.status).toBe(200);
      // The definition names the secret; it never holds the value.
      expect(rest.body.definition).toMatchObject({ payload: { secrets: { API_TOKEN: name } } });
      expectAbsent("the task's REST document", rest.text, value);

      const published = await fetch(C.urls.task(taskId), {
        headers: { accept: "application/activity+json" },
      });
      expect(published.status).toBe(200);
      expectAbsent("the public task document", await published.text(), value);

      const outbox = await C.database.db.selectFrom("outbox").selectAll().execute();
      expect(outbox.some((row) => JSON.stringify(row.activity).includes(taskId))).toBe(true);
      expectAbsent("the outbox", JSON.stringify(outbox), value);

      expectAbsent("the database", await databaseText(C), value);
      expectAbsent("the queue", await queueText(C), value);
    });

    it("stores the value only as AES-GCM ciphertext with a fresh IV", async () => {
      const [row] = (await secretRows()).filter((r) => r.name === name);
      expect(row).toBeDefined();
      expect(row!.key_id).toBe(C.secrets.keyId);
      expect(Buffer.from(row!.iv)).toHaveLength(12);
      expect(Buffer.from(row!.auth_tag)).toHaveLength(16);
      const ciphertext = Buffer.from(row!.ciphertext);
      expect(ciphertext).toHaveLength(Buffer.byteLength(value));
      expect(ciphertext.equals(Buffer.from(value))).toBe(false);
      expectAbsent("the secrets row", JSON.stringify(row), value);

      // Setting the same value again seals it under a new IV: equal values are not visible.
      const again = await api("PUT", `/secrets/${name}`, { body: { value } });
      expect(again.status).toBe(200);
      expect(again.body).toMatchObject({ created: false, createdAt: expect.any(String) });
      const [after] = (await secretRows()).filter((r) => r.name === name);
      expect(Buffer.from(after!.iv).equals(Buffer.from(row!.iv))).toBe(false);
      expect(Buffer.from(after!.ciphertext).equals(ciphertext)).toBe(false);
    });

    it("lists names, key ids and times, never values", async () => {
      const response = await api("GET", "/secrets");
      expect(response.status).toBe(200);
      const secrets = response.body.secrets as Record<string, unknown>[];
      const listed = secrets.find((s) => s.name === name);
      expect(listed).toEqual({
        name,
        keyId: C.secrets.keyId,
        createdAt: expect.any(String),
        updatedAt: expect.any(String),
      });
      expectAbsent("the list", response.text, value);
    });
  });

  describe("runs that cannot have their secrets", () => {
    it("resolves a task naming a secret that does not exist exception missing-secret, naming it in the log", async () => {
      const taskId = uid("missing-secret");
      const created = await api("POST", "/tasks", {
        body: {
          taskId,
          payload: { command: ["sh", "-c", "echo ran"], secrets: { TOKEN: "nobody/set-this" } },
        },
      });
      // Not an error at creation: the secret may be set later.
      expect(created.status).toBe(201);
      expect(await waitForResolution(C, taskId)).toBe("exception");
      const run = await lastRun(taskId);
      expect(run.reason_resolved).toBe("missing-secret");
      expect(run.exit_code).toBeNull();
      expect(run.log).toContain('"nobody/set-this" (for TOKEN)');
      expect(run.log).not.toContain("ran");
      const task = await fetch(C.urls.task(taskId), {
        headers: { accept: "application/activity+json" },
      });
      expect(await task.json()).toMatchObject({ reasonResolved: "missing-secret" });
    });

    it("runs such a task once the secret was set and the task rerun", async () => {
      const taskId = uid("set-later");
      const secret = uid("later");
      await api("POST", "/tasks", {
        body: {
          taskId,
          payload: {
            command: ["sh", "-c", '[ "$LATER" = "$WANT" ]'],
            env: { WANT: "set-afterwards" },
            secrets: { LATER: secret },
          },
        },
      });
      expect(await waitForResolution(C, taskId)).toBe("exception");
      expect(
        (await api("PUT", `/secrets/${secret}`, { body: { value: "set-afterwards" } })).status,
      ).toBe(201);
      expect((await api("POST", `/tasks/${taskId}/rerun`)).status).toBe(202);
      await waitFor("the rerun to resolve", async () => {
        const run = await lastRun(taskId);
        return run.run_id === 1 && run.state !== "pending" && run.state !== "running"
          ? run
          : undefined;
      });
      expect((await lastRun(taskId)).state).toBe("completed");
    });
  });

  describe("bad input", () => {
    const cases: [string, string, { body?: unknown; raw?: string; type?: string }, number][] = [
      ["a name with a space", "/secrets/bad%20name", { body: { value: "long enough" } }, 400],
      ["a name with '!'", "/secrets/bang!", { body: { value: "long enough" } }, 400],
      ["an empty segment", "/secrets/a//b", { body: { value: "long enough" } }, 400],
      [
        "a name of 129 characters",
        `/secrets/${"n".repeat(129)}`,
        { body: { value: "long enough" } },
        400,
      ],
      [
        "a value over 64 KiB",
        "/secrets/too-long",
        { body: { value: "v".repeat(SECRET_LIMITS.maxValueBytes + 1) } },
        400,
      ],
      [
        "a value over 64 KiB in UTF-8 bytes",
        "/secrets/too-long-utf8",
        { body: { value: "é".repeat(SECRET_LIMITS.maxValueBytes / 2 + 1) } },
        400,
      ],
      ["a value of 3 characters", "/secrets/too-short", { body: { value: "abc" } }, 400],
      ["an empty value", "/secrets/empty", { body: { value: "" } }, 400],
      ["a number", "/secrets/number", { body: { value: 12345678 } }, 400],
      ["an object", "/secrets/object", { body: { value: { nested: "value" } } }, 400],
      ["no value", "/secrets/absent", { body: {} }, 400],
      ["an extra field", "/secrets/extra", { body: { value: "long enough", note: "x" } }, 400],
      ["a NUL character", "/secrets/nul", { body: { value: "long\u0000enough" } }, 400],
      ["an array body", "/secrets/array", { body: ["long enough"] }, 400],
      [
        "a body that is not JSON",
        "/secrets/not-json",
        { raw: "{value", type: "application/json" },
        400,
      ],
      ["a text body", "/secrets/text", { raw: "long enough", type: "text/plain" }, 415],
    ];

    it("answers 400 (415 for a body that is not JSON) and stores nothing", async () => {
      const before = await secretRows();
      for (const [what, path, options, status] of cases) {
        const response = await api("PUT", path, options);
        expect({ what, status: response.status }).toEqual({ what, status });
        expect(response.body.code).toBe(status === 400 ? "InputError" : "UnsupportedMediaType");
        expect(String(response.body.message)).not.toBe("");
      }
      expect(await secretRows()).toEqual(before);
    });

    it("refuses '.' and '..' segments sent as they are (URL parsing would resolve them away)", async () => {
      const before = await secretRows();
      for (const path of [
        "/api/v1/secrets/a/%2E%2E/b",
        "/api/v1/secrets/a/./b",
        "/api/v1/secrets/..",
      ]) {
        const status = await new Promise<number | undefined>((resolve, reject) => {
          const body = JSON.stringify({ value: "long enough" });
          const request = httpRequest(
            {
              host: "127.0.0.1",
              port: C.port,
              method: "PUT",
              path,
              headers: {
                authorization: `Bearer ${TEST_TOKEN}`,
                "content-type": "application/json",
                "content-length": Buffer.byteLength(body),
              },
            },
            (response) => {
              response.resume();
              resolve(response.statusCode);
            },
          );
          request.on("error", reject);
          request.end(body);
        });
        expect({ path, status }).toEqual({ path, status: 400 });
      }
      expect(await secretRows()).toEqual(before);
    });

    it("says why a short value is refused", async () => {
      const response = await api("PUT", "/secrets/short", { body: { value: "abc" } });
      expect(response.body.message).toMatch(/at least 4 characters.*\[secret\]/);
    });

    it("answers 401 without the token on every secrets route, and stores nothing", async () => {
      const before = await secretRows();
      const existing = before[0]?.name ?? "deploy/api-token";
      for (const [method, path, body] of [
        ["PUT", `/secrets/${existing}`, { value: "replaced value" }],
        ["PUT", "/secrets/new-one", { value: "a new value" }],
        ["GET", "/secrets", undefined],
        ["DELETE", `/secrets/${existing}`, undefined],
      ] as const) {
        for (const token of [null, "wrong-token-0123456789"]) {
          const response = await api(method, path, { token, ...(body ? { body } : {}) });
          expect({ method, path, status: response.status }).toEqual({ method, path, status: 401 });
        }
      }
      expect(await secretRows()).toEqual(before);
    });

    it("refuses payload.secrets that name bad secrets or repeat payload.env, and creates nothing", async () => {
      const taskId = uid("bad-secrets");
      const response = await api("POST", "/tasks", {
        body: {
          taskId,
          payload: {
            command: ["true"],
            env: { BOTH: "x" },
            secrets: { BOTH: "fine/name", "1BAD": "fine/name", OK: "../escape" },
          },
        },
      });
      expect(response.status).toBe(400);
      const fields = (response.body.details as { problems: { field: string }[] }).problems.map(
        (p) => p.field,
      );
      expect(fields).toEqual([
        "payload.secrets.BOTH",
        'payload.secrets["1BAD"]',
        "payload.secrets.OK",
      ]);
      expect(await C.tasks.getTask(taskId)).toBeUndefined();

      const graph = await api("POST", "/task-groups", {
        body: {
          taskGroupId: uid("bad-secrets-graph"),
          tasks: [
            {
              taskId: uid("g"),
              payload: { command: ["true"], env: { A: "1" }, secrets: { A: "x/y", B: "a//b" } },
            },
          ],
        },
      });
      expect(graph.status).toBe(400);
      const problems = (graph.body.details as { problems: { field: string }[] }).problems;
      expect(problems.map((p) => p.field).join("\n")).toMatch(/payload\.secrets/);
      expect(problems.length).toBe(2);
    });

    it("answers 404 when deleting a secret that does not exist", async () => {
      const response = await api("DELETE", "/secrets/never/was");
      expect(response.status).toBe(404);
    });
  });

  describe("the command line", () => {
    it("sets a secret from standard input, lists it and deletes it, never printing the value", async () => {
      const value = newValue();
      const flags = ["--url", base, "--token", TEST_TOKEN];
      const set = await runTaskweb(["secret", "set", "cli/token", ...flags], {}, `${value}\n`);
      expect(set.stderr).toBe("");
      expect(set.code).toBe(0);
      expect(set.lines).toEqual(["Secret cli/token created."]);

      const taskId = uid("cli-secret");
      await api("POST", "/tasks", {
        body: {
          taskId,
          payload: {
            command: ["sh", "-c", 'echo "got $T"; [ "$T" = "$WANT" ]'],
            env: { WANT: value },
            secrets: { T: "cli/token" },
          },
        },
      });
      // The trailing line break of the input is not part of the value.
      expect(await waitForResolution(C, taskId)).toBe("completed");

      const list = await runTaskweb(["secret", "list", ...flags]);
      expect(list.code).toBe(0);
      expect(list.stdout).toMatch(/^cli\/token {2}updated \S+ {2}key [0-9a-f]{16}$/m);
      expect(list.stdout).not.toContain(value);

      const bad = await runTaskweb(["secret", "set", "a/../b", ...flags], {}, value);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain("not a secret name");

      const empty = await runTaskweb(["secret", "set", "cli/empty", ...flags], {}, "");
      expect(empty.code).toBe(2);
      expect(empty.stderr).toContain("No value on standard input");

      const short = await runTaskweb(["secret", "set", "cli/short", ...flags], {}, "abc\n");
      expect(short.code).toBe(1);
      expect(short.stderr).toContain("at least 4 characters");

      const deleted = await runTaskweb(["secret", "delete", "cli/token", ...flags]);
      expect(deleted.code).toBe(0);
      expect(deleted.lines).toEqual(["Secret cli/token deleted."]);
      expect((await secretRows()).map((r) => r.name)).not.toContain("cli/token");
      // Six processes, each starting a Node with a TypeScript loader.
    }, 120_000);
  });

  describe("keys", () => {
    it("refuses to inject anything when restarted with another key, and runs again with the right one", async () => {
      const value = newValue();
      expect((await api("PUT", "/secrets/rotating", { body: { value } })).status).toBe(201);
      const firstKeyId = C.secrets.keyId;

      C = await cluster.restart({ secretsKey: generateSecretsKey() });
      expect(C.secrets.keyId).not.toBe(firstKeyId);
      const taskId = uid("wrong-key");
      await api("POST", "/tasks", {
        body: {
          taskId,
          payload: {
            command: ["sh", "-c", 'printf %s "$S" > "$TASKWEB_ARTIFACTS/seen"'],
            secrets: { S: "rotating" },
          },
        },
      });
      expect(await waitForResolution(C, taskId)).toBe("exception");
      const run = await lastRun(taskId);
      expect(run.reason_resolved).toBe("secrets-unavailable");
      expect(run.exit_code).toBeNull();
      expect(run.log).toContain('secret "rotating" was stored with key');
      expect(run.log).toContain("TASKWEB_SECRETS_KEY");
      expect((await C.tasks.getTask(taskId))?.artifacts).toEqual([]);

      C = await cluster.restart({ secretsKey: KEY });
      expect(C.secrets.keyId).toBe(firstKeyId);
      await api("POST", `/tasks/${taskId}/rerun`);
      await waitFor("the rerun to complete", async () => {
        const last = await lastRun(taskId);
        return last.run_id === 1 && last.state === "completed" ? true : undefined;
      });
      const seen = await fetch(C.urls.artifactContent(taskId, "seen"));
      expect(await seen.text()).toBe(value);
    });

    if (backend.name === "embedded") {
      it("creates a key in the data directory, readable by its owner only, and keeps using it", async () => {
        C = await cluster.restart({ secretsKey: undefined });
        const keyFile = join(C.config.dataDir!, "secrets.key");
        expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
        const keyId = C.secrets.keyId;
        expect(keyId).toMatch(/^[0-9a-f]{16}$/);
        const value = newValue();
        expect((await api("PUT", "/secrets/from-file", { body: { value } })).status).toBe(201);

        C = await cluster.restart();
        expect(C.secrets.keyId).toBe(keyId);
        const taskId = uid("file-key");
        await api("POST", "/tasks", {
          body: {
            taskId,
            payload: {
              command: ["sh", "-c", '[ "$V" = "$WANT" ]'],
              env: { WANT: value },
              secrets: { V: "from-file" },
            },
          },
        });
        expect(await waitForResolution(C, taskId)).toBe("completed");
      });
    } else {
      it("without TASKWEB_SECRETS_KEY on PostgreSQL, answers 503 naming it and fails runs that need secrets", async () => {
        C = await cluster.restart({ secretsKey: undefined });
        expect(C.secrets.keyId).toBeUndefined();
        for (const [method, path, body] of [
          ["PUT", "/secrets/keyless", { value: "some value" }],
          ["GET", "/secrets", undefined],
          ["DELETE", "/secrets/rotating", undefined],
        ] as const) {
          const response = await api(method, path, body ? { body } : {});
          expect({ method, status: response.status }).toEqual({ method, status: 503 });
          expect(response.body.message).toContain("TASKWEB_SECRETS_KEY");
        }
        const taskId = uid("no-key");
        await api("POST", "/tasks", {
          body: { taskId, payload: { command: ["true"], secrets: { S: "rotating" } } },
        });
        expect(await waitForResolution(C, taskId)).toBe("exception");
        const run = await lastRun(taskId);
        expect(run.reason_resolved).toBe("secrets-unavailable");
        expect(run.log).toContain("TASKWEB_SECRETS_KEY");
      });
    }
  });
});
