/**
 * Discovery: the actor document, its keys, WebFinger, NodeInfo and collections.
 * @module
 */
import { createPublicKey } from "node:crypto";
import { decodeBase58btc, sameOrigin } from "../../protocol/index.ts";
import type { Context } from "../context.ts";
import { fail, notObservable, pass, type Check, type Verdict } from "../model.ts";

const AS_ACCEPT = "application/activity+json";
const LD_ACCEPT = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"';

/** GETs `url` and parses JSON; never throws. */
export async function getJson(
  url: string,
  accept = AS_ACCEPT,
): Promise<{ status: number; type: string; json: unknown; location: string | null }> {
  const response = await fetch(url, { headers: { accept }, redirect: "manual" });
  const text = await response.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return {
    status: response.status,
    type: response.headers.get("content-type") ?? "",
    json,
    location: response.headers.get("location"),
  };
}

const isAs2 = (type: string) =>
  /^application\/activity\+json\b/i.test(type) || /^application\/ld\+json\b/i.test(type);

function record(v: unknown): Record<string, unknown> | undefined {
  return v != null && typeof v === "object" && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : undefined;
}

function rsaKey(ctx: Context): Record<string, unknown> | undefined {
  const k = ctx.actor.publicKey;
  return record(Array.isArray(k) ? k[0] : k);
}

function multikeys(ctx: Context): Record<string, unknown>[] {
  const a = ctx.actor.assertionMethod;
  return (Array.isArray(a) ? a : [a]).map(record).filter((x) => x != null);
}

function webfingerUrl(ctx: Context, resource: string): string {
  return `${new URL(ctx.actorId).origin}/.well-known/webfinger?resource=${encodeURIComponent(resource)}`;
}

function selfLink(json: unknown): string | undefined {
  const links = record(json)?.links;
  if (!Array.isArray(links)) return undefined;
  for (const l of links) {
    const link = record(l);
    if (
      link?.rel === "self" &&
      typeof link.type === "string" &&
      isAs2(link.type) &&
      typeof link.href === "string"
    ) {
      return link.href;
    }
  }
  return undefined;
}

async function collection(ctx: Context, name: string): Promise<Verdict> {
  const url = ctx.actor[name];
  if (typeof url !== "string") return fail(`the actor has no "${name}" URL`);
  const got = await getJson(url);
  const doc = record(got.json);
  if (got.status !== 200) return fail(`GET ${url}: expected 200, got ${got.status}`);
  const type = doc?.type;
  const types = Array.isArray(type) ? type : [type];
  if (!types.includes("OrderedCollection")) {
    return fail(`${name} ${url}: expected type OrderedCollection, got ${JSON.stringify(type)}`);
  }
  return pass();
}

