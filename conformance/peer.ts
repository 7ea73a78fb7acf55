/**
 * The suite's own peer cluster: a loopback HTTP server with several actors (RSA and
 * Ed25519 keys, actor documents, WebFinger), inboxes that record every request, and an
 * automatic `Accept` of the target's `Follow`s. Two inboxes answer `TaskCompleted` deliveries
 * as scripted (`flaky`: 503 to the first attempt of each; `gone`: always 410), one actor can
 * replace its key (`rotating`), and documents can be served as redirects. The target server
 * must be able to reach it.
 * @module
 */
import { generateKeyPairSync, randomUUID, type KeyObject } from "node:crypto";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { ACTIVITYSTREAMS_CONTEXT_URL, base58btc } from "../protocol/index.ts";
import { postRfc9421, type ReceivedRequest, type RsaSigner } from "./signing.ts";

/** Names of the actors the suite plays. */
export type PeerName = "upstream" | "follower" | "evil" | "flaky" | "gone" | "rotating";

/**
 * Activity types the scripted inboxes (`flaky`, `gone`) answer as scripted; others get 202.
 * Only one type, so that a run causes few failed deliveries: a sender's circuit breaker may
 * count them per host, and every suite actor shares one host.
 */
const SCRIPTED_TYPES = ["TaskCompleted"];

/** One actor of the suite. */
export interface PeerActor {
  readonly name: PeerName;
  readonly id: string;
  readonly inbox: string;
  readonly signer: RsaSigner;
  readonly publicKeyPem: string;
  readonly multikeyId: string;
  readonly ed25519PublicKey: KeyObject;
  readonly ed25519PrivateKey: KeyObject;
}

/** Options for {@link startPeer}. */
export interface PeerOptions {
  /** Host to bind; default 127.0.0.1. */
  readonly host?: string;
  /** Port to bind; default 0 (any free one). */
  readonly port?: number;
  /** The URL the target reaches the suite at, when not `http://<host>:<port>`. */
  readonly publicUrl?: string;
  /** Accept only Follows from this actor (the target); others are recorded, not answered. */
  readonly acceptFrom?: string;
}

/** The running peer. */
export interface Peer {
  readonly baseUrl: string;
  readonly actors: Readonly<Record<PeerName, PeerActor>>;
  /** Every request to an actor's inbox, oldest first. */
  inbox(name: PeerName): readonly ReceivedRequest[];
  /** Every request the peer received, oldest first. */
  readonly requests: readonly ReceivedRequest[];
  /** The key PEM for a key id the suite's actors own, if any. */
  keyPem(keyId: string): string | undefined;
  /** Task documents the peer serves: url → document. */
  readonly tasks: Map<string, unknown>;
  /** Raw content the peer serves (artifact bytes): url → media type and bytes. */
  readonly files: Map<string, { readonly type: string; readonly body: Buffer }>;
  /** URLs the peer answers with a 302 redirect: url → Location. */
  readonly redirects: Map<string, string>;
  /** Gives `name` a new RSA key under the same key id (the old one stops being served). */
  rotateKey(name: PeerName): PeerActor;
  /** Stop accepting the target's follows automatically (they are still recorded). */
  autoAccept: boolean;
  close(): Promise<void>;
}

function makeActor(base: string, name: PeerName): PeerActor {
  const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const ed = generateKeyPairSync("ed25519");
  const id = `${base}/actors/${name}`;
  return {
    name,
    id,
    inbox: `${id}/inbox`,
    signer: {
      keyId: `${id}#main-key`,
      privateKey: rsa.privateKey,
      privatePem: rsa.privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    },
    publicKeyPem: rsa.publicKey.export({ type: "spki", format: "pem" }).toString(),
    multikeyId: `${id}#ed25519-key`,
    ed25519PublicKey: ed.publicKey,
    ed25519PrivateKey: ed.privateKey,
  };
}

