/**
 * Following and publishing: the target accepts the suite's follower, follows the suite's
 * upstream when told to, and delivers what it publishes, signed and well formed.
 * @module
 */
import { createHash } from "node:crypto";
import {
  ed25519FromMultibase,
  parseActivity,
  sameOrigin,
  verifyProof,
} from "../../protocol/index.ts";
import { hasType, jsonOf, sleep, type Context } from "../context.ts";
import { fail, notObservable, pass, type Check, type Verdict } from "../model.ts";
import { parseSignatureInput, verifyReceived, type ReceivedRequest } from "../signing.ts";
import { getJson } from "./discovery.ts";

function targetKeyPem(ctx: Context, keyId: string): string | undefined {
  const keys = [ctx.actor.publicKey].flat() as { id?: unknown; publicKeyPem?: unknown }[];
  const key = keys.find((k) => k?.id === keyId);
  return typeof key?.publicKeyPem === "string" ? key.publicKeyPem : undefined;
}

/** Verifies the HTTP signature of a request the target sent. */
function signatureVerdict(ctx: Context, r: ReceivedRequest): Verdict {
  const v = verifyReceived(r, (keyId) => targetKeyPem(ctx, keyId));
  if (!v.ok) return fail(`the request's HTTP signature does not verify: ${v.reason}`);
  if (v.scheme === "rfc9421") {
    const missing = ["@method", "@target-uri", "content-digest"].filter(
      (c) => !v.covered.includes(c),
    );
    if (missing.length > 0) return fail(`RFC 9421 signature does not cover ${missing.join(", ")}`);
    const si = parseSignatureInput(r.headers["signature-input"] ?? "");
    const params = si[0]?.params ?? {};
    if (typeof params.created !== "number") return fail("RFC 9421 signature has no created");
    if (params.alg != null && params.alg !== "rsa-v1_5-sha256") {
      return fail(`alg: expected rsa-v1_5-sha256, got ${String(params.alg)}`);
    }
  } else {
    const missing = ["(request-target)", "host", "date", "digest"].filter(
      (c) => !v.covered.includes(c),
    );
    if (missing.length > 0)
      return fail(`draft-cavage signature does not cover ${missing.join(", ")}`);
  }
  return pass(`${v.scheme} by ${v.keyId}`);
}

function digestVerdict(r: ReceivedRequest): Verdict {
  const header = r.headers["content-digest"];
  if (header == null) return fail("no Content-Digest header");
  const m = /sha-256=:([^:]*):/.exec(header);
  if (m == null) return fail(`Content-Digest has no sha-256 member: ${header}`);
  const expected = createHash("sha256").update(r.body).digest("base64");
  return m[1] === expected ? pass() : fail(`Content-Digest ${m[1]} ≠ SHA-256 of body ${expected}`);
}

async function completedOr(
  ctx: Context,
  use: (r: ReceivedRequest, taskUrl: string | undefined) => Promise<Verdict> | Verdict,
): Promise<Verdict> {
  const p = await ctx.published();
  if (p.completed == null) {
    return fail(
      `no TaskCompleted about the driver's task reached the follower's inbox within the timeout (task ${String(p.taskUrl)})`,
    );
  }
  return await use(p.completed, p.taskUrl);
}

