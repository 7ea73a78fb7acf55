/**
 * Delivery failures, as the suite's scripted inboxes cause them: `flaky` answers 503 to the
 * first attempt of each activity, so the target must try again ([TW-DLV-5]); `gone` answers
 * 410, so the target must not ([TW-DLV-4]). Both follow the target, then the driver makes a
 * task complete. A sender that double-knocks ([TW-SIG-6]) sends each attempt twice at once,
 * with RFC 9421 and with draft-cavage: such a pair counts as one attempt.
 * @module
 */
import { randomUUID } from "node:crypto";
import { hasType, jsonOf, refersTo, sleep, type Context } from "../context.ts";
import { fail, NotObservable, pass, type Check } from "../model.ts";
import { signatureScheme, type PeerName } from "../peer.ts";
import type { ReceivedRequest } from "../signing.ts";

interface ScriptedDelivery {
  /** The id of the TaskCompleted the target delivered. */
  readonly activityId: string;
  /** Attempts at `flaky` and at `gone` to deliver it so far (a double knock is one). */
  attempts(name: "flaky" | "gone"): ReceivedRequest[];
}

/** Sends a Follow from `name` and waits for the target's Accept. */
async function follows(ctx: Context, name: PeerName): Promise<void> {
  const actor = ctx.peer.actors[name];
  const followId = `${actor.id}/follows/${randomUUID()}`;
  const answer = await ctx.send(actor, {
    "@context": "https://www.w3.org/ns/activitystreams",
    id: followId,
    type: "Follow",
    actor: actor.id,
    object: ctx.actorId,
  });
  if (answer.status < 200 || answer.status > 299) {
    throw new NotObservable(`the target answered ${answer.status} to ${name}'s Follow`);
  }
  const accepted = await ctx.poll(() =>
    ctx.peer.inbox(name).find((r) => {
      const json = jsonOf(r);
      return json?.type === "Accept" && refersTo(json, followId) ? r : undefined;
    }),
  );
  if (accepted == null) throw new NotObservable(`the target did not accept ${name}'s Follow`);
}

/**
 * Delivery attempts among the requests that carried one activity: each request starts one,
 * except a draft-cavage request right after an RFC 9421 one, which is the second knock of
 * the same attempt (the scripted inboxes refuse every first knock).
 */
function attempts(requests: readonly ReceivedRequest[]): ReceivedRequest[] {
  return requests.filter((r, i) => {
    const previous = requests[i - 1];
    return !(
      signatureScheme(r.headers) === "cavage" &&
      previous != null &&
      signatureScheme(previous.headers) === "rfc9421"
    );
  });
}

function scriptedDelivery(ctx: Context): Promise<ScriptedDelivery> {
  return ctx.once("scripted-delivery", async () => {
    ctx.require(["complete-task"]);
    await follows(ctx, "flaky");
    await follows(ctx, "gone");
    const task = await ctx.driver.createCompletingTask();
    const isIt = (r: ReceivedRequest) => {
      const json = jsonOf(r);
      const object = json?.object as { id?: unknown } | undefined;
      return hasType(json, "TaskCompleted") && (task.url == null || object?.id === task.url);
    };
    const first = await ctx.poll(
      () => ctx.peer.inbox("flaky").find(isIt),
      Math.max(ctx.timing.deliveryTimeoutMs, 60_000),
    );
    const activityId = first != null ? jsonOf(first)?.id : undefined;
    if (typeof activityId !== "string") {
      throw new NotObservable("the driver's task was never delivered to the suite's flaky inbox");
    }
    return {
      activityId,
      attempts: (name) =>
        attempts(ctx.peer.inbox(name).filter((r) => jsonOf(r)?.id === activityId)),
    };
  });
}

export const deliveryChecks: Check[] = [
  {
    id: "REL-04",
    area: "reliability",
    level: "MUST",
    requirements: ["TW-DLV-5", "TW-SIG-5"],
    title: "a delivery answered 503 is tried again, newly signed",
    needs: ["complete-task"],
    async run(ctx) {
      const d = await scriptedDelivery(ctx);
      const retried = await ctx.poll(() => d.attempts("flaky")[1]);
      if (retried == null) {
        return fail(
          `the TaskCompleted answered 503 was not tried again within ${ctx.timing.deliveryTimeoutMs} ms`,
        );
      }
      const first = d.attempts("flaky")[0];
      const gap = retried.receivedAt - (first?.receivedAt ?? 0);
      const signed = (r: ReceivedRequest | undefined) =>
        r?.headers["signature-input"] ?? r?.headers.date ?? "";
      // Signing times are in seconds: only a retry 2 s later must show a new one.
      return gap >= 2000 && signed(first) === signed(retried)
        ? fail(`the retry ${gap} ms later carries the first attempt's signing time, not its own`)
        : pass(`tried again after ${gap} ms`);
    },
  },
  {
    id: "REL-05",
    area: "reliability",
    level: "MUST",
    requirements: ["TW-DLV-4"],
    title: "a delivery answered 410 is not tried again",
    needs: ["complete-task"],
    async run(ctx) {
      const d = await scriptedDelivery(ctx);
      const gone = await ctx.poll(() => d.attempts("gone")[0]);
      if (gone == null) return fail("the TaskCompleted was never delivered to the gone inbox");
      // How long the target waits before a retry is its own choice; the 503 retry tells.
      const flaky = await ctx.poll(() => d.attempts("flaky")[1]);
      const [firstFlaky] = d.attempts("flaky");
      if (flaky == null || firstFlaky == null) {
        throw new NotObservable(
          "the target never retried the 503 either, so its retry delay (and what not retrying means) is unknown",
        );
      }
      const delay = flaky.receivedAt - firstFlaky.receivedAt;
      const until = gone.receivedAt + 3 * delay + ctx.timing.settleMs;
      await sleep(Math.max(0, until - Date.now()));
      const attempts = d.attempts("gone").length;
      return attempts === 1
        ? pass(`watched ${3 * delay + ctx.timing.settleMs} ms after the 410`)
        : fail(`the TaskCompleted answered 410 was delivered ${attempts} times`);
    },
  },
];
