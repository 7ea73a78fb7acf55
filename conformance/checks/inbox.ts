/**
 * The target's inbox: authentication, origin and shape rules, limits and deduplication.
 * Every refusal is checked twice: the status the specification names, and, through the
 * driver, that a task waiting on the reported task did not move.
 * @module
 */
import { randomUUID } from "node:crypto";
import { sleep, type Context } from "../context.ts";
import { fail, NotObservable, pass, type Check, type Verdict } from "../model.ts";
import { addProof } from "../../protocol/index.ts";
import { postCavage, postRfc9421, type HttpAnswer } from "../signing.ts";

const WAITING: Check["needs"] = ["follow", "create-waiting-task", "task-state"];

/** Runs `attack` and expects `statuses` and no effect. */
async function refused(
  ctx: Context,
  statuses: readonly number[],
  attack: (taskUrl: string) => Promise<HttpAnswer>,
  taskUrl?: string,
): Promise<Verdict> {
  const r = await ctx.expectNoEffect(attack, taskUrl);
  const problems: string[] = [];
  if (!statuses.includes(r.answer.status)) {
    problems.push(`expected status ${statuses.join(" or ")}, got ${r.answer.status}`);
  }
  if (!r.unchanged) problems.push(`the waiting task moved to "${r.state}": the input was acted on`);
  return problems.length === 0 ? pass() : fail(problems.join("; "));
}

const TWO_XX = [200, 201, 202, 204];
const REFUSED_OR_IGNORED = [202, 400, 401, 403, 422];

function sharedInbox(ctx: Context): string | undefined {
  const endpoints = ctx.actor.endpoints as { sharedInbox?: unknown } | undefined;
  return typeof endpoints?.sharedInbox === "string" ? endpoints.sharedInbox : undefined;
}

function body(ctx: Context, taskUrl: string): string {
  const upstream = ctx.peer.actors.upstream;
  return JSON.stringify(ctx.taskCompleted(upstream, taskUrl));
}

