/**
 * What a taskweb cluster puts on the wire, seen by a minimal peer that is not taskweb: the
 * peer (a plain HTTP server with an actor document) follows cluster A, and records what A
 * delivers. Every activity must carry an RFC 9421 HTTP signature and an FEP-8b32 proof
 * that verify, keep every taskweb property (nothing stripped on the way through the
 * queue), parse under the protocol library, and arrive once at the shared inbox.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import {
  exportSpki,
  generateCryptoKeyPair,
  signRequest,
  verifyObject,
  verifyRequest,
} from "@fedify/fedify";
import { Activity } from "@fedify/vocab";
import { getDocumentLoader } from "@fedify/vocab-runtime";
import { afterAll, beforeAll, expect, it } from "vitest";
import { parseActivity, TASKWEB_CONTEXT } from "../../protocol/index.ts";
import { describeEachBackend } from "../support/backends.ts";
import {
  startTestCluster,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";
import { clusterRsaKey } from "../support/signing.ts";

interface Received {
  path: string;
  headers: Record<string, string>;
  body: string;
}

/** A peer that is only an actor document and two inboxes that record what they get. */
async function startPeer() {
  const keys = await generateCryptoKeyPair("RSASSA-PKCS1-v1_5");
  const received: Received[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      void (async () => {
        if (req.method === "GET" && req.url === "/actor") {
          res.setHeader("content-type", "application/activity+json");
          res.end(
            JSON.stringify({
              "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
              id: `${origin}/actor`,
              type: "Service",
              preferredUsername: "peer",
              inbox: `${origin}/inbox`,
              endpoints: { sharedInbox: `${origin}/shared` },
              publicKey: {
                id: `${origin}/actor#main-key`,
                owner: `${origin}/actor`,
                publicKeyPem: await exportSpki(keys.publicKey),
              },
            }),
          );
          return;
        }
        if (req.method === "POST") {
          const headers: Record<string, string> = {};
          for (const [k, v] of Object.entries(req.headers))
            if (typeof v === "string") headers[k] = v;
          received.push({
            path: req.url ?? "",
            headers,
            body: Buffer.concat(chunks).toString("utf8"),
          });
          res.statusCode = 202;
          res.end();
          return;
        }
        res.statusCode = 404;
        res.end();
      })();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    origin,
    received,
    actor: `${origin}/actor`,
    async follow(actor: string, inbox: string) {
      const body = JSON.stringify({
        "@context": "https://www.w3.org/ns/activitystreams",
        id: `${origin}/follows/1`,
        type: "Follow",
        actor: `${origin}/actor`,
        object: actor,
      });
      const request = await signRequest(
        new Request(inbox, {
          method: "POST",
          headers: { "content-type": "application/activity+json" },
          body,
        }),
        keys.privateKey,
        new URL(`${origin}/actor#main-key`),
        { spec: "rfc9421" },
      );
      return (await fetch(request)).status;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describeEachBackend("the wire format", (backend) => {
  let a: TestCluster;
  let peer: Awaited<ReturnType<typeof startPeer>>;
  const loader = getDocumentLoader({ allowPrivateAddress: true });

  beforeAll(async () => {
    [a, peer] = await Promise.all([startTestCluster(backend, "a"), startPeer()]);
    const A = a.current();
    expect(await peer.follow(A.urls.actor, A.urls.inbox)).toBe(202);
    await waitFor("A to accept the peer", () =>
      peer.received.some((r) => JSON.parse(r.body).type === "Accept") ? true : undefined,
    );
    await A.tasks.createTask({
      taskId: "wire",
      payload: { command: ["sh", "-c", 'printf "exact bytes" > "$TASKWEB_ARTIFACTS/out.txt"'] },
    });
    expect(await waitForResolution(A, "wire")).toBe("completed");
    // ArtifactPublished and TaskCompleted are published by separate jobs: wait for both.
    for (const type of ["ArtifactPublished", "TaskCompleted"]) {
      await waitFor(`the ${type} to arrive`, () =>
        peer.received.some((r) => [JSON.parse(r.body).type].flat().includes(type))
          ? true
          : undefined,
      );
    }
  });
  afterAll(async () => {
    await Promise.all([a?.destroy(), peer?.close()]);
  });

  function deliveries(type: string): Received[] {
    return peer.received.filter((r) => [JSON.parse(r.body).type].flat().includes(type));
  }

  it("delivers TaskCompleted and ArtifactPublished once each, to the shared inbox", () => {
    expect(deliveries("TaskCompleted").map((r) => r.path)).toEqual(["/shared"]);
    expect(deliveries("ArtifactPublished").map((r) => r.path)).toEqual(["/shared"]);
  });

  it("keeps every taskweb property, with the context inline", async () => {
    const A = a.current();
    const body = JSON.parse(deliveries("TaskCompleted")[0]!.body);
    expect(body.type).toEqual(["Activity", "TaskCompleted"]);
    expect(body["@context"]).toContainEqual(TASKWEB_CONTEXT);
    expect(body.object.id).toBe(A.urls.task("wire"));
    expect(body.object.taskState).toBe("completed");
    const stored = await A.database.db
      .selectFrom("artifacts")
      .select(["sha256", "size"])
      .where("task_id", "=", "wire")
      .executeTakeFirstOrThrow();
    expect(body.object.artifacts).toEqual([
      expect.objectContaining({
        name: "out.txt",
        sha256: stored.sha256,
        size: 11,
        url: A.urls.artifactContent("wire", "out.txt"),
      }),
    ]);
    const parsed = parseActivity(body);
    expect(parsed.ok).toBe(true);
  });

  it("signs each delivery with an RFC 9421 signature by A's key", async () => {
    const A = a.current();
    for (const delivery of [...deliveries("TaskCompleted"), ...deliveries("ArtifactPublished")]) {
      expect(delivery.headers["signature-input"]).toMatch(/^sig1=/);
      expect(delivery.headers["content-digest"]).toMatch(/^sha-256=:/);
      const request = new Request(`${peer.origin}${delivery.path}`, {
        method: "POST",
        headers: delivery.headers,
        body: delivery.body,
      });
      const key = await verifyRequest(request, { documentLoader: loader, contextLoader: loader });
      expect(key?.id?.href).toBe((await clusterRsaKey(A)).keyId.href);
      const altered = new Request(`${peer.origin}${delivery.path}`, {
        method: "POST",
        headers: delivery.headers,
        body: `${delivery.body} `,
      });
      expect(
        await verifyRequest(altered, { documentLoader: loader, contextLoader: loader }),
      ).toBeNull();
    }
  });

  it("carries an eddsa-jcs-2022 proof that covers the taskweb properties", async () => {
    const A = a.current();
    // The Linked Data signature is added after the proof, so the proof covers the document
    // without it.
    const { signature, ...body } = JSON.parse(deliveries("TaskCompleted")[0]!.body);
    expect(signature).toMatchObject({
      type: "RsaSignature2017",
      creator: (await clusterRsaKey(A)).keyId.href,
    });
    expect(body.proof).toMatchObject({
      type: "DataIntegrityProof",
      cryptosuite: "eddsa-jcs-2022",
      // The Ed25519 key, under its own id (the RSA key has another).
      verificationMethod: expect.stringMatching(new RegExp(`^${A.urls.actor}#key-\\d+$`)),
    });
    expect(
      await verifyObject(Activity, body, { documentLoader: loader, contextLoader: loader }),
    ).not.toBeNull();
    const forged = { ...body, object: { ...body.object, taskState: "failed" } };
    expect(
      await verifyObject(Activity, forged, { documentLoader: loader, contextLoader: loader }),
    ).toBeNull();
  });
});