export const discoveryChecks: Check[] = [
  {
    id: "DISC-01",
    area: "discovery",
    level: "MUST",
    requirements: ["TW-ACTOR-2"],
    title: "actor document is served as ActivityStreams with its own id",
    async run(ctx) {
      const got = await getJson(ctx.target);
      if (got.status !== 200) return fail(`expected 200, got ${got.status}`);
      if (!isAs2(got.type)) return fail(`expected an AS2 media type, got "${got.type}"`);
      const id = record(got.json)?.id;
      if (id !== ctx.target) return fail(`expected id ${ctx.target}, got ${JSON.stringify(id)}`);
      return pass();
    },
  },
  {
    id: "DISC-02",
    area: "discovery",
    level: "MUST",
    requirements: ["TW-ACTOR-2"],
    title: "actor document is also served for the ld+json ActivityStreams profile",
    async run(ctx) {
      const got = await getJson(ctx.target, LD_ACCEPT);
      if (got.status !== 200) return fail(`expected 200, got ${got.status}`);
      if (!isAs2(got.type)) return fail(`expected an AS2 media type, got "${got.type}"`);
      const id = record(got.json)?.id;
      return id === ctx.target ? pass() : fail(`expected id ${ctx.target}, got ${String(id)}`);
    },
  },
  {
    id: "DISC-03",
    area: "discovery",
    level: "MUST",
    requirements: ["TW-ACTOR-1"],
    title: "actor is a Service with preferredUsername, inbox, outbox, followers, following",
    async run(ctx) {
      const a = ctx.actor;
      const types = Array.isArray(a.type) ? a.type : [a.type];
      if (!types.includes("Service"))
        return fail(`expected type Service, got ${JSON.stringify(a.type)}`);
      const missing = ["preferredUsername", "inbox", "outbox", "followers", "following"].filter(
        (k) => typeof a[k] !== "string",
      );
      return missing.length === 0 ? pass() : fail(`missing: ${missing.join(", ")}`);
    },
  },
  {
    id: "DISC-04",
    area: "discovery",
    level: "SHOULD",
    requirements: ["TW-ACTOR-4"],
    title: "actor offers a shared inbox in endpoints.sharedInbox",
    async run(ctx) {
      const s = record(ctx.actor.endpoints)?.sharedInbox;
      return typeof s === "string" ? pass() : fail("no endpoints.sharedInbox");
    },
  },
  {
    id: "DISC-05",
    area: "discovery",
    level: "SHOULD",
    requirements: ["TW-ACTOR-3"],
    title: "actor id uses https on a public network",
    async run(ctx) {
      const host = new URL(ctx.actorId).hostname;
      if (/^(127\.|10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.|\[?::1\]?$|localhost$)/.test(host)) {
        return notObservable(`the target is on a private or loopback address (${host})`);
      }
      return ctx.actorId.startsWith("https:") ? pass() : fail(`expected https, got ${ctx.actorId}`);
    },
  },
  {
    id: "DISC-06",
    area: "discovery",
    level: "MUST",
    requirements: ["TW-KEY-1"],
    title: "publicKey is an RSA key of at least 2048 bits with id, owner and publicKeyPem",
    async run(ctx) {
      const key = rsaKey(ctx);
      if (key == null) return fail("no publicKey");
      if (typeof key.id !== "string" || typeof key.owner !== "string") {
        return fail("publicKey lacks id or owner");
      }
      if (typeof key.publicKeyPem !== "string") return fail("publicKey lacks publicKeyPem");
      try {
        const k = createPublicKey(key.publicKeyPem);
        const bits = k.asymmetricKeyDetails?.modulusLength ?? 0;
        if (k.asymmetricKeyType !== "rsa") return fail(`expected RSA, got ${k.asymmetricKeyType}`);
        if (bits < 2048) return fail(`expected ≥ 2048 bits, got ${bits}`);
      } catch (error) {
        return fail(`publicKeyPem does not parse: ${String(error)}`);
      }
      return pass();
    },
  },
  {
    id: "DISC-07",
    area: "discovery",
    level: "MUST",
    requirements: ["TW-KEY-2"],
    title: "assertionMethod has an Ed25519 Multikey (FEP-521a)",
    async run(ctx) {
      for (const k of multikeys(ctx)) {
        if (k.type !== "Multikey" || typeof k.publicKeyMultibase !== "string") continue;
        const mb = k.publicKeyMultibase;
        if (!mb.startsWith("z")) continue;
        try {
          const bytes = decodeBase58btc(mb.slice(1));
          if (bytes.length === 34 && bytes[0] === 0xed && bytes[1] === 0x01) return pass();
        } catch {
          continue;
        }
      }
      return fail("no Multikey with a base58-btc Ed25519 publicKeyMultibase (0xed01 + 32 bytes)");
    },
  },
  {
    id: "DISC-08",
    area: "discovery",
    level: "MUST",
    requirements: ["TW-KEY-3"],
    title: "key ids are on the actor's origin and owned/controlled by the actor",
    async run(ctx) {
      const problems: string[] = [];
      const key = rsaKey(ctx);
      if (key != null) {
        if (typeof key.id !== "string" || !sameOrigin(key.id, ctx.actorId)) {
          problems.push(`publicKey id ${String(key.id)} not on the actor's origin`);
        }
        if (key.owner !== ctx.actorId) problems.push(`publicKey owner ${String(key.owner)}`);
      } else problems.push("no publicKey");
      for (const k of multikeys(ctx)) {
        if (typeof k.id !== "string" || !sameOrigin(k.id, ctx.actorId)) {
          problems.push(`assertionMethod id ${String(k.id)} not on the actor's origin`);
        }
        if (k.controller !== ctx.actorId) problems.push(`controller ${String(k.controller)}`);
      }
      return problems.length === 0 ? pass() : fail(problems.join("; "));
    },
  },
  {
    id: "DISC-09",
    area: "discovery",
    level: "SHOULD",
    requirements: ["TW-KEY-4"],
    title: "key ids are the actor id with a fragment",
    async run(ctx) {
      const ids = [rsaKey(ctx)?.id, ...multikeys(ctx).map((k) => k.id)];
      const bad = ids.filter((id) => typeof id !== "string" || !id.startsWith(`${ctx.actorId}#`));
      return bad.length === 0 ? pass() : fail(`not actor#fragment: ${bad.map(String).join(", ")}`);
    },
  },
  {
    id: "DISC-10",
    area: "discovery",
    level: "MUST",
    requirements: ["TW-KEY-3", "TW-KEY-6"],
    title: "the RSA key id dereferences to a document holding that key",
    async run(ctx) {
      const id = rsaKey(ctx)?.id;
      if (typeof id !== "string") return fail("no publicKey id");
      const got = await getJson(id.split("#")[0] ?? id);
      if (got.status !== 200) return fail(`GET ${id}: expected 200, got ${got.status}`);
      const doc = record(got.json);
      const keys = [doc, ...[doc?.publicKey].flat().map(record)];
      return keys.some((k) => k?.id === id && typeof k.publicKeyPem === "string")
        ? pass()
        : fail(`the document at ${id} has no key with that id`);
    },
  },
  {
    id: "DISC-11",
    area: "discovery",
    level: "MUST",
    requirements: ["TW-DISC-1"],
    title: "WebFinger answers acct:<name>@<host> with a self link to the actor",
    async run(ctx) {
      const name = ctx.actor.preferredUsername;
      if (typeof name !== "string") return fail("no preferredUsername to look up");
      const acct = `acct:${name}@${new URL(ctx.actorId).host}`;
      const got = await getJson(webfingerUrl(ctx, acct), "application/jrd+json");
      if (got.status !== 200) return fail(`WebFinger ${acct}: expected 200, got ${got.status}`);
      const href = selfLink(got.json);
      return href === ctx.actorId
        ? pass()
        : fail(`expected a self link (AS2 type) to ${ctx.actorId}, got ${String(href)}`);
    },
  },
  {
    id: "DISC-12",
    area: "discovery",
    level: "MUST",
    requirements: ["TW-DISC-1"],
    title: "WebFinger answers the actor id with a self link to the actor",
    async run(ctx) {
      const got = await getJson(webfingerUrl(ctx, ctx.actorId), "application/jrd+json");
      if (got.status !== 200) return fail(`expected 200, got ${got.status}`);
      const href = selfLink(got.json);
      return href === ctx.actorId
        ? pass()
        : fail(`expected self link ${ctx.actorId}, got ${String(href)}`);
    },
  },
  {
    id: "DISC-13",
    area: "discovery",
    level: "SHOULD",
    requirements: ["TW-DISC-1"],
    title: "WebFinger answers 404 for an unknown account",
    async run(ctx) {
      const acct = `acct:no-such-cluster-${Date.now()}@${new URL(ctx.actorId).host}`;
      const got = await getJson(webfingerUrl(ctx, acct), "application/jrd+json");
      return got.status === 404 ? pass() : fail(`expected 404, got ${got.status}`);
    },
  },
  {
    id: "DISC-14",
    area: "discovery",
    level: "MUST",
    requirements: ["TW-DISC-2"],
    title: 'NodeInfo 2.1 lists activitypub and taskwebProtocolVersion "1"',
    async run(ctx) {
      const wk = await getJson(
        `${new URL(ctx.actorId).origin}/.well-known/nodeinfo`,
        "application/json",
      );
      if (wk.status !== 200) return fail(`/.well-known/nodeinfo: expected 200, got ${wk.status}`);
      const links = record(wk.json)?.links;
      const link = (Array.isArray(links) ? links : [])
        .map(record)
        .find((l) => typeof l?.rel === "string" && l.rel.endsWith("/ns/schema/2.1"));
      if (typeof link?.href !== "string") return fail("no NodeInfo 2.1 link");
      const ni = await getJson(link.href, "application/json");
      const doc = record(ni.json);
      const protocols = doc?.protocols;
      if (!Array.isArray(protocols) || !protocols.includes("activitypub")) {
        return fail(
          `protocols: expected to include "activitypub", got ${JSON.stringify(protocols)}`,
        );
      }
      const version = record(doc?.metadata)?.taskwebProtocolVersion;
      return version === "1"
        ? pass()
        : fail(`metadata.taskwebProtocolVersion: expected "1", got ${JSON.stringify(version)}`);
    },
  },
  {
    id: "DISC-15",
    area: "discovery",
    level: "MUST",
    requirements: ["TW-COLL-1"],
    title: "the outbox is an OrderedCollection",
    run: (ctx) => collection(ctx, "outbox"),
  },
  {
    id: "DISC-16",
    area: "discovery",
    level: "SHOULD",
    requirements: ["TW-COLL-4"],
    title: "followers and following are OrderedCollections",
    async run(ctx) {
      const a = await collection(ctx, "followers");
      if (a.outcome !== "pass") return a;
      return await collection(ctx, "following");
    },
  },
];