export const inboxAuthChecks: Check[] = [
  {
    id: "SIG-01",
    area: "inbox-auth",
    level: "MUST",
    requirements: ["TW-SIG-7", "TW-TRUST-1"],
    title: "an unsigned POST is refused 401 and changes nothing",
    needs: WAITING,
    run: (ctx) => refused(ctx, [401], (url) => postRfc9421(ctx.inbox, body(ctx, url), undefined)),
  },
  {
    id: "SIG-02",
    area: "inbox-auth",
    level: "MUST",
    requirements: ["TW-SIG-13"],
    title: "a valid signature by another actor's key (actor = upstream) is refused 401",
    needs: WAITING,
    run: (ctx) =>
      refused(ctx, [401], (url) =>
        postRfc9421(ctx.inbox, body(ctx, url), ctx.peer.actors.evil.signer),
      ),
  },
  {
    id: "SIG-03",
    area: "inbox-auth",
    level: "MUST",
    requirements: ["TW-SIG-10"],
    title: "a body changed after signing (Content-Digest mismatch) is refused",
    needs: WAITING,
    run: (ctx) =>
      refused(ctx, [400, 401], (url) =>
        postRfc9421(ctx.inbox, body(ctx, url), ctx.peer.actors.upstream.signer, {
          tamper: (b) => b.replace('"name":"conformance"', '"name":"tampered!!!"'),
        }),
      ),
  },
  {
    id: "SIG-04",
    area: "inbox-auth",
    level: "MUST",
    requirements: ["TW-SIG-10"],
    title: "an RFC 9421 signature not covering content-digest is refused 401",
    needs: WAITING,
    run: (ctx) =>
      refused(ctx, [401], (url) =>
        postRfc9421(ctx.inbox, body(ctx, url), ctx.peer.actors.upstream.signer, {
          components: ["@method", "@target-uri", "@authority"],
        }),
      ),
  },
  {
    id: "SIG-05",
    area: "inbox-auth",
    level: "MUST",
    requirements: ["TW-SIG-10"],
    title: "a signature made for another inbox (@target-uri) is refused 401",
    needs: WAITING,
    run: (ctx) =>
      refused(ctx, [401], (url) =>
        postRfc9421(ctx.inbox, body(ctx, url), ctx.peer.actors.upstream.signer, {
          signedTargetUri: `${new URL(ctx.inbox).origin}/some/other/inbox`,
        }),
      ),
  },
  {
    id: "SIG-06",
    area: "inbox-auth",
    level: "MUST",
    requirements: ["TW-SIG-12"],
    title: "a signature created 10 minutes ago is refused 401",
    needs: WAITING,
    run: (ctx) =>
      refused(ctx, [401], (url) =>
        postRfc9421(ctx.inbox, body(ctx, url), ctx.peer.actors.upstream.signer, {
          createdOffsetSeconds: -600,
        }),
      ),
  },
  {
    id: "SIG-07",
    area: "inbox-auth",
    level: "MUST",
    requirements: ["TW-SIG-12"],
    title: "a signature created 10 minutes in the future is refused 401",
    needs: WAITING,
    run: (ctx) =>
      refused(ctx, [401], (url) =>
        postRfc9421(ctx.inbox, body(ctx, url), ctx.peer.actors.upstream.signer, {
          createdOffsetSeconds: 600,
        }),
      ),
  },
  {
    id: "SIG-08",
    area: "inbox-auth",
    level: "MUST",
    requirements: ["TW-SIG-10"],
    title: "an RFC 9421 signature without created is refused 401",
    needs: WAITING,
    run: (ctx) =>
      refused(ctx, [401], (url) =>
        postRfc9421(ctx.inbox, body(ctx, url), ctx.peer.actors.upstream.signer, {
          omitCreated: true,
        }),
      ),
  },
  {
    id: "SIG-09",
    area: "inbox-auth",
    level: "MUST",
    requirements: ["TW-SIG-11"],
    title: "a draft-cavage signature not covering digest is refused 401",
    needs: WAITING,
    run: (ctx) =>
      refused(ctx, [401], (url) =>
        postCavage(ctx.inbox, body(ctx, url), ctx.peer.actors.upstream.signer, {
          headers: ["(request-target)", "host", "date"],
        }),
      ),
  },
  {
    id: "SIG-10",
    area: "inbox-auth",
    level: "MUST",
    requirements: ["TW-SIG-12", "TW-SIG-11"],
    title: "a draft-cavage signature with a Date 10 minutes old is refused 401",
    needs: WAITING,
    run: (ctx) =>
      refused(ctx, [401], (url) =>
        postCavage(ctx.inbox, body(ctx, url), ctx.peer.actors.upstream.signer, {
          dateOffsetMs: -600_000,
        }),
      ),
  },
  {
    id: "SIG-11",
    area: "inbox-auth",
    level: "MUST",
    requirements: ["TW-SIG-13"],
    title: "a key id naming a key the actor does not own is refused 401",
    needs: WAITING,
    run: (ctx) =>
      refused(ctx, [401], (url) =>
        postRfc9421(ctx.inbox, body(ctx, url), {
          ...ctx.peer.actors.upstream.signer,
          keyId: ctx.peer.actors.evil.signer.keyId,
        }),
      ),
  },
  {
    id: "SIG-16",
    area: "inbox-auth",
    level: "MUST",
    requirements: ["TW-SIG-12"],
    title: "an RFC 9421 signature created now whose expires parameter has passed is refused 401",
    needs: WAITING,
    run: (ctx) =>
      refused(ctx, [401], (url) =>
        postRfc9421(ctx.inbox, body(ctx, url), ctx.peer.actors.upstream.signer, {
          expiresOffsetSeconds: -5,
        }),
      ),
  },
  {
    id: "SIG-14",
    area: "inbox-auth",
    level: "MUST",
    requirements: ["TW-SIG-7"],
    title: "an unsigned POST is refused 401 even when the activity carries a valid proof",
    needs: WAITING,
    run: (ctx) =>
      refused(ctx, [401], (url) => {
        const upstream = ctx.peer.actors.upstream;
        const proved = addProof(
          ctx.taskCompleted(upstream, url),
          upstream.ed25519PrivateKey,
          upstream.multikeyId,
        );
        return postRfc9421(ctx.inbox, JSON.stringify(proved), undefined);
      }),
  },
  {
    id: "SIG-15",
    area: "inbox-auth",
    level: "MUST",
    requirements: ["TW-INBOX-1", "TW-SIG-7"],
    title: "the shared inbox also refuses an unsigned POST with 401 and changes nothing",
    needs: WAITING,
    async run(ctx) {
      const shared = sharedInbox(ctx);
      if (shared == null) throw new NotObservable("the actor has no endpoints.sharedInbox");
      return await refused(ctx, [401], (url) => postRfc9421(shared, body(ctx, url), undefined));
    },
  },
  {
    id: "SIG-12",
    area: "inbox-auth",
    level: "MUST",
    requirements: ["TW-SIG-8", "TW-TRUST-1"],
    title:
      "a valid RFC 9421 rsa-v1_5-sha256 TaskCompleted from a followed actor is accepted and acted on",
    needs: WAITING,
    async run(ctx) {
      await ctx.observation();
      return await accepted(ctx, (url) =>
        postRfc9421(ctx.inbox, body(ctx, url), ctx.peer.actors.upstream.signer),
      );
    },
  },
  {
    id: "SIG-17",
    area: "inbox-auth",
    level: "MUST",
    requirements: ["TW-SIG-12", "TW-SIG-8"],
    title:
      "a valid RFC 9421 signature whose expires parameter is 5 minutes ahead is accepted and acted on",
    needs: WAITING,
    async run(ctx) {
      await ctx.observation();
      return await accepted(ctx, (url) =>
        postRfc9421(ctx.inbox, body(ctx, url), ctx.peer.actors.upstream.signer, {
          expiresOffsetSeconds: 300,
        }),
      );
    },
  },
  {
    id: "SIG-18",
    area: "inbox-auth",
    level: "SHOULD",
    requirements: ["TW-SIG-14"],
    title: "after an actor replaces its key, a request signed with the new key is accepted",
    async run(ctx) {
      const like = (actorId: string) => ({
        "@context": "https://www.w3.org/ns/activitystreams",
        id: `${actorId}/activities/${randomUUID()}`,
        type: "Like",
        actor: actorId,
        object: ctx.actorId,
      });
      const before = ctx.peer.actors.rotating;
      // Control: acceptance proves a refetch only from a target that checks signatures.
      const forged = await postRfc9421(ctx.inbox, JSON.stringify(like(before.id)), {
        ...ctx.peer.actors.evil.signer,
        keyId: before.signer.keyId,
      });
      if (forged.status !== 401) {
        throw new NotObservable(
          `a Like signed with a key other than the one its key id names was answered ${forged.status}, not 401, so accepting a new key proves nothing`,
        );
      }
      const first = await ctx.send(before, like(before.id));
      if (first.status !== 202) {
        throw new NotObservable(
          `a signed Like from an actor the target does not follow was answered ${first.status}, not 202 (ORI-08), before any key change`,
        );
      }
      // Same key id, new key: a target that cached the old one must fetch it again.
      const after = ctx.peer.rotateKey("rotating");
      const second = await ctx.send(after, like(after.id));
      return second.status === 202
        ? pass()
        : fail(
            `signed with the actor's new key, the request was answered ${second.status}: the target kept verifying with the key it had cached`,
          );
    },
  },
  {
    id: "SIG-13",
    area: "inbox-auth",
    level: "SHOULD",
    requirements: ["TW-SIG-9"],
    title:
      "a valid draft-cavage rsa-sha256 TaskCompleted from a followed actor is accepted and acted on",
    needs: WAITING,
    async run(ctx) {
      await ctx.observation();
      return await accepted(ctx, (url) =>
        postCavage(ctx.inbox, body(ctx, url), ctx.peer.actors.upstream.signer),
      );
    },
  },
];