export const followChecks: Check[] = [
  {
    id: "FOL-01",
    area: "follow",
    level: "MUST",
    requirements: ["TW-FOLLOW-2", "TW-SIG-1"],
    title: "a signed Follow is answered 2xx and with an Accept or Reject naming it",
    async run(ctx) {
      const { answer, reply, followId } = await ctx.followerFollows();
      if (answer.status < 200 || answer.status > 299) {
        return fail(`Follow answered ${answer.status}, expected 2xx: ${answer.text.slice(0, 200)}`);
      }
      if (reply == null) return fail(`no Accept or Reject of ${followId} reached the follower`);
      return pass(`${String(jsonOf(reply)?.type)} received`);
    },
  },
  {
    id: "FOL-02",
    area: "follow",
    level: "MUST",
    requirements: ["TW-SIG-1", "TW-SIG-2", "TW-SIG-4"],
    title: "the Accept is signed by the target's RSA key",
    async run(ctx) {
      const { reply } = await ctx.followerFollows();
      if (reply == null) return notObservable("no Accept or Reject was delivered");
      return signatureVerdict(ctx, reply);
    },
  },
  {
    id: "FOL-03",
    area: "follow",
    level: "SHOULD",
    requirements: ["TW-COLL-4"],
    title: "the accepted follower is counted in the followers collection",
    async run(ctx) {
      const { reply } = await ctx.followerFollows();
      if (reply == null || jsonOf(reply)?.type !== "Accept") {
        return notObservable("the follow was not accepted");
      }
      const url = ctx.actor.followers;
      if (typeof url !== "string") return fail("no followers URL");
      const got = await getJson(url);
      const doc = got.json as { totalItems?: unknown } | undefined;
      return typeof doc?.totalItems === "number" && doc.totalItems >= 1
        ? pass()
        : fail(`expected totalItems ≥ 1, got ${JSON.stringify(doc?.totalItems)}`);
    },
  },
  {
    id: "FOL-04",
    area: "follow",
    level: "MUST",
    requirements: ["TW-FOLLOW-1", "TW-SIG-1"],
    title: "told to follow, the target sends a signed Follow of the suite's actor",
    needs: ["follow"],
    async run(ctx) {
      const upstream = ctx.peer.actors.upstream;
      await ctx.observation().catch(() => undefined);
      const r = ctx.peer.inbox("upstream").find((x) => jsonOf(x)?.type === "Follow");
      if (r == null) return fail("no Follow reached the suite's upstream inbox");
      const f = jsonOf(r) ?? {};
      if (f.actor !== ctx.actorId) return fail(`Follow actor ${String(f.actor)} ≠ ${ctx.actorId}`);
      if (f.object !== upstream.id)
        return fail(`Follow object ${String(f.object)} ≠ ${upstream.id}`);
      if (typeof f.id !== "string" || !sameOrigin(f.id, ctx.actorId)) {
        return fail(`Follow id ${String(f.id)} is not on the target's origin`);
      }
      return signatureVerdict(ctx, r);
    },
  },
  {
    id: "FOL-05",
    area: "follow",
    level: "MUST",
    requirements: ["TW-FOLLOW-5"],
    title: "another actor's Undo of the follower's Follow does not end the follow",
    async run(ctx) {
      const { reply, followId } = await ctx.followerFollows();
      if (reply == null || jsonOf(reply)?.type !== "Accept") {
        return notObservable("the follow was not accepted");
      }
      const url = ctx.actor.followers;
      if (typeof url !== "string") return notObservable("no followers collection");
      const count = async () => (await getJson(url)).json as { totalItems?: unknown } | undefined;
      const before = (await count())?.totalItems;
      if (typeof before !== "number" || before < 1) {
        return notObservable("the followers collection does not count the follower");
      }
      const evil = ctx.peer.actors.evil;
      const follower = ctx.peer.actors.follower;
      const answer = await ctx.send(evil, {
        "@context": "https://www.w3.org/ns/activitystreams",
        id: `${evil.id}/undos/${Date.now()}`,
        type: "Undo",
        actor: evil.id,
        object: { id: followId, type: "Follow", actor: follower.id, object: ctx.actorId },
      });
      await sleep(ctx.timing.settleMs);
      const after = (await count())?.totalItems;
      if (after !== before) {
        return fail(
          `followers went from ${before} to ${String(after)} after evil's Undo (answered ${answer.status})`,
        );
      }
      return pass();
    },
  },
  {
    id: "FOL-06",
    area: "follow",
    level: "SHOULD",
    requirements: ["TW-COLL-4", "TW-FOLLOW-3"],
    title: "after the suite's Accept, the target's following collection counts the suite's actor",
    needs: ["follow"],
    async run(ctx) {
      await ctx.observation();
      const url = ctx.actor.following;
      if (typeof url !== "string") return fail("no following URL");
      const doc = (await getJson(url)).json as { totalItems?: unknown } | undefined;
      return typeof doc?.totalItems === "number" && doc.totalItems >= 1
        ? pass()
        : fail(`expected totalItems ≥ 1, got ${JSON.stringify(doc?.totalItems)}`);
    },
  },
];

