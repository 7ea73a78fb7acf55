/**
 * How the target announces resolutions other than a completion: a failed task's
 * `TaskFailed`, and the `TaskGroupResolved` of the group of the task the driver completed,
 * with the group document at its id.
 * @module
 */
import { parseActivity, parseTaskGroupObject } from "../../protocol/index.ts";
import { hasType, jsonOf, type Context } from "../context.ts";
import { fail, NotObservable, pass, type Check, type Verdict } from "../model.ts";
import type { ReceivedRequest } from "../signing.ts";
import { getJson } from "./discovery.ts";

/** The follower follows the target, the driver makes a task fail; the TaskFailed delivered. */
function failedDelivery(ctx: Context): Promise<{ taskUrl?: string; delivered?: ReceivedRequest }> {
  return ctx.once("failed", async () => {
    const { reply } = await ctx.followerFollows();
    if (reply == null || jsonOf(reply)?.type !== "Accept") {
      throw new NotObservable("the target did not accept the suite's follower");
    }
    const create = ctx.driver.createFailingTask;
    if (create == null) throw new NotObservable("the driver cannot make a task fail");
    const seen = ctx.peer.inbox("follower").length;
    const task = await create.call(ctx.driver);
    const delivered = await ctx.poll(
      () =>
        ctx.peer
          .inbox("follower")
          .slice(seen)
          .find((r) => {
            const json = jsonOf(r);
            const object = json?.object as { id?: unknown } | undefined;
            return hasType(json, "TaskFailed") && (task.url == null || object?.id === task.url);
          }),
      Math.max(ctx.timing.deliveryTimeoutMs, 60_000),
    );
    return {
      ...(task.url != null ? { taskUrl: task.url } : {}),
      ...(delivered ? { delivered } : {}),
    };
  });
}

/** The TaskGroupResolved about the group of the task the driver completed, if one came. */
async function groupResolved(
  ctx: Context,
): Promise<{ group: string; delivered: ReceivedRequest | undefined }> {
  const p = await ctx.published();
  const task = p.completed != null ? (jsonOf(p.completed)?.object as { taskGroup?: unknown }) : {};
  if (typeof task.taskGroup !== "string") {
    throw new NotObservable("no TaskCompleted naming a taskGroup was delivered");
  }
  const group = task.taskGroup;
  const delivered = await ctx.poll(
    () =>
      p.since().find((r) => {
        const json = jsonOf(r);
        const object = json?.object as { id?: unknown } | undefined;
        return hasType(json, "TaskGroupResolved") && object?.id === group;
      }),
    // The group resolves with its only task; the activity follows the TaskCompleted closely.
    Math.min(ctx.timing.deliveryTimeoutMs, 10_000),
  );
  return { group, delivered };
}

function parsedAs(r: ReceivedRequest, kind: string, actorId: string): Verdict | undefined {
  const parsed = parseActivity(jsonOf(r));
  if (!parsed.ok) {
    return fail(
      `parseActivity: ${parsed.reason.code} at ${parsed.reason.path ?? ""}: ${parsed.reason.message}`,
    );
  }
  if (parsed.value.kind !== kind) return fail(`parsed as ${parsed.value.kind}, not ${kind}`);
  if (parsed.value.actor !== actorId) return fail(`actor ${parsed.value.actor} ≠ ${actorId}`);
  return undefined;
}