function actorDocument(actor: PeerActor): Record<string, unknown> {
  const raw = actor.ed25519PublicKey.export({ format: "jwk" }).x ?? "";
  const multibase = `z${base58btc(new Uint8Array([0xed, 0x01, ...Buffer.from(raw, "base64url")]))}`;
  return {
    "@context": [
      ACTIVITYSTREAMS_CONTEXT_URL,
      "https://w3id.org/security/v1",
      // Defines assertionMethod ([TW-KEY-2]); multikey/v1 defines only the key's own terms.
      "https://w3id.org/security/data-integrity/v1",
      "https://w3id.org/security/multikey/v1",
    ],
    id: actor.id,
    type: "Service",
    preferredUsername: actor.name,
    inbox: actor.inbox,
    outbox: `${actor.id}/outbox`,
    followers: `${actor.id}/followers`,
    following: `${actor.id}/following`,
    publicKey: { id: actor.signer.keyId, owner: actor.id, publicKeyPem: actor.publicKeyPem },
    assertionMethod: [
      {
        id: actor.multikeyId,
        type: "Multikey",
        controller: actor.id,
        publicKeyMultibase: multibase,
      },
    ],
  };
}

async function readBody(req: IncomingMessage, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const b = chunk as Buffer;
    size += b.length;
    if (size > limit) break;
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString();
}

/** The HTTP signature scheme of a request: `rfc9421` when it has Signature-Input. */
export function signatureScheme(headers: Record<string, string>): "rfc9421" | "cavage" {
  return headers["signature-input"] != null ? "rfc9421" : "cavage";
}