export const publishingChecks: Check[] = [
  {
    id: "PUB-01",
    area: "publishing",
    level: "MUST",
    requirements: ["TW-FOLLOW-4", "TW-DLV-2"],
    title: "a completed task's TaskCompleted is delivered to the accepted follower",
    needs: ["complete-task"],
    run: (ctx) => completedOr(ctx, () => pass()),
  },
  {
    id: "PUB-02",
    area: "publishing",
    level: "MUST",
    requirements: [
      "TW-ACT-1",
      "TW-ACT-2",
      "TW-CTX-1",
      "TW-TYPE-1",
      "TW-ORG-1",
      "TW-ORG-2",
      "TW-ORG-3",
    ],
    title: "the delivered TaskCompleted parses as taskweb v1 and meets the origin rules",
    needs: ["complete-task"],
    run: (ctx) =>
      completedOr(ctx, (r) => {
        const parsed = parseActivity(jsonOf(r));
        if (!parsed.ok) {
          return fail(
            `parseActivity: ${parsed.reason.code} at ${parsed.reason.path}: ${parsed.reason.message}`,
          );
        }
        if (parsed.value.actor !== ctx.actorId) {
          return fail(`actor ${parsed.value.actor} ≠ the target ${ctx.actorId}`);
        }
        return pass();
      }),
  },
  {
    id: "PUB-03",
    area: "publishing",
    level: "MUST",
    requirements: ["TW-SIG-1", "TW-SIG-2", "TW-SIG-4"],
    title: "the delivery carries a valid HTTP signature by the target's RSA key",
    needs: ["complete-task"],
    run: (ctx) => completedOr(ctx, (r) => signatureVerdict(ctx, r)),
  },
  {
    id: "PUB-04",
    area: "publishing",
    level: "MUST",
    requirements: ["TW-DIG-2"],
    title: "the delivery's Content-Digest matches its body",
    needs: ["complete-task"],
    run: (ctx) => completedOr(ctx, (r) => digestVerdict(r)),
  },
  {
    id: "PUB-05",
    area: "publishing",
    level: "SHOULD",
    requirements: ["TW-SIG-3"],
    title: "an RFC 9421 delivery also covers @authority, host and date",
    needs: ["complete-task"],
    run: (ctx) =>
      completedOr(ctx, (r) => {
        const si = parseSignatureInput(r.headers["signature-input"] ?? "")[0];
        if (si == null) return notObservable("the delivery used draft-cavage, not RFC 9421");
        const missing = ["@authority", "host", "date"].filter((c) => !si.components.includes(c));
        return missing.length === 0 ? pass() : fail(`not covered: ${missing.join(", ")}`);
      }),
  },
  {
    id: "PUB-06",
    area: "publishing",
    level: "SHOULD",
    requirements: ["TW-SIG-5"],
    title: "the delivery was signed at the time it was sent (created within 60 s)",
    needs: ["complete-task"],
    run: (ctx) =>
      completedOr(ctx, (r) => {
        const created = parseSignatureInput(r.headers["signature-input"] ?? "")[0]?.params.created;
        const t = typeof created === "number" ? created * 1000 : Date.parse(r.headers.date ?? "");
        if (!Number.isFinite(t)) return fail("neither created nor Date");
        const skew = Math.abs(r.receivedAt - t) / 1000;
        return skew <= 60 ? pass() : fail(`signed ${skew.toFixed(0)} s from when it arrived`);
      }),
  },
  {
    id: "PUB-07",
    area: "publishing",
    level: "SHOULD",
    requirements: ["TW-PROOF-1", "TW-PROOF-2"],
    title: "the delivered activity carries an eddsa-jcs-2022 proof naming an assertionMethod key",
    needs: ["complete-task"],
    run: (ctx) =>
      completedOr(ctx, (r) => {
        const proof = jsonOf(r)?.proof as Record<string, unknown> | undefined;
        if (proof == null) return fail("no proof");
        const keys = [ctx.actor.assertionMethod].flat() as { id?: unknown }[];
        if (proof.type !== "DataIntegrityProof" || proof.cryptosuite !== "eddsa-jcs-2022") {
          return fail(`proof type/cryptosuite: ${String(proof.type)}/${String(proof.cryptosuite)}`);
        }
        if (!keys.some((k) => k?.id === proof.verificationMethod)) {
          return fail(
            `verificationMethod ${String(proof.verificationMethod)} is not in assertionMethod`,
          );
        }
        return typeof proof.proofValue === "string" && proof.proofValue.startsWith("z")
          ? pass("structure checked; the signature itself is not verified by this version")
          : fail("proofValue is not base58-btc");
      }),
  },
  {
    id: "PUB-08",
    area: "publishing",
    level: "MUST",
    requirements: ["TW-DEP-7", "TW-ACT-4", "TW-DEP-8"],
    title:
      "an ArtifactPublished is delivered for each artifact, published no later than the TaskCompleted",
    needs: ["complete-task"],
    run: (ctx) =>
      completedOr(ctx, async (r) => {
        const p = await ctx.published();
        const completed = jsonOf(r);
        const task = completed?.object as { artifacts?: unknown } | undefined;
        const artifacts = (Array.isArray(task?.artifacts) ? task.artifacts : []) as {
          id?: unknown;
        }[];
        if (artifacts.length === 0) {
          return fail("the driver's task should publish an artifact, the TaskCompleted lists none");
        }
        for (const a of artifacts) {
          // Deliveries may arrive in any order (TW-DLV-9); wait for each one.
          const found = await ctx.poll(() =>
            p
              .since()
              .map(jsonOf)
              .find(
                (j) =>
                  hasType(j, "ArtifactPublished") &&
                  (j?.object as { id?: unknown } | undefined)?.id === a.id,
              ),
          );
          if (found == null) return fail(`no ArtifactPublished for ${String(a.id)} was delivered`);
          const parsed = parseActivity(found);
          if (!parsed.ok) return fail(`ArtifactPublished does not parse: ${parsed.reason.message}`);
          const at = Date.parse(String(found.published));
          const done = Date.parse(String(completed?.published));
          if (at > done) {
            return fail(
              `ArtifactPublished published ${String(found.published)}, after the TaskCompleted (${String(completed?.published)})`,
            );
          }
        }
        return pass();
      }),
  },
  {
    id: "PUB-09",
    area: "publishing",
    level: "MUST",
    requirements: ["TW-DEREF-3", "TW-DEREF-4"],
    title: "the delivered activity's id dereferences to the same activity, unsigned",
    needs: ["complete-task"],
    run: (ctx) =>
      completedOr(ctx, async (r) => {
        const id = jsonOf(r)?.id;
        if (typeof id !== "string") return fail("the activity has no id");
        const got = await getJson(id);
        if (got.status !== 200) return fail(`GET ${id}: expected 200, got ${got.status}`);
        const doc = got.json as { id?: unknown } | undefined;
        return doc?.id === id ? pass() : fail(`expected id ${id}, got ${String(doc?.id)}`);
      }),
  },
  {
    id: "PUB-10",
    area: "publishing",
    level: "MUST",
    requirements: ["TW-DEREF-1"],
    title: "the completed task's id dereferences to its task document",
    needs: ["complete-task"],
    run: (ctx) =>
      completedOr(ctx, async (r) => {
        const object = jsonOf(r)?.object as { id?: unknown } | undefined;
        if (typeof object?.id !== "string") return fail("the activity's object has no id");
        const got = await getJson(object.id);
        if (got.status !== 200) return fail(`GET ${object.id}: expected 200, got ${got.status}`);
        const doc = got.json as { id?: unknown; taskState?: unknown } | undefined;
        if (doc?.id !== object.id) return fail(`document id ${String(doc?.id)} ≠ ${object.id}`);
        return doc.taskState === "completed"
          ? pass()
          : fail(`taskState: expected completed, got ${String(doc.taskState)}`);
      }),
  },
  {
    id: "PUB-11",
    area: "publishing",
    level: "MUST",
    requirements: ["TW-ART-1"],
    title: "each artifact's url serves exactly the published size and sha256",
    needs: ["complete-task"],
    run: (ctx) =>
      completedOr(ctx, async (r) => {
        const task = jsonOf(r)?.object as { artifacts?: unknown } | undefined;
        const artifacts = (Array.isArray(task?.artifacts) ? task.artifacts : []) as {
          url?: unknown;
          size?: unknown;
          sha256?: unknown;
        }[];
        if (artifacts.length === 0) return notObservable("the task published no artifact");
        for (const a of artifacts) {
          if (typeof a.url !== "string") return fail("artifact without url");
          const response = await fetch(a.url);
          const bytes = Buffer.from(await response.arrayBuffer());
          if (response.status !== 200) return fail(`GET ${a.url}: ${response.status}`);
          const sha = createHash("sha256").update(bytes).digest("hex");
          if (bytes.length !== a.size) return fail(`size ${bytes.length} ≠ ${String(a.size)}`);
          if (sha !== a.sha256) return fail(`sha256 ${sha} ≠ ${String(a.sha256)}`);
        }
        return pass();
      }),
  },
  {
    id: "PUB-12",
    area: "publishing",
    level: "MUST",
    requirements: ["TW-FOLLOW-5", "TW-FOLLOW-4"],
    title: "after the follower's Undo of its Follow, nothing more is delivered to it",
    needs: ["complete-task", "task-state"],
    async run(ctx) {
      const p = await ctx.published();
      if (p.completed == null) return notObservable("no delivery was seen before the Undo");
      const { followId } = await ctx.followerFollows();
      const follower = ctx.peer.actors.follower;
      const undo = {
        "@context": "https://www.w3.org/ns/activitystreams",
        id: `${follower.id}/undos/${Date.now()}`,
        type: "Undo",
        actor: follower.id,
        object: { id: followId, type: "Follow", actor: follower.id, object: ctx.actorId },
      };
      const answer = await ctx.send(follower, undo);
      if (answer.status < 200 || answer.status > 299) return fail(`Undo answered ${answer.status}`);
      const seen = ctx.peer.inbox("follower").length;
      const task = await ctx.driver.createCompletingTask();
      const resolved = await ctx.poll(async () => {
        const s = await ctx.driver.taskState(task.taskId);
        return ["completed", "failed", "exception"].includes(s) ? s : undefined;
      }, 60_000);
      if (resolved == null) return notObservable("the second task did not resolve in time");
      await sleep(Math.max(ctx.timing.settleMs, 1500));
      const after = ctx.peer
        .inbox("follower")
        .slice(seen)
        .filter(
          (x) => hasType(jsonOf(x), "TaskCompleted") || hasType(jsonOf(x), "ArtifactPublished"),
        );
      return after.length === 0
        ? pass()
        : fail(`${after.length} activities were still delivered after the Undo`);
    },
  },
  {
    id: "PUB-13",
    area: "publishing",
    level: "SHOULD",
    requirements: ["TW-PROOF-2", "TW-PROOF-4"],
    title:
      "the delivered activity's proof verifies with the actor's Ed25519 key (document @context)",
    needs: ["complete-task"],
    run: (ctx) =>
      completedOr(ctx, (r) => {
        const doc = jsonOf(r);
        const proof = doc?.proof as Record<string, unknown> | undefined;
        if (doc == null || proof == null) return notObservable("the activity carries no proof");
        const keys = [ctx.actor.assertionMethod].flat() as Record<string, unknown>[];
        const key = keys.find((k) => k?.id === proof.verificationMethod);
        if (typeof key?.publicKeyMultibase !== "string") {
          return notObservable("the proof names no Multikey of the actor's assertionMethod");
        }
        try {
          return verifyProof(doc, ed25519FromMultibase(key.publicKeyMultibase))
            ? pass()
            : fail("the eddsa-jcs-2022 proof does not verify over the document as delivered");
        } catch (error) {
          return fail(`the proof cannot be checked: ${String(error)}`);
        }
      }),
  },
  {
    id: "PUB-14",
    area: "publishing",
    level: "SHOULD",
    requirements: ["TW-PROOF-3"],
    title: "the proof's own @context, if any, equals the document's @context",
    needs: ["complete-task"],
    run: (ctx) =>
      completedOr(ctx, (r) => {
        const doc = jsonOf(r);
        const proof = doc?.proof as Record<string, unknown> | undefined;
        if (proof == null) return notObservable("the activity carries no proof");
        if (!("@context" in proof)) return pass("the proof has no @context of its own");
        return JSON.stringify(proof["@context"]) === JSON.stringify(doc?.["@context"])
          ? pass()
          : fail(
              `proof @context ${JSON.stringify(proof["@context"]).slice(0, 160)} ≠ document @context`,
            );
      }),
  },
  {
    id: "PUB-15",
    area: "publishing",
    level: "MUST",
    requirements: ["TW-OBJ-3", "TW-OBJ-6"],
    title: "each listed artifact names the task, and its id is the task id + /artifacts/ + name",
    needs: ["complete-task"],
    run: (ctx) =>
      completedOr(ctx, (r) => {
        const task = jsonOf(r)?.object as { id?: unknown; artifacts?: unknown } | undefined;
        const artifacts = (Array.isArray(task?.artifacts) ? task.artifacts : []) as {
          id?: unknown;
          task?: unknown;
          name?: unknown;
        }[];
        if (artifacts.length === 0) return notObservable("the task published no artifact");
        for (const a of artifacts) {
          if (a.task !== task?.id)
            return fail(`artifact ${String(a.id)} names task ${String(a.task)}`);
          const expected = `${String(task?.id)}/artifacts/${String(a.name)
            .split("/")
            .map(encodeURIComponent)
            .join("/")}`;
          if (a.id !== expected) return fail(`artifact id ${String(a.id)}, expected ${expected}`);
        }
        return pass();
      }),
  },
  {
    id: "PUB-16",
    area: "publishing",
    level: "MUST",
    requirements: ["TW-DEREF-2"],
    title: "each artifact's id dereferences to its artifact document",
    needs: ["complete-task"],
    run: (ctx) =>
      completedOr(ctx, async (r) => {
        const task = jsonOf(r)?.object as { artifacts?: unknown } | undefined;
        const artifacts = (Array.isArray(task?.artifacts) ? task.artifacts : []) as {
          id?: unknown;
        }[];
        if (artifacts.length === 0) return notObservable("the task published no artifact");
        for (const a of artifacts) {
          if (typeof a.id !== "string") return fail("artifact without id");
          const got = await getJson(a.id);
          if (got.status !== 200) return fail(`GET ${a.id}: expected 200, got ${got.status}`);
          const doc = got.json as { id?: unknown } | undefined;
          if (doc?.id !== a.id) return fail(`document id ${String(doc?.id)} ≠ ${a.id}`);
        }
        return pass();
      }),
  },
];
