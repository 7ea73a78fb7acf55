/**
 * What an operator watches, on two real clusters on loopback: Prometheus counters of
 * deliveries by peer and outcome and of inbox signature verifications by outcome, JSON log
 * lines that carry the request id (taken from X-Request-Id) and the task id, and Fedify's
 * OpenTelemetry spans reaching a tracer provider registered globally, as an operator's
 * `--import` setup would.
 */
import { randomUUID } from "node:crypto";
import { trace } from "@opentelemetry/api";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { setUpLogging } from "../../server/cli/logging.ts";
import { testBackends } from "../support/backends.ts";
import {
  follow,
  snapshot,
  startTestCluster,
  TEST_TOKEN,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";

const backend = testBackends().at(-1)!;

interface LogLine {
  level: string;
  message: string;
  logger: string;
  properties: Record<string, unknown>;
}

/** The value of one sample of `/metrics`, 0 when absent. */
async function sample(origin: string, name: string, labels: Record<string, string>) {
  const response = await fetch(`${origin}/metrics`, {
    headers: { authorization: `Bearer ${TEST_TOKEN}` },
  });
  expect(response.status).toBe(200);
  const text = await response.text();
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    const inner = line.slice(name.length + 1, line.indexOf("}"));
    const parts = inner.split(",");
    if (wanted.every((w) => parts.includes(w)) && parts.length === wanted.length) {
      return Number(line.slice(line.indexOf("}") + 1));
    }
  }
  return 0;
}

describe(`observability on ${backend.name}`, () => {
  let a: TestCluster;
  let b: TestCluster;
  const lines: LogLine[] = [];
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });

  beforeAll(async () => {
    await setUpLogging({
      level: "info",
      format: "json",
      write: (line) => lines.push(JSON.parse(line) as LogLine),
    });
    trace.setGlobalTracerProvider(provider);
    [a, b] = await Promise.all([
      startTestCluster(backend, "obs-a"),
      startTestCluster(backend, "obs-b"),
    ]);
    await follow(b.current(), a.current());
  }, 120_000);
  afterAll(async () => {
    await Promise.all([a?.destroy(), b?.destroy()]);
    trace.disable();
    await provider.shutdown();
  });

  it("counts a delivery to its peer and the verification at the receiving inbox", async () => {
    const A = a.current();
    const B = b.current();
    const peer = new URL(B.urls.origin).host;
    const deliveredBefore = await sample(A.urls.origin, "taskweb_deliveries_total", {
      peer,
      outcome: "delivered",
    });
    const verifiedBefore = await sample(B.urls.origin, "taskweb_inbox_verifications_total", {
      outcome: "verified",
    });
    const taskId = `obs-${randomUUID().slice(0, 8)}`;
    await A.tasks.createTask({ taskId, payload: { command: ["true"] } });
    expect(await waitForResolution(A, taskId)).toBe("completed");
    await waitFor("B to learn of the completion", async () => {
      const row = await B.database.db
        .selectFrom("remote_tasks")
        .select("state")
        .where("task_url", "=", A.urls.task(taskId))
        .executeTakeFirst();
      return row?.state === "completed" ? true : undefined;
    });
    await waitFor("the delivery to be counted", async () =>
      (await sample(A.urls.origin, "taskweb_deliveries_total", { peer, outcome: "delivered" })) >
      deliveredBefore
        ? true
        : undefined,
    );
    expect(
      await sample(B.urls.origin, "taskweb_inbox_verifications_total", { outcome: "verified" }),
    ).toBeGreaterThan(verifiedBefore);

    // The run's log lines carry its task id.
    const running = lines.find(
      (l) => l.message.startsWith("Running") && l.message.includes(taskId),
    );
    expect(running?.properties).toMatchObject({ taskId, runId: 0 });
    expect(running?.properties.workerId).toEqual(expect.any(String));

    // The spans reached the global provider: the delivery and its signatures on A, the inbox
    // on B.
    const names = exporter.getFinishedSpans().map((s) => s.name);
    expect(names).toEqual(
      expect.arrayContaining([
        "activitypub.send_activity",
        "http_signatures.sign",
        "activitypub.inbox",
      ]),
    );
  });

  it("counts a refused inbox POST by reason, changes nothing, and logs it with the request id", async () => {
    const B = b.current();
    const before = await snapshot(B);
    const noSignatureBefore = await sample(B.urls.origin, "taskweb_inbox_verifications_total", {
      outcome: "no-signature",
    });
    const requestId = `req-${randomUUID()}`;
    const response = await fetch(B.urls.inbox, {
      method: "POST",
      headers: { "content-type": "application/activity+json", "x-request-id": requestId },
      body: JSON.stringify({
        "@context": "https://www.w3.org/ns/activitystreams",
        id: `${a.current().urls.actor}#forged-${randomUUID()}`,
        type: "Create",
        actor: a.current().urls.actor,
        object: { type: "Note", content: "unsigned" },
      }),
    });
    expect(response.status).toBe(401);
    expect(response.headers.get("x-request-id")).toBe(requestId);
    expect(
      await sample(B.urls.origin, "taskweb_inbox_verifications_total", { outcome: "no-signature" }),
    ).toBe(noSignatureBefore + 1);
    expect(await snapshot(B)).toEqual(before);

    const refusal = lines.find(
      (l) =>
        l.message.startsWith("Inbox refused a request") && l.properties.requestId === requestId,
    );
    expect(refusal).toMatchObject({ level: "INFO", logger: "taskweb.http.inbox" });
    const access = lines.find(
      (l) => l.logger === "taskweb.http.access" && l.properties.requestId === requestId,
    );
    expect(access?.properties).toMatchObject({ method: "POST", status: 401 });

    // Without a usable X-Request-Id the cluster makes one up.
    const other = await fetch(`${B.urls.origin}/healthz`, { headers: { "x-request-id": "a b" } });
    expect(other.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("serves a worker process's counters on TASKWEB_METRICS_PORT, to holders of the token", async () => {
    const worker = await startTestCluster(backend, "obs-worker", {
      roles: { web: false, worker: true },
      config: { publicUrl: "http://127.0.0.1:9", metricsPort: 0 },
    });
    try {
      const port = worker.current().metricsPort;
      expect(port).toBeGreaterThan(0);
      const url = `http://127.0.0.1:${port}/metrics`;
      const [scraped, anonymous, elsewhere] = await Promise.all([
        fetch(url, { headers: { authorization: `Bearer ${TEST_TOKEN}` } }),
        fetch(url),
        fetch(`http://127.0.0.1:${port}/api/v1/cluster`, {
          headers: { authorization: `Bearer ${TEST_TOKEN}` },
        }),
      ]);
      expect(scraped.status).toBe(200);
      const text = await scraped.text();
      expect(text).toContain("# TYPE taskweb_deliveries_total counter");
      expect(text).toContain("# TYPE taskweb_run_duration_seconds histogram");
      expect(anonymous.status).toBe(401);
      expect(await anonymous.text()).not.toContain("taskweb_");
      expect(elsewhere.status).toBe(404);
    } finally {
      await worker.destroy();
    }
  });
});
