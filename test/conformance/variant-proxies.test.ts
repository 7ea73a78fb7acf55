/**
 * Broken variants made with proxies around an unmodified reference server:
 *
 * - in front of the server, a proxy strips the Ed25519 key from the actor document, answers
 *   every WebFinger request 404 and reverses the order of every outbox page;
 * - in front of the suite's own peer, a proxy changes the body of every TaskCompleted the
 *   server delivers, after the server signed it.
 *
 * The suite must fail exactly the checks about those pieces and pass the rest.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import {
  formatResultLine,
  runConformance,
  taskwebRestDriver,
  type Report,
} from "../../conformance/index.ts";
import { describeEachBackend } from "../support/backends.ts";
import { startTestCluster, TEST_TOKEN, type TestCluster } from "../support/clusters.ts";
import { freePort, startProxy, type Proxy } from "./proxy.ts";

describeEachBackend("conformance suite through tampering proxies", (backend) => {
  let cluster: TestCluster;
  let front: Proxy;
  let tamper: Proxy;
  let report: Report;

  beforeAll(async () => {
    front = await startProxy({
      answer: (method, path) =>
        method === "GET" && path.startsWith("/.well-known/webfinger")
          ? { status: 404, body: "{}", type: "application/json" }
          : undefined,
      responseBody: (method, path, body) => {
        if (method === "GET" && /^\/clusters\/[^/]+\/outbox\?/.test(path)) {
          // Outbox pages oldest first.
          const page = JSON.parse(body) as { orderedItems?: unknown[] };
          return JSON.stringify({
            ...page,
            orderedItems: [...(page.orderedItems ?? [])].reverse(),
          });
        }
        if (method !== "GET" || !/^\/clusters\/[^/]+$/.test(path)) return undefined;
        const actor = JSON.parse(body) as Record<string, unknown>;
        delete actor.assertionMethod;
        return JSON.stringify(actor);
      },
    });
    tamper = await startProxy({
      requestBody: (method, _path, body) =>
        method === "POST" && body.includes("TaskCompleted")
          ? body.replace('"name":"', '"name":"tampered-')
          : undefined,
    });
    tamper.forwardTo = await freePort();
    cluster = await startTestCluster(backend, "proxied", { config: { publicUrl: front.url } });
    front.forwardTo = cluster.current().port;
    report = await runConformance({
      target: `${front.url}/clusters/proxied`,
      driver: taskwebRestDriver({ apiUrl: `${front.url}/api/v1`, token: TEST_TOKEN }),
      peer: { port: tamper.forwardTo, publicUrl: tamper.url },
      only: ["DISC", "FOL", "PUB", "OUT"],
      timing: { settleMs: 300, deliveryTimeoutMs: 20_000 },
    });
  }, 180_000);
  afterAll(async () => {
    await cluster?.destroy();
    await front?.close();
    await tamper?.close();
  });

  it("fails exactly the checks about the stripped key, WebFinger, the altered body and the outbox order", () => {
    if (process.env.CONFORMANCE_PRINT === "1") {
      console.log(report.results.map(formatResultLine).join("\n"));
    }
    const failed = report.results.filter((r) => r.outcome === "fail").map((r) => r.id);
    // PUB-03 still passes: the signature covers the Content-Digest header, which the proxy
    // left alone; only comparing that header with the body (PUB-04) catches the change.
    expect(failed).toEqual(["DISC-07", "DISC-11", "DISC-12", "PUB-04", "PUB-07", "OUT-02"]);
    // Without the Multikey in the actor document the proof cannot be checked at all.
    const unobserved = report.results.filter((r) => r.outcome === "not-observable");
    expect(unobserved.map((r) => r.id)).toEqual(["DISC-05", "PUB-13"]);
  });
});
