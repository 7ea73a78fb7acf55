/**
 * Broken variants made with proxies around an unmodified reference server:
 *
 * - in front of the server, a proxy strips the Ed25519 key from the actor document, answers
 *   every WebFinger request 404, reverses the order of every outbox page, swaps `tags` in
 *   task and artifact documents (strips them where there are some, adds `{}` where there are
 *   none), upper-cases the digests of a task document's `inputs` and adds `"inputs": []` where
 *   there are none; and it keeps from the server every activity posted to it whose object
 *   carries `tags` (answering 202, as a server older than v1.3 ignores it) or `inputs`
 *   (answering 400, as a server may refuse what its schema does not know);
 * - in front of the suite's own peer, a proxy changes the body of every TaskCompleted the
 *   server delivers, after the server signed it, and strips `tags` and `inputs` from the
 *   objects of the TaskCompleted and ArtifactPublished activities it delivers.
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

/** Deletes `tags` and `inputs` from a task or artifact object and the artifacts it lists. */
function strip(node: unknown): boolean {
  if (node == null || typeof node !== "object") return false;
  const o = node as Record<string, unknown>;
  let changed = "tags" in o || "inputs" in o;
  delete o.tags;
  delete o.inputs;
  for (const a of Array.isArray(o.artifacts) ? (o.artifacts as Record<string, unknown>[]) : []) {
    changed = "tags" in a || changed;
    delete a.tags;
  }
  return changed;
}

/** A task or artifact document with its tags swapped and its inputs' digests upper-cased. */
function garbled(body: string): string | undefined {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(body) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  const nodes = [doc, ...(Array.isArray(doc.artifacts) ? doc.artifacts : [])] as Record<
    string,
    unknown
  >[];
  for (const node of nodes) {
    if ("tags" in node) delete node.tags;
    else node.tags = {};
  }
  if (Array.isArray(doc.type) && doc.type.includes("Task")) {
    doc.inputs = Array.isArray(doc.inputs)
      ? (doc.inputs as Record<string, unknown>[]).map((i) => ({
          ...i,
          sha256: String(i.sha256).toUpperCase(),
        }))
      : [];
  }
  return JSON.stringify(doc);
}

/** Whether a posted activity's object carries `member`. */
function objectCarries(body: string, member: "tags" | "inputs"): boolean {
  try {
    const object = (JSON.parse(body) as { object?: unknown }).object;
    return object != null && typeof object === "object" && member in object;
  } catch {
    return false;
  }
}

/** The body without tags and inputs, or undefined when it had none. */
function stripped(body: string, inObject: boolean): string | undefined {
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(body) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  return strip(inObject ? json.object : json) ? JSON.stringify(json) : undefined;
}

describeEachBackend("conformance suite through tampering proxies", (backend) => {
  let cluster: TestCluster;
  let front: Proxy;
  let tamper: Proxy;
  let report: Report;

  beforeAll(async () => {
    front = await startProxy({
      answer: (method, path, body) => {
        if (method === "GET" && path.startsWith("/.well-known/webfinger")) {
          return { status: 404, body: "{}", type: "application/json" };
        }
        if (method !== "POST" || !/\/inbox$/.test(path)) return undefined;
        // Ignored: the suite must see that nothing happened (TAG-05 waits for it).
        if (objectCarries(body, "tags")) return { status: 202, body: "", type: "text/plain" };
        // Refused: the status alone fails PRV-06, without a wait.
        return objectCarries(body, "inputs")
          ? { status: 400, body: '{"code":"schema","message":"inputs"}', type: "application/json" }
          : undefined;
      },
      responseBody: (method, path, body) => {
        if (method === "GET" && /^\/clusters\/[^/]+\/outbox\?/.test(path)) {
          // Outbox pages oldest first.
          const page = JSON.parse(body) as { orderedItems?: unknown[] };
          return JSON.stringify({
            ...page,
            orderedItems: [...(page.orderedItems ?? [])].reverse(),
          });
        }
        if (method === "GET" && /^\/clusters\/[^/]+\/tasks\//.test(path)) {
          return garbled(body);
        }
        if (method !== "GET" || !/^\/clusters\/[^/]+$/.test(path)) return undefined;
        const actor = JSON.parse(body) as Record<string, unknown>;
        delete actor.assertionMethod;
        return JSON.stringify(actor);
      },
    });
    tamper = await startProxy({
      requestBody: (method, _path, body) => {
        if (method !== "POST") return undefined;
        if (body.includes("TaskCompleted")) {
          return (stripped(body, true) ?? body).replace('"name":"', '"name":"tampered-');
        }
        return body.includes("ArtifactPublished") ? stripped(body, true) : undefined;
      },
    });
    tamper.forwardTo = await freePort();
    cluster = await startTestCluster(backend, "proxied", { config: { publicUrl: front.url } });
    front.forwardTo = cluster.current().port;
    report = await runConformance({
      target: `${front.url}/clusters/proxied`,
      driver: taskwebRestDriver({ apiUrl: `${front.url}/api/v1`, token: TEST_TOKEN }),
      peer: { port: tamper.forwardTo, publicUrl: tamper.url },
      // Not PRV-05: no proxy can make the server list an input it refused, and the check
      // waits for the server's download retries.
      only: ["DISC", "FOL", "PUB", "OUT", "TAG", "PRV-01", "PRV-02", "PRV-03", "PRV-04", "PRV-06"],
      timing: { settleMs: 300, deliveryTimeoutMs: 20_000 },
    });
  }, 180_000);
  afterAll(async () => {
    await cluster?.destroy();
    await front?.close();
    await tamper?.close();
  });

  it("fails exactly the checks about the stripped key, WebFinger, the altered body, the outbox order, tags and inputs", () => {
    if (process.env.CONFORMANCE_PRINT === "1") {
      console.log(report.results.map(formatResultLine).join("\n"));
    }
    const failed = report.results.filter((r) => r.outcome === "fail").map((r) => r.id);
    // PUB-03 still passes: the signature covers the Content-Digest header, which the proxy
    // left alone; only comparing that header with the body (PUB-04) catches the change.
    expect(failed).toEqual([
      "DISC-07",
      "DISC-11",
      "DISC-12",
      "PUB-04",
      "PUB-07",
      "OUT-02",
      "TAG-01",
      "TAG-02",
      "TAG-03",
      "TAG-04",
      "TAG-05",
      "PRV-01",
      "PRV-02",
      "PRV-03",
      "PRV-04",
      "PRV-06",
    ]);
    // Without the Multikey in the actor document the proof cannot be checked at all.
    const unobserved = report.results.filter((r) => r.outcome === "not-observable");
    expect(unobserved.map((r) => r.id)).toEqual(["DISC-05", "PUB-13"]);
  });
});