/** Expects `send` to be answered 2xx and to unblock a waiting task. */
async function accepted(
  ctx: Context,
  send: (taskUrl: string) => Promise<HttpAnswer>,
): Promise<Verdict> {
  const url = ctx.taskUrl(ctx.peer.actors.upstream);
  const waiting = await ctx.driver.createWaitingTask([url]);
  const answer = await send(url);
  if (!TWO_XX.includes(answer.status)) {
    return fail(`expected 2xx, got ${answer.status}: ${answer.text.slice(0, 200)}`);
  }
  const moved = await ctx.poll(async () => {
    const s = await ctx.driver.taskState(waiting.taskId);
    return s !== "unscheduled" ? s : undefined;
  }, 10_000);
  return moved != null ? pass() : fail("answered 2xx but the waiting task never moved");
}

export const originChecks: Check[] = [
  {
    id: "ORI-01",
    area: "origin-shape",
    level: "MUST",
    requirements: ["TW-ORG-2", "TW-TRUST-4", "TW-TRUST-5"],
    title: "a TaskCompleted about a task on another origin is ignored",
    needs: WAITING,
    async run(ctx) {
      // A task on an origin nobody serves: only this report could resolve it.
      const foreign = `http://127.0.0.2:9/tasks/${randomUUID()}`;
      return await refused(
        ctx,
        REFUSED_OR_IGNORED,
        () => {
          const upstream = ctx.peer.actors.upstream;
          const activity = ctx.taskCompleted(upstream, `${upstream.id}/tasks/x`);
          (activity.object as { id: string }).id = foreign;
          return ctx.send(upstream, activity);
        },
        foreign,
      );
    },
  },
  {
    id: "ORI-02",
    area: "origin-shape",
    level: "MUST",
    requirements: ["TW-TRUST-2", "TW-TRUST-5"],
    title:
      "a validly signed TaskCompleted from an actor the target does not follow is ignored with 202",
    needs: WAITING,
    async run(ctx) {
      const evil = ctx.peer.actors.evil;
      const taskUrl = ctx.taskUrl(evil);
      return await refused(
        ctx,
        [202],
        () => ctx.send(evil, ctx.taskCompleted(evil, taskUrl)),
        taskUrl,
      );
    },
  },
  {
    id: "ORI-03",
    area: "origin-shape",
    level: "MUST",
    requirements: ["TW-CTX-1", "TW-CTX-2"],
    title:
      "an activity whose @context names a remote context instead of the inline one is not acted on",
    needs: WAITING,
    run: (ctx) =>
      refused(ctx, REFUSED_OR_IGNORED, (url) => {
        const a = ctx.taskCompleted(ctx.peer.actors.upstream, url);
        a["@context"] = [
          "https://www.w3.org/ns/activitystreams",
          `${ctx.peer.baseUrl}/contexts/taskweb.jsonld`,
        ];
        return ctx.send(ctx.peer.actors.upstream, a);
      }),
  },
  {
    id: "ORI-04",
    area: "origin-shape",
    level: "MUST",
    requirements: ["TW-ACT-5", "TW-CTX-1"],
    title: "an activity using @graph is not acted on",
    needs: WAITING,
    run: (ctx) =>
      refused(ctx, REFUSED_OR_IGNORED, (url) => {
        const a = ctx.taskCompleted(ctx.peer.actors.upstream, url);
        const { ["@context"]: context, ...rest } = a;
        return ctx.send(ctx.peer.actors.upstream, {
          "@context": context,
          "@graph": [rest],
          actor: rest.actor,
        });
      }),
  },
  {
    id: "ORI-05",
    area: "origin-shape",
    level: "MUST",
    requirements: ["TW-TYPE-1", "TW-ACT-2"],
    title: "a TaskCompleted whose task is not in state completed is not acted on",
    needs: WAITING,
    run: (ctx) =>
      refused(ctx, REFUSED_OR_IGNORED, (url) => {
        const a = ctx.taskCompleted(ctx.peer.actors.upstream, url);
        (a.object as { taskState: string }).taskState = "running";
        return ctx.send(ctx.peer.actors.upstream, a);
      }),
  },
  {
    id: "ORI-10",
    area: "origin-shape",
    level: "MUST",
    requirements: ["TW-ORG-3", "TW-TRUST-5"],
    title: "a TaskCompleted whose task is attributed to another actor is not acted on",
    needs: WAITING,
    run: (ctx) =>
      refused(ctx, REFUSED_OR_IGNORED, (url) => {
        const a = ctx.taskCompleted(ctx.peer.actors.upstream, url);
        (a.object as { attributedTo: string }).attributedTo = ctx.peer.actors.evil.id;
        return ctx.send(ctx.peer.actors.upstream, a);
      }),
  },
  {
    id: "ORI-11",
    area: "origin-shape",
    level: "MUST",
    requirements: ["TW-ORG-1", "TW-TRUST-5"],
    title: "a TaskCompleted whose activity id is on another origin is not acted on",
    needs: WAITING,
    run: (ctx) =>
      refused(ctx, REFUSED_OR_IGNORED, (url) =>
        ctx.send(
          ctx.peer.actors.upstream,
          ctx.taskCompleted(ctx.peer.actors.upstream, url, {
            id: `http://127.0.0.2:9/activities/${randomUUID()}`,
          }),
        ),
      ),
  },
  {
    id: "ORI-12",
    area: "origin-shape",
    level: "MUST",
    requirements: ["TW-TYPE-1"],
    title: "a lone custom type (TaskCompleted without Activity) is not acted on",
    needs: WAITING,
    run: (ctx) =>
      refused(ctx, REFUSED_OR_IGNORED, (url) => {
        const a = ctx.taskCompleted(ctx.peer.actors.upstream, url);
        a.type = "TaskCompleted";
        return ctx.send(ctx.peer.actors.upstream, a);
      }),
  },
  {
    id: "ORI-06",
    area: "origin-shape",
    level: "MUST",
    requirements: ["TW-INBOX-2"],
    title: "a body that is not JSON is refused 400",
    async run(ctx) {
      const r = await postRfc9421(ctx.inbox, "{not json", ctx.peer.actors.upstream.signer);
      return r.status === 400 ? pass() : fail(`expected 400, got ${r.status}`);
    },
  },
  {
    id: "ORI-07",
    area: "origin-shape",
    level: "MUST",
    requirements: ["TW-INBOX-2"],
    title: "a Content-Type other than ActivityStreams (text/plain) is refused 415",
    async run(ctx) {
      const upstream = ctx.peer.actors.upstream;
      const r = await postRfc9421(ctx.inbox, body(ctx, ctx.taskUrl(upstream)), upstream.signer, {
        contentType: "text/plain",
      });
      return r.status === 415 ? pass() : fail(`expected 415, got ${r.status}`);
    },
  },
  {
    id: "ORI-08",
    area: "origin-shape",
    level: "MUST",
    requirements: ["TW-INBOX-4", "TW-TRUST-5"],
    title: "a signed activity of an unknown type is answered 202",
    async run(ctx) {
      const upstream = ctx.peer.actors.upstream;
      const r = await ctx.send(upstream, {
        "@context": "https://www.w3.org/ns/activitystreams",
        id: `${upstream.id}/activities/${randomUUID()}`,
        type: "Like",
        actor: upstream.id,
        object: ctx.actorId,
      });
      return r.status === 202 ? pass() : fail(`expected 202, got ${r.status}`);
    },
  },
  {
    id: "ORI-09",
    area: "origin-shape",
    level: "SHOULD",
    requirements: ["TW-INBOX-3"],
    title: "error answers carry a JSON body with code and message",
    async run(ctx) {
      const r = await postRfc9421(
        ctx.inbox,
        body(ctx, ctx.taskUrl(ctx.peer.actors.upstream)),
        undefined,
      );
      try {
        const json = JSON.parse(r.text) as { code?: unknown; message?: unknown };
        if (typeof json.code === "string" && typeof json.message === "string") return pass();
      } catch {
        // fall through
      }
      return fail(`the ${r.status} answer has no JSON {code, message}: ${r.text.slice(0, 120)}`);
    },
  },
];

