/**
 * The bad-input suite: hostile requests against a real cluster B that follows A, each
 * asserting the response, the reason B gave, and that B's database tables, queues and
 * deliveries are exactly as before (see `expectNothingChanges`). Mallory is a third cluster
 * with keys of its own; a harness server on 127.0.0.1 (allowlisted) serves crafted key
 * documents and redirects, and a listener on 127.0.0.2 (not allowlisted) must never be
 * reached. Cases follow shared/notes §3.2 and spec/v1/limits.md §6.
 */
import { randomUUID } from "node:crypto";
import { createServer, request as httpRequest, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { signRequest } from "@fedify/fedify";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { RunningCluster } from "../../server/cluster.ts";
import { pruneProcessedActivities } from "../../server/federation/inbox.ts";
import { describeEachBackend } from "../support/backends.ts";
import {
  follow,
  startTestCluster,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";
import { expectNothingChanges, taskCompleted } from "../support/inbox-input.ts";
import { cavagePost, clusterRsaKey, signedPost, type SigningKey } from "../support/signing.ts";

/** Starts a server on `host`; resolves to its base URL. */
async function serve(server: Server, host: string): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return `http://${host}:${(server.address() as AddressInfo).port}`;
}

/** POSTs raw bytes with the given headers (no signature unless the headers carry one). */
function rawPost(
  url: string,
  body: Buffer | string,
  headers: Record<string, string>,
): Promise<{ status: number; text: string }> {
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: target.hostname, port: target.port, path: target.pathname, method: "POST", headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }),
        );
      },
    );
    // The server may answer and close before the whole body is sent (413).
    req.on("error", (error) => (error.message.includes("EPIPE") ? undefined : reject(error)));
    req.end(body);
  });
}