/** Starts the suite's peer server. */
export async function startPeer(options: PeerOptions = {}): Promise<Peer> {
  const host = options.host ?? "127.0.0.1";
  const requests: ReceivedRequest[] = [];
  const tasks = new Map<string, unknown>();
  const files = new Map<string, { readonly type: string; readonly body: Buffer }>();
  const redirects = new Map<string, string>();
  const failedOnce = new Set<string>();
  let base = "";
  const ref: { actors?: Record<PeerName, PeerActor> } = {};
  const state = { autoAccept: true };

  const server: Server = createServer((req, res) => {
    void (async () => {
      const body = await readBody(req, 4 * 1024 * 1024);
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) {
        if (typeof v === "string") headers[k] = v;
        else if (Array.isArray(v)) headers[k] = v.join(", ");
      }
      const url = `${base}${req.url ?? "/"}`;
      const received: ReceivedRequest = {
        method: req.method ?? "GET",
        url,
        headers,
        body,
        receivedAt: Date.now(),
      };
      requests.push(received);
      const path = new URL(url).pathname;
      const all = ref.actors != null ? Object.values(ref.actors) : [];
      const json = (status: number, doc: unknown, type = "application/activity+json") => {
        res.writeHead(status, { "content-type": type });
        res.end(JSON.stringify(doc));
      };
      if (req.method === "GET" && path === "/.well-known/webfinger") {
        const resource = new URL(url).searchParams.get("resource") ?? "";
        const actor = all.find(
          (a) => resource === a.id || resource === `acct:${a.name}@${new URL(base).host}`,
        );
        if (actor == null) return json(404, { error: "not found" }, "application/json");
        return json(
          200,
          {
            subject: resource,
            links: [{ rel: "self", type: "application/activity+json", href: actor.id }],
          },
          "application/jrd+json",
        );
      }
      const redirect = redirects.get(url);
      if (req.method === "GET" && redirect != null) {
        res.writeHead(302, { location: redirect }).end();
        return;
      }
      const actor = all.find((a) => path === new URL(a.id).pathname);
      if (req.method === "GET" && actor != null) return json(200, actorDocument(actor));
      const inboxOf = all.find((a) => path === new URL(a.inbox).pathname);
      if (req.method === "POST" && inboxOf != null) {
        const scripted = scriptedStatus(inboxOf.name, body, headers);
        if (scripted != null) {
          // No Retry-After: the target's own backoff is what REL-05 measures.
          res.writeHead(scripted).end();
          return;
        }
        res.writeHead(202).end();
        if (state.autoAccept) await acceptFollow(inboxOf, body);
        return;
      }
      const collection = all.find((a) => path.startsWith(`${new URL(a.id).pathname}/`));
      if (req.method === "GET" && collection != null && tasks.get(url) == null) {
        if (/\/(outbox|followers|following)$/.test(path)) {
          return json(200, {
            "@context": ACTIVITYSTREAMS_CONTEXT_URL,
            id: url,
            type: "OrderedCollection",
            totalItems: 0,
            orderedItems: [],
          });
        }
      }
      const doc = tasks.get(url);
      if (req.method === "GET" && doc != null) return json(200, doc);
      const file = files.get(url);
      if (req.method === "GET" && file != null) {
        res.writeHead(200, { "content-type": file.type, "content-length": file.body.length });
        res.end(file.body);
        return;
      }
      json(404, { error: "not found" }, "application/json");
    })().catch(() => {
      if (!res.headersSent) res.writeHead(500).end();
    });
  });

  /** The status a scripted inbox answers a delivery with, or undefined for the usual 202. */
  function scriptedStatus(
    name: PeerName,
    body: string,
    headers: Record<string, string>,
  ): number | undefined {
    if (name !== "flaky" && name !== "gone") return undefined;
    let activity: { id?: unknown; type?: unknown };
    try {
      activity = JSON.parse(body) as { id?: unknown; type?: unknown };
    } catch {
      return undefined;
    }
    const types = [activity.type].flat();
    if (!SCRIPTED_TYPES.some((t) => types.includes(t))) return undefined;
    if (name === "gone") return 410;
    // Once per activity and signature scheme: a sender that double-knocks (TW-SIG-6) gets
    // 503 for both knocks, so only a real retry gets through.
    const key = `${String(activity.id)} ${signatureScheme(headers)}`;
    if (failedOnce.has(key)) return undefined;
    failedOnce.add(key);
    return 503;
  }

  /** Answers a Follow of the suite's actor with a signed Accept to the follower's inbox. */
  async function acceptFollow(actor: PeerActor, body: string): Promise<void> {
    let activity: Record<string, unknown>;
    try {
      activity = JSON.parse(body) as Record<string, unknown>;
    } catch {
      return;
    }
    if (activity.type !== "Follow" || typeof activity.actor !== "string") return;
    if (options.acceptFrom != null && activity.actor !== options.acceptFrom) return;
    const follower = activity.actor;
    const response = await fetch(follower, { headers: { accept: "application/activity+json" } });
    if (!response.ok) return;
    const doc = (await response.json()) as { inbox?: unknown };
    if (typeof doc.inbox !== "string") return;
    const accept = {
      "@context": ACTIVITYSTREAMS_CONTEXT_URL,
      id: `${actor.id}/accepts/${randomUUID()}`,
      type: "Accept",
      actor: actor.id,
      object: {
        id: activity.id,
        type: "Follow",
        actor: activity.actor,
        object: activity.object,
      },
    };
    await postRfc9421(doc.inbox, JSON.stringify(accept), actor.signer);
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const hostPart = address.family === "IPv6" ? `[${address.address}]` : address.address;
  base = (options.publicUrl ?? `http://${hostPart}:${address.port}`).replace(/\/+$/, "");
  ref.actors = {
    upstream: makeActor(base, "upstream"),
    follower: makeActor(base, "follower"),
    evil: makeActor(base, "evil"),
    flaky: makeActor(base, "flaky"),
    gone: makeActor(base, "gone"),
    rotating: makeActor(base, "rotating"),
  };
  const fixedActors = ref.actors;
  return {
    baseUrl: base,
    actors: fixedActors,
    requests,
    tasks,
    files,
    redirects,
    rotateKey(name) {
      const old = fixedActors[name];
      const fresh = makeActor(base, name);
      const rotated: PeerActor = {
        ...old,
        signer: { ...fresh.signer, keyId: old.signer.keyId },
        publicKeyPem: fresh.publicKeyPem,
      };
      fixedActors[name] = rotated;
      return rotated;
    },
    get autoAccept() {
      return state.autoAccept;
    },
    set autoAccept(value: boolean) {
      state.autoAccept = value;
    },
    inbox(name) {
      const inbox = new URL(fixedActors[name].inbox).pathname;
      return requests.filter((r) => r.method === "POST" && new URL(r.url).pathname === inbox);
    },
    keyPem(keyId) {
      return Object.values(fixedActors).find((a) => a.signer.keyId === keyId)?.publicKeyPem;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