function nested(depth: number): unknown {
  let v: unknown = "leaf";
  for (let i = 0; i < depth; i += 1) v = { x: v };
  return v;
}

export const limitChecks: Check[] = [
  {
    id: "LIM-01",
    area: "limits",
    level: "MUST",
    requirements: ["TW-LIM-1", "TW-INBOX-2"],
    title: "a body over 1 MiB is refused 413",
    async run(ctx) {
      const upstream = ctx.peer.actors.upstream;
      const a = ctx.taskCompleted(upstream, ctx.taskUrl(upstream));
      a.padding = "x".repeat(1024 * 1024 + 1024);
      const r = await postRfc9421(ctx.inbox, JSON.stringify(a), upstream.signer).catch(
        (error: unknown) => ({ status: -1, text: String(error), headers: new Headers() }),
      );
      return r.status === 413 ? pass() : fail(`expected 413, got ${r.status}`);
    },
  },
  {
    id: "LIM-02",
    area: "limits",
    level: "MUST",
    requirements: ["TW-LIM-2", "TW-INBOX-2"],
    title: "a body nested 40 deep is refused 400",
    async run(ctx) {
      const upstream = ctx.peer.actors.upstream;
      const a = ctx.taskCompleted(upstream, ctx.taskUrl(upstream));
      a.deep = nested(40);
      const r = await postRfc9421(ctx.inbox, JSON.stringify(a), upstream.signer);
      return r.status === 400 ? pass() : fail(`expected 400, got ${r.status}`);
    },
  },
  {
    id: "LIM-03",
    area: "limits",
    level: "MUST",
    requirements: ["TW-LIM-3", "TW-ACT-6"],
    title: "a valid 900 KiB TaskCompleted (unknown padding property) is accepted and acted on",
    needs: WAITING,
    async run(ctx) {
      await ctx.observation();
      return await accepted(ctx, (url) => {
        const a = ctx.taskCompleted(ctx.peer.actors.upstream, url);
        a.padding = "x".repeat(900 * 1024);
        return ctx.send(ctx.peer.actors.upstream, a);
      });
    },
  },
];