describeEachBackend("bad input", (backend) => {
  let a: TestCluster;
  let b: TestCluster;
  let m: TestCluster;
  let A: RunningCluster;
  let B: RunningCluster;
  let M: RunningCluster;
  let aKey: SigningKey;
  let mKey: SigningKey;
  let target: string;
  let harness: Server;
  let harnessUrl: string;
  let forbidden: Server;
  let forbiddenUrl: string;
  const forbiddenHits: string[] = [];
  const harnessHits: string[] = [];
  let peerKey: CryptoKeyPair;
  let peerPem: string;

  beforeAll(async () => {
    peerKey = await crypto.subtle.generateKey(
      {
        name: "RSASSA-PKCS1-v1_5",
        modulusLength: 2048,
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: "SHA-256",
      },
      true,
      ["sign", "verify"],
    );
    const spki = Buffer.from(await crypto.subtle.exportKey("spki", peerKey.publicKey));
    peerPem = `-----BEGIN PUBLIC KEY-----\n${spki.toString("base64").replace(/(.{64})/g, "$1\n")}\n-----END PUBLIC KEY-----\n`;
    forbidden = createServer((req, res) => {
      forbiddenHits.push(req.url ?? "");
      res.writeHead(200, { "content-type": "application/activity+json" }).end("{}");
    });
    forbiddenUrl = await serve(forbidden, "127.0.0.2");
    harness = createServer((req, res) => {
      harnessHits.push(req.url ?? "");
      const path = new URL(req.url ?? "/", "http://x").pathname;
      void (async () => {
        if (path === "/to-private") {
          res.writeHead(302, { location: `${forbiddenUrl}/key` }).end();
        } else if (path === "/to-metadata") {
          res.writeHead(302, { location: "http://169.254.169.254/latest/meta-data/" }).end();
        } else if (path === "/loop") {
          res.writeHead(302, { location: "/loop" }).end();
        } else if (path === "/plain" || path === "/text" || path === "/wrong-id") {
          // A's real actor document, served with the wrong media type or under another id.
          const doc = (await (
            await fetch(A.urls.actor, { headers: { accept: "application/activity+json" } })
          ).json()) as Record<string, unknown>;
          const type =
            path === "/plain"
              ? "application/json"
              : path === "/text"
                ? "text/plain"
                : "application/activity+json";
          res.writeHead(200, { "content-type": type }).end(JSON.stringify(doc));
        } else if (path === "/evil-actor" || path === "/good-actor") {
          res.writeHead(200, { "content-type": "application/activity+json" }).end(
            JSON.stringify({
              "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
              id: `${harnessUrl}${path}`,
              type: "Service",
              preferredUsername: path.slice(1),
              // The evil actor asks for deliveries to the cloud metadata address.
              inbox:
                path === "/evil-actor"
                  ? "http://169.254.169.254/latest/inbox"
                  : `${harnessUrl}/good-inbox`,
              publicKey: {
                id: `${harnessUrl}${path}#main-key`,
                owner: `${harnessUrl}${path}`,
                publicKeyPem: peerPem,
              },
            }),
          );
        } else if (path === "/good-inbox") {
          res.writeHead(202).end();
        } else if (path === "/big") {
          res
            .writeHead(200, { "content-type": "application/activity+json" })
            .end(JSON.stringify({ pad: "x".repeat(2 * 1024 * 1024) }));
        } else if (path === "/slow") {
          res.writeHead(200, { "content-type": "application/activity+json" });
          res.write("{"); // never finished
        } else {
          res.writeHead(404).end();
        }
      })().catch(() => res.writeHead(500).end());
    });
    harnessUrl = await serve(harness, "127.0.0.1");

    [a, b, m] = await Promise.all([
      startTestCluster(backend, "a"),
      startTestCluster(backend, "b"),
      startTestCluster(backend, "mallory"),
    ]);
    A = a.current();
    B = b.current();
    M = m.current();
    await follow(B, A);
    aKey = await clusterRsaKey(A);
    mKey = await clusterRsaKey(M);
    target = A.urls.task("never-runs");
    await B.tasks.createTask({
      taskId: "waits-on-a",
      dependencies: [target],
      payload: { command: ["true"] },
    });
    await B.tasks.createTask({
      taskId: "waits-on-mallory",
      dependencies: [M.urls.task("x")],
      payload: { command: ["true"] },
    });
    // B fetches A's key once, with a genuine activity about another task.
    expect(
      (await signedPost(B.urls.inbox, taskCompleted(A, A.urls.task("warm-up")), { key: aKey }))
        .status,
    ).toBe(202);
    await new Promise((r) => setTimeout(r, 300));
  });
  afterAll(async () => {
    await Promise.all([a?.destroy(), b?.destroy(), m?.destroy()]);
    for (const server of [harness, forbidden]) {
      server?.closeAllConnections();
      await new Promise((r) => server?.close(r));
    }
  });

  /** B must end as it was; key fetches from A's and mallory's actors are allowed. */
  const unchanged = (
    send: () => Promise<{ status: number; text?: string }>,
    status: number,
    because: string | readonly string[] | RegExp,
  ) =>
    expectNothingChanges(b, send, status, because, {
      allowOutbound: (url) =>
        url.startsWith(A.urls.actor) || url.startsWith(M.urls.actor) || url.startsWith(harnessUrl),
    });

  const forged = () => taskCompleted(A, target);
  /** A's private key under another key id. */
  const aKeyAt = (keyId: string): SigningKey => ({
    keyId: new URL(keyId),
    privateKey: aKey.privateKey,
  });
  /** Signed for `signedUrl`, sent to `sentUrl`. */
  async function signedForAnotherUrl(signedUrl: string, sentUrl: string, body: unknown) {
    const text = JSON.stringify(body);
    const request = await signRequest(
      new Request(signedUrl, {
        method: "POST",
        headers: { "content-type": "application/activity+json" },
        body: text,
      }),
      aKey.privateKey,
      aKey.keyId,
      { spec: "rfc9421" },
    );
    const response = await fetch(sentUrl, {
      method: "POST",
      headers: new Headers(request.headers),
      body: text,
    });
    return { status: response.status, text: await response.text() };
  }
  /** A genuine signed request whose headers are then changed by `edit`. */
  async function withHeaders(body: unknown, edit: (headers: Headers) => void) {
    const text = JSON.stringify(body);
    const request = await signRequest(
      new Request(B.urls.inbox, {
        method: "POST",
        headers: { "content-type": "application/activity+json" },
        body: text,
      }),
      aKey.privateKey,
      aKey.keyId,
      { spec: "rfc9421" },
    );
    const headers = new Headers(request.headers);
    edit(headers);
    const response = await fetch(B.urls.inbox, { method: "POST", headers, body: text });
    return { status: response.status, text: await response.text() };
  }

  // ── Authentication ───────────────────────────────────────────────────────────────────

  it("refuses an unsigned TaskCompleted", async () => {
    await unchanged(() => signedPost(B.urls.inbox, forged()), 401, "no-signature");
  });

  it("refuses a TaskCompleted signed by a key of another actor (mallory)", async () => {
    await unchanged(
      () => signedPost(B.urls.inbox, forged(), { key: mKey }),
      401,
      "key-not-owned-by-actor",
    );
  });

  it("refuses a TaskCompleted signed with A's key claimed under mallory's key id", async () => {
    await unchanged(
      () => signedPost(B.urls.inbox, forged(), { key: aKeyAt(mKey.keyId.href) }),
      401,
      /^(invalid-signature|key-not-owned-by-actor)$/,
    );
  });

  it("refuses a signature made ten minutes ago", async () => {
    await unchanged(
      () =>
        signedPost(B.urls.inbox, forged(), {
          key: aKey,
          signedAt: new Date(Date.now() - 600_000),
        }),
      401,
      "invalid-signature",
    );
  });

  it("refuses a signature dated ten minutes in the future", async () => {
    await unchanged(
      () =>
        signedPost(B.urls.inbox, forged(), {
          key: aKey,
          signedAt: new Date(Date.now() + 600_000),
        }),
      401,
      "invalid-signature",
    );
  });

  it("refuses a draft-cavage signature made two hours ago", async () => {
    await unchanged(
      () =>
        signedPost(B.urls.inbox, forged(), {
          key: aKey,
          spec: "draft-cavage-http-signatures-12",
          signedAt: new Date(Date.now() - 2 * 3600_000),
        }),
      401,
      "invalid-signature",
    );
  });

  it("refuses an RFC 9421 signed body altered after signing", async () => {
    await unchanged(
      () =>
        signedPost(B.urls.inbox, taskCompleted(A, A.urls.task("other")), {
          key: aKey,
          tamper: (body) => body.replaceAll(A.urls.task("other"), target),
        }),
      401,
      "invalid-signature",
    );
  });

  it("refuses a draft-cavage signed body altered after signing", async () => {
    await unchanged(
      () =>
        signedPost(B.urls.inbox, taskCompleted(A, A.urls.task("other")), {
          key: aKey,
          spec: "draft-cavage-http-signatures-12",
          tamper: (body) => body.replaceAll(A.urls.task("other"), target),
        }),
      401,
      "invalid-signature",
    );
  });

  it("refuses a draft-cavage signature that does not cover the digest", async () => {
    await unchanged(
      () => cavagePost(B.urls.inbox, forged(), aKey, ["(request-target)", "host", "date"]),
      401,
      "body-not-covered",
    );
  });

  it("accepts the same draft-cavage signature when it covers the digest", async () => {
    // The control for the case above: only the covered headers differ.
    const response = await cavagePost(
      B.urls.inbox,
      taskCompleted(A, A.urls.task("cavage-control")),
      aKey,
      ["(request-target)", "host", "date", "digest"],
    );
    expect(response.status).toBe(202);
  });

  it("refuses an RFC 9421 signature whose covered components leave out content-digest", async () => {
    await unchanged(
      () =>
        withHeaders(forged(), (h) =>
          h.set(
            "signature-input",
            (h.get("signature-input") ?? "").replace(/\s*"content-digest"/, ""),
          ),
        ),
      401,
      "body-not-covered",
    );
  });

  it("refuses a valid signature made for another inbox", async () => {
    await unchanged(
      () => signedForAnotherUrl(B.urls.sharedInbox, B.urls.inbox, forged()),
      401,
      "invalid-signature",
    );
  });

  it("refuses a Content-Digest that does not match the body", async () => {
    await unchanged(
      () =>
        withHeaders(forged(), (h) =>
          h.set("content-digest", `sha-256=:${Buffer.alloc(32).toString("base64")}:`),
        ),
      401,
      "invalid-signature",
    );
  });

  it("refuses a Signature-Input without a Signature", async () => {
    await unchanged(
      () => withHeaders(forged(), (h) => h.delete("signature")),
      401,
      "invalid-signature",
    );
  });

  it("refuses a garbage Signature header", async () => {
    await unchanged(
      () =>
        rawPost(B.urls.inbox, JSON.stringify(forged()), {
          "content-type": "application/activity+json",
          signature: "this is not a signature",
        }),
      401,
      "body-not-covered",
    );
  });

  // ── Key fetching: SSRF targets, redirects, bad documents ────────────────────────────

  it("does not fetch a key id on a private address that is not allowlisted", async () => {
    forbiddenHits.length = 0;
    await unchanged(
      () => signedPost(B.urls.inbox, forged(), { key: aKeyAt(`${forbiddenUrl}/key#main`) }),
      401,
      "key-fetch-failed",
    );
    expect(forbiddenHits).toEqual([]);
  });

  it("does not fetch a key id on the cloud metadata address", async () => {
    await unchanged(
      () =>
        signedPost(B.urls.inbox, forged(), {
          key: aKeyAt("http://169.254.169.254/latest/meta-data/key#main"),
        }),
      401,
      "key-fetch-failed",
    );
  });

  it("does not fetch a key id on an IPv4-mapped IPv6 loopback address", async () => {
    forbiddenHits.length = 0;
    const port = new URL(forbiddenUrl).port;
    await unchanged(
      () =>
        signedPost(B.urls.inbox, forged(), {
          key: aKeyAt(`http://[::ffff:127.0.0.2]:${port}/key#main`),
        }),
      401,
      "key-fetch-failed",
    );
    expect(forbiddenHits).toEqual([]);
  });

  it("does not follow a key id's redirect to a private address", async () => {
    forbiddenHits.length = 0;
    harnessHits.length = 0;
    await unchanged(
      () => signedPost(B.urls.inbox, forged(), { key: aKeyAt(`${harnessUrl}/to-private#k`) }),
      401,
      "key-fetch-failed",
    );
    expect(harnessHits).toEqual(["/to-private"]);
    expect(forbiddenHits).toEqual([]);
  });

  it("does not follow a key id's redirect to the metadata address", async () => {
    await unchanged(
      () => signedPost(B.urls.inbox, forged(), { key: aKeyAt(`${harnessUrl}/to-metadata#k`) }),
      401,
      "key-fetch-failed",
    );
  });

  it("gives up a key id that redirects in a loop after three redirects", async () => {
    harnessHits.length = 0;
    await unchanged(
      () => signedPost(B.urls.inbox, forged(), { key: aKeyAt(`${harnessUrl}/loop#k`) }),
      401,
      "key-fetch-failed",
    );
    expect(harnessHits).toHaveLength(4);
  });

  it("refuses a key document served as application/json", async () => {
    await unchanged(
      () => signedPost(B.urls.inbox, forged(), { key: aKeyAt(`${harnessUrl}/plain#main-key`) }),
      401,
      "key-fetch-failed",
    );
  });

  it("refuses a key document served as text/plain", async () => {
    await unchanged(
      () => signedPost(B.urls.inbox, forged(), { key: aKeyAt(`${harnessUrl}/text#main-key`) }),
      401,
      "key-fetch-failed",
    );
  });

  it("refuses a key document whose id is not the key id", async () => {
    await unchanged(
      () => signedPost(B.urls.inbox, forged(), { key: aKeyAt(`${harnessUrl}/wrong-id#main-key`) }),
      401,
      /^(key-fetch-failed|invalid-signature|key-not-owned-by-actor)$/,
    );
  });

  it("refuses a key document over the size limit", async () => {
    await unchanged(
      () => signedPost(B.urls.inbox, forged(), { key: aKeyAt(`${harnessUrl}/big#k`) }),
      401,
      "key-fetch-failed",
    );
  });

  it("does not fetch file: and data: key ids", async () => {
    for (const keyId of ["file:///etc/passwd#k", "data:application/json,{}"]) {
      await unchanged(
        () => signedPost(B.urls.inbox, forged(), { key: aKeyAt(keyId) }),
        401,
        /^(key-fetch-failed|invalid-signature)$/,
      );
    }
  });

  // ── Origin and authorization ──────────────────────────────────────────────────────────

  it("ignores a TaskCompleted from a cluster B does not follow", async () => {
    await unchanged(
      () => signedPost(B.urls.inbox, taskCompleted(M, M.urls.task("x")), { key: mKey }),
      202,
      "not-followed",
    );
  });

  it("ignores a TaskCompleted whose task is on another origin than its actor", async () => {
    await unchanged(
      () => signedPost(B.urls.inbox, taskCompleted(A, M.urls.task("x")), { key: aKey }),
      202,
      "invalid",
    );
  });

  it("ignores a TaskCompleted whose activity id is on another origin", async () => {
    await unchanged(
      () =>
        signedPost(B.urls.inbox, taskCompleted(A, target, { id: M.urls.activity(randomUUID()) }), {
          key: aKey,
        }),
      202,
      "invalid",
    );
  });

  it("ignores a TaskCompleted whose task is attributed to another actor", async () => {
    const activity = taskCompleted(A, target) as unknown as { object: Record<string, unknown> };
    activity.object.attributedTo = M.urls.actor;
    await unchanged(() => signedPost(B.urls.inbox, activity, { key: aKey }), 202, "invalid");
  });

  it("ignores a TaskCompleted whose attributedTo is not a URL", async () => {
    const activity = taskCompleted(A, target) as unknown as { object: Record<string, unknown> };
    activity.object.attributedTo = 1;
    await unchanged(() => signedPost(B.urls.inbox, activity, { key: aKey }), 202, "invalid");
  });

  it("refuses an activity whose actor is given as an object of another actor's key", async () => {
    const activity = { ...forged(), actor: { id: A.urls.actor, type: "Service" } };
    await unchanged(
      () => signedPost(B.urls.inbox, activity, { key: mKey }),
      401,
      "key-not-owned-by-actor",
    );
  });

  // ── JSON-LD reshaping and shape ───────────────────────────────────────────────────────

  it("refuses an activity moved into @graph", async () => {
    const activity = forged() as unknown as Record<string, unknown>;
    const { "@context": context, ...rest } = activity;
    await unchanged(
      () => signedPost(B.urls.inbox, { "@context": context, "@graph": [rest] }, { key: aKey }),
      400,
      "malformed",
    );
  });

  it("does not act on an activity carrying @included", async () => {
    const activity = {
      ...forged(),
      id: A.urls.activity(randomUUID()),
      object: A.urls.task("never-runs-either"),
      "@included": [(forged() as unknown as { object: unknown }).object],
    };
    await unchanged(
      () => signedPost(B.urls.inbox, activity, { key: aKey }),
      202,
      /^(invalid|unparsable)$/,
    );
  });

  it("does not act on an activity carrying @reverse", async () => {
    const activity = {
      ...forged(),
      "@reverse": { "https://www.w3.org/ns/activitystreams#object": { id: target } },
    };
    await unchanged(
      () => signedPost(B.urls.inbox, activity, { key: aKey }),
      202,
      /^(invalid|unparsable)$/,
    );
  });

  it("ignores a signed activity whose @context needs a remote document", async () => {
    const activity = {
      ...forged(),
      "@context": ["https://www.w3.org/ns/activitystreams", `${forbiddenUrl}/context.jsonld`],
    };
    forbiddenHits.length = 0;
    await unchanged(
      () => signedPost(B.urls.inbox, activity, { key: aKey }),
      202,
      "unsupported-context",
    );
    expect(forbiddenHits).toEqual([]);
  });

  it("answers 400, not 500, to a signed activity the ActivityPub library cannot read", async () => {
    // Found by the fuzz run: a `published` that is an object made the library throw.
    const activity = { ...forged(), published: {} };
    await unchanged(() => signedPost(B.urls.inbox, activity, { key: aKey }), 400, []);
  });

  it("ignores an activity of an unknown type", async () => {
    const activity = { ...forged(), type: ["Activity", "TaskExploded"] };
    await unchanged(() => signedPost(B.urls.inbox, activity, { key: aKey }), 202, "invalid");
  });

  it("refuses a body that is not JSON", async () => {
    await unchanged(() => signedPost(B.urls.inbox, "{not json", { key: aKey }), 400, "malformed");
  });

  it("refuses a JSON array", async () => {
    await unchanged(
      () => signedPost(B.urls.inbox, JSON.stringify([forged()]), { key: aKey }),
      400,
      "malformed",
    );
  });

  it("refuses a body that is not UTF-8", async () => {
    await unchanged(
      () =>
        rawPost(B.urls.inbox, Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]), {
          "content-type": "application/activity+json",
        }),
      400,
      "malformed",
    );
  });

  it("refuses an activity without an actor", async () => {
    const { actor: _actor, ...activity } = forged() as unknown as Record<string, unknown>;
    await unchanged(() => signedPost(B.urls.inbox, activity, { key: aKey }), 400, "malformed");
  });

  it("does not act on an activity without an id", async () => {
    const { id: _id, ...activity } = forged() as unknown as Record<string, unknown>;
    await unchanged(
      () => signedPost(B.urls.inbox, activity, { key: aKey }),
      202,
      /^(invalid|unparsable)$/,
    );
  });

  // ── Sizes and media types ─────────────────────────────────────────────────────────────

  it("refuses a declared Content-Length over 1 MiB before reading the body", async () => {
    await unchanged(
      () =>
        rawPost(B.urls.inbox, "x".repeat(2 * 1024 * 1024), {
          "content-type": "application/activity+json",
          "content-length": String(2 * 1024 * 1024),
        }),
      413,
      "too-large",
    );
  });

  it("refuses a chunked body that grows past 1 MiB", async () => {
    await unchanged(
      () =>
        rawPost(B.urls.inbox, "x".repeat(2 * 1024 * 1024), {
          "content-type": "application/activity+json",
          "transfer-encoding": "chunked",
        }),
      413,
      "too-large",
    );
  });

  it("refuses a signed body nested deeper than 32", async () => {
    const deep = JSON.stringify({ ...forged(), deep: "DEEP" }).replace(
      '"DEEP"',
      `${"[".repeat(33)}${"]".repeat(33)}`,
    );
    await unchanged(() => signedPost(B.urls.inbox, deep, { key: aKey }), 400, "malformed");
  });

  it("refuses 100,000 nested brackets without crashing", async () => {
    const deep = `{"actor":"x","deep":${"[".repeat(100_000)}${"]".repeat(100_000)}}`;
    await unchanged(() => signedPost(B.urls.inbox, deep, { key: aKey }), 400, "malformed");
  });

  it("refuses text/plain", async () => {
    await unchanged(
      () => signedPost(B.urls.inbox, forged(), { key: aKey, contentType: "text/plain" }),
      415,
      "unsupported-media-type",
    );
  });

  it("refuses a form-encoded body", async () => {
    await unchanged(
      () =>
        signedPost(B.urls.inbox, forged(), {
          key: aKey,
          contentType: "application/x-www-form-urlencoded",
        }),
      415,
      "unsupported-media-type",
    );
  });

  it("refuses a request without a Content-Type", async () => {
    await unchanged(
      () => rawPost(B.urls.inbox, JSON.stringify(forged()), {}),
      415,
      "unsupported-media-type",
    );
  });

  // ── Replay ────────────────────────────────────────────────────────────────────────────

  it("acts on a genuine TaskCompleted once; replays to either inbox change nothing", async () => {
    const activity = taskCompleted(A, target);
    expect((await signedPost(B.urls.inbox, activity, { key: aKey })).status).toBe(202);
    expect(await waitForResolution(B, "waits-on-a")).toBe("completed");
    await waitFor("B's outbox to settle", async () => {
      const rows = await B.database.db.selectFrom("outbox").select("fanned_out_at").execute();
      return rows.every((r) => r.fanned_out_at != null) ? true : undefined;
    });
    await new Promise((r) => setTimeout(r, 500));
    // Fedify's own short-lived cache answers a replay to the same inbox before taskweb…
    await unchanged(() => signedPost(B.urls.inbox, activity, { key: aKey }), 202, []);
    // …but not one to the shared inbox: there taskweb's durable dedupe catches it.
    await unchanged(
      () => signedPost(B.urls.sharedInbox, activity, { key: aKey }),
      202,
      "duplicate",
    );
    // The same id with another body is not processed again either (here the shared inbox's
    // short-lived cache answers first; the 25-day case below reaches taskweb's dedupe).
    const altered = { ...taskCompleted(A, A.urls.task("other-task")), id: activity.id };
    await unchanged(() => signedPost(B.urls.sharedInbox, altered, { key: aKey }), 202, []);
  });

  it("refuses a replay of an activity processed 25 days ago (past any in-memory cache)", async () => {
    const activity = taskCompleted(A, A.urls.task("old"));
    await B.database.db
      .insertInto("inbox_processed")
      .values({
        activity_id: activity.id,
        actor_id: A.urls.actor,
        types: JSON.stringify(["TaskCompleted"]),
        received_at: new Date(Date.now() - 25 * 86_400_000),
      })
      .execute();
    await unchanged(
      () => signedPost(B.urls.sharedInbox, activity, { key: aKey }),
      202,
      "duplicate",
    );
  });

  it("keeps dedupe records for the retention and prunes only older ones", async () => {
    const row = (id: string, days: number) => ({
      activity_id: id,
      actor_id: A.urls.actor,
      types: JSON.stringify(["TaskCompleted"]),
      received_at: new Date(Date.now() - days * 86_400_000),
    });
    const young = A.urls.activity(randomUUID());
    const old = A.urls.activity(randomUUID());
    await B.database.db
      .insertInto("inbox_processed")
      .values([row(young, 29), row(old, 31)])
      .execute();
    await expect(pruneProcessedActivities(B.database.db, 7)).rejects.toThrow(/at least 30/);
    expect(await pruneProcessedActivities(B.database.db, 30)).toBe(1);
    const left = await B.database.db
      .selectFrom("inbox_processed")
      .select("activity_id")
      .where("activity_id", "in", [young, old])
      .execute();
    expect(left.map((r) => r.activity_id)).toEqual([young]);
  });

  // Last: the control below adds a follower, which the cases above must not see.
  it("ignores a Follow from an actor whose inbox is on a private address", async () => {
    const followFrom = (path: string) => ({
      "@context": "https://www.w3.org/ns/activitystreams",
      id: `${harnessUrl}${path}#follows/${randomUUID()}`,
      type: "Follow",
      actor: `${harnessUrl}${path}`,
      object: B.urls.actor,
    });
    const key = (path: string): SigningKey => ({
      keyId: new URL(`${harnessUrl}${path}#main-key`),
      privateKey: peerKey.privateKey,
    });
    await unchanged(
      () => signedPost(B.urls.inbox, followFrom("/evil-actor"), { key: key("/evil-actor") }),
      202,
      [],
    );
    // The control: the same Follow from an actor with a reachable inbox is accepted.
    expect(
      (await signedPost(B.urls.inbox, followFrom("/good-actor"), { key: key("/good-actor") }))
        .status,
    ).toBe(202);
    const followers = await B.database.db.selectFrom("followers").select("actor_id").execute();
    expect(followers.map((f) => f.actor_id)).toEqual([`${harnessUrl}/good-actor`]);
  });
});