export const resolutionChecks: Check[] = [
  {
    id: "PUB-17",
    area: "publishing",
    level: "MUST",
    requirements: ["TW-DEP-7", "TW-ACT-3", "TW-FOLLOW-4", "TW-ORG-1", "TW-ORG-2"],
    title:
      "a failed task's TaskFailed is delivered to the follower, parses as taskweb v1 and embeds the task failed with a reason",
    needs: ["fail-task"],
    async run(ctx) {
      const { taskUrl, delivered } = await failedDelivery(ctx);
      if (delivered == null) {
        return fail(
          `no TaskFailed about the driver's failing task reached the follower's inbox (task ${String(taskUrl)})`,
        );
      }
      const problem = parsedAs(delivered, "TaskFailed", ctx.actorId);
      if (problem != null) return problem;
      const task = jsonOf(delivered)?.object as { taskState?: unknown; reasonResolved?: unknown };
      if (task.taskState !== "failed") {
        return fail(
          `taskState: expected failed (the command exited non-zero), got ${String(task.taskState)}`,
        );
      }
      return typeof task.reasonResolved === "string"
        ? pass()
        : fail("the task has no reasonResolved");
    },
  },
  {
    id: "PUB-18",
    area: "publishing",
    level: "MUST",
    requirements: ["TW-DEREF-1"],
    title: "the failed task's id dereferences to its task document in state failed",
    needs: ["fail-task"],
    async run(ctx) {
      const { delivered } = await failedDelivery(ctx);
      if (delivered == null) throw new NotObservable("no TaskFailed was delivered (PUB-17)");
      const id = (jsonOf(delivered)?.object as { id?: unknown } | undefined)?.id;
      if (typeof id !== "string") return fail("the TaskFailed's object has no id");
      const got = await getJson(id);
      if (got.status !== 200) return fail(`GET ${id}: expected 200, got ${got.status}`);
      const doc = got.json as { id?: unknown; taskState?: unknown } | undefined;
      if (doc?.id !== id) return fail(`document id ${String(doc?.id)} ≠ ${id}`);
      return doc.taskState === "failed"
        ? pass()
        : fail(`taskState: expected failed, got ${String(doc.taskState)}`);
    },
  },
  {
    id: "GRP-01",
    area: "publishing",
    level: "SHOULD",
    requirements: ["TW-GRP-4"],
    title: "when the completed task's group resolves, a TaskGroupResolved about it is delivered",
    needs: ["complete-task"],
    async run(ctx) {
      const { group, delivered } = await groupResolved(ctx);
      return delivered != null
        ? pass()
        : fail(`no TaskGroupResolved about ${group} reached the follower within 10 s`);
    },
  },
  {
    id: "GRP-02",
    area: "publishing",
    level: "MUST",
    requirements: ["TW-GRP-1", "TW-GRP-2", "TW-GRP-3", "TW-CTX-4"],
    title:
      "a delivered TaskGroupResolved parses as taskweb v1.1: the group on the actor's origin, its tally and resolved",
    needs: ["complete-task"],
    async run(ctx) {
      const { delivered } = await groupResolved(ctx);
      if (delivered == null) throw new NotObservable("no TaskGroupResolved was delivered (GRP-01)");
      const problem = parsedAs(delivered, "TaskGroupResolved", ctx.actorId);
      if (problem != null) return problem;
      const group = jsonOf(delivered)?.object as { completedCount?: unknown };
      return typeof group.completedCount === "number" && group.completedCount >= 1
        ? pass()
        : fail(
            `completedCount ${String(group.completedCount)}: the group's completed task is not counted`,
          );
    },
  },
  {
    id: "GRP-03",
    area: "publishing",
    level: "MUST",
    requirements: ["TW-GRP-5"],
    title: "the task group's id dereferences to its TaskGroup document, resolved",
    needs: ["complete-task"],
    async run(ctx) {
      const { group } = await groupResolved(ctx);
      const got = await getJson(group);
      if (got.status !== 200) return fail(`GET ${group}: expected 200, got ${got.status}`);
      const parsed = parseTaskGroupObject(got.json, { fetchedFrom: group });
      if (!parsed.ok) {
        return fail(`parseTaskGroupObject: ${parsed.reason.code}: ${parsed.reason.message}`);
      }
      if (parsed.value.id !== group) return fail(`document id ${parsed.value.id} ≠ ${group}`);
      return parsed.value.resolved != null
        ? pass()
        : fail("the group's only task has resolved, but the document has no resolved");
    },
  },
];