export const reliabilityChecks: Check[] = [
  {
    id: "REL-01",
    area: "reliability",
    level: "MUST",
    requirements: ["TW-DLV-7", "TW-TRUST-3"],
    title: "a redelivered TaskCompleted (same id) is answered 2xx again",
    needs: WAITING,
    async run(ctx) {
      await ctx.observation();
      const upstream = ctx.peer.actors.upstream;
      const url = ctx.taskUrl(upstream);
      const waiting = await ctx.driver.createWaitingTask([url]);
      const activity = ctx.taskCompleted(upstream, url);
      const first = await ctx.send(upstream, activity);
      await sleep(200);
      const second = await ctx.send(upstream, activity);
      if (!TWO_XX.includes(first.status) || !TWO_XX.includes(second.status)) {
        return fail(`expected 2xx twice, got ${first.status} then ${second.status}`);
      }
      const moved = await ctx.poll(async () => {
        const s = await ctx.driver.taskState(waiting.taskId);
        return s !== "unscheduled" ? s : undefined;
      }, 10_000);
      return moved != null ? pass() : fail("the activity was never acted on");
    },
  },
  {
    id: "REL-02",
    area: "reliability",
    level: "MUST",
    requirements: ["TW-TRUST-3"],
    title: "a replayed activity id with a different task is not acted on",
    needs: WAITING,
    async run(ctx) {
      await ctx.observation();
      const upstream = ctx.peer.actors.upstream;
      const id = `${upstream.id}/activities/${randomUUID()}`;
      const firstUrl = ctx.taskUrl(upstream);
      await ctx.driver.createWaitingTask([firstUrl]);
      const first = await ctx.send(upstream, ctx.taskCompleted(upstream, firstUrl, { id }));
      if (!TWO_XX.includes(first.status)) return fail(`first delivery answered ${first.status}`);
      return await refused(ctx, TWO_XX, (url) =>
        ctx.send(upstream, ctx.taskCompleted(upstream, url, { id })),
      );
    },
  },
  {
    id: "REL-03",
    area: "reliability",
    level: "MUST",
    requirements: ["TW-INBOX-1", "TW-TRUST-3"],
    title: "an activity id processed at the inbox is not processed again at the shared inbox",
    needs: WAITING,
    async run(ctx) {
      const shared = sharedInbox(ctx);
      if (shared == null) throw new NotObservable("the actor has no endpoints.sharedInbox");
      await ctx.observation();
      const upstream = ctx.peer.actors.upstream;
      const id = `${upstream.id}/activities/${randomUUID()}`;
      const firstUrl = ctx.taskUrl(upstream);
      await ctx.driver.createWaitingTask([firstUrl]);
      const first = await ctx.send(upstream, ctx.taskCompleted(upstream, firstUrl, { id }));
      if (!TWO_XX.includes(first.status)) return fail(`first delivery answered ${first.status}`);
      return await refused(ctx, TWO_XX, (url) =>
        postRfc9421(
          shared,
          JSON.stringify(ctx.taskCompleted(upstream, url, { id })),
          upstream.signer,
        ),
      );
    },
  },
];
