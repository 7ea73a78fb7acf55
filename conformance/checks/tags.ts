/**
 * Tags (v1.3, [spec/v1/tags.md](../../spec/v1/tags.md)): a task's tags travel on the Task and
 * on each of its artifacts, in the activities the target delivers and the documents it serves
 * ([TW-TAG-3]), with the `tags` term defined ([TW-TAG-2]) and a well-formed value ([TW-TAG-1]);
 * an untagged task carries no `tags` member; and a receiver acts on a tagged activity like on
 * any other ([TW-TAG-4]).
 * @module
 */
import { randomUUID } from "node:crypto";
import {
  buildTaskCompleted,
  parseActivity,
  parseArtifactObject,
  parseTaskObject,
} from "../../protocol/index.ts";
import {
  completedTaskInit,
  hasType,
  jsonOf,
  type Context,
  type DeliveredTask,
} from "../context.ts";
import { fail, isVerdict, NotObservable, pass, type Check, type Verdict } from "../model.ts";
import { getJson } from "./discovery.ts";

type Json = Record<string, unknown>;
type Tags = Readonly<Record<string, string>>;

/** The driver creates a task with fresh tags; what the follower saw of it. */
function tagged(ctx: Context): Promise<{ tags: Tags; delivered: DeliveredTask }> {
  return ctx.once("tagged", async () => {
    // Names use every kind of character TW-TAG-1 allows; the run id tells runs apart.
    const tags: Tags = { "conformance.run": randomUUID(), "project/branch_1:x-y": "web main" };
    const create = ctx.driver.createTaggedTask;
    if (create == null) throw new NotObservable("the driver cannot create a tagged task");
    const delivered = await ctx.deliveredTask("tagged-task", ["tag-task"], () =>
      create.call(ctx.driver, tags),
    );
    return { tags, delivered };
  });
}

/** The delivered TaskCompleted of the tagged task, or a failure saying none came. */
async function taggedCompleted(
  ctx: Context,
): Promise<{ tags: Tags; delivered: DeliveredTask; activity: Json } | Verdict> {
  const { tags, delivered } = await tagged(ctx);
  const activity = delivered.completed != null ? jsonOf(delivered.completed) : undefined;
  if (activity == null) {
    return fail(
      `no TaskCompleted about the tagged task reached the follower's inbox within the timeout (task ${String(delivered.taskUrl)})`,
    );
  }
  if (!hasType(activity, "TaskCompleted")) {
    return fail(`the tagged task was announced by a ${String(activity.type)}, not a TaskCompleted`);
  }
  return { tags, delivered, activity };
}

export function artifactsOf(task: unknown): Json[] {
  const list = (task as { artifacts?: unknown } | undefined)?.artifacts;
  return (Array.isArray(list) ? list : []).filter(
    (a): a is Json => a != null && typeof a === "object",
  );
}

/** Undefined when `node.tags` is exactly `expected`; otherwise what is wrong, for a message. */
function tagsProblem(node: unknown, expected: Tags, where: string): string | undefined {
  const got = (node as { tags?: unknown } | undefined)?.tags;
  if (got == null) return `${where} carries no tags; expected ${JSON.stringify(expected)}`;
  const same =
    typeof got === "object" &&
    !Array.isArray(got) &&
    Object.keys(got).length === Object.keys(expected).length &&
    Object.entries(expected).every(([k, v]) => (got as Json)[k] === v);
  return same
    ? undefined
    : `${where} carries tags ${JSON.stringify(got)}; expected ${JSON.stringify(expected)}`;
}

/** The task and each of its listed artifacts carry exactly `tags`. */
function taskTagsProblem(task: unknown, tags: Tags, where: string): string | undefined {
  const artifacts = artifactsOf(task);
  if (artifacts.length === 0) return `${where} lists no artifact; the driver's task publishes one`;
  return (
    tagsProblem(task, tags, where) ??
    artifacts
      .map((a) => tagsProblem(a, tags, `artifact ${String(a.id)} listed on ${where}`))
      .find((p) => p != null)
  );
}

/** Where `tags` appears on a task, its artifacts or an artifact, for an untagged task. */
function tagsMembers(node: unknown, where: string): string[] {
  const found: string[] = [];
  if (node != null && typeof node === "object" && "tags" in node) found.push(where);
  for (const a of artifactsOf(node)) {
    if ("tags" in a) found.push(`artifact ${String(a.id)} listed on ${where}`);
  }
  return found;
}

export const tagChecks: Check[] = [
  {
    id: "TAG-01",
    area: "tags",
    level: "MUST",
    requirements: ["TW-TAG-3", "TW-TAG-2", "TW-TAG-1"],
    title:
      "a tagged task's TaskCompleted carries its tags on the Task and on every listed artifact, with the tags term defined",
    needs: ["tag-task"],
    async run(ctx) {
      const got = await taggedCompleted(ctx);
      if (isVerdict(got)) return got;
      const parsed = parseActivity(got.activity);
      if (!parsed.ok) {
        return fail(
          `parseActivity: ${parsed.reason.code} at ${parsed.reason.path}: ${parsed.reason.message}`,
        );
      }
      const problem = taskTagsProblem(got.activity.object, got.tags, "the TaskCompleted's Task");
      return problem == null ? pass() : fail(problem);
    },
  },
  {
    id: "TAG-02",
    area: "tags",
    level: "MUST",
    requirements: ["TW-TAG-3", "TW-TAG-2"],
    title: "every ArtifactPublished of the tagged task carries the task's tags",
    needs: ["tag-task"],
    async run(ctx) {
      const got = await taggedCompleted(ctx);
      if (isVerdict(got)) return got;
      const artifacts = artifactsOf(got.activity.object);
      if (artifacts.length === 0) return fail("the TaskCompleted lists no artifact");
      for (const a of artifacts) {
        // Deliveries may arrive in any order (TW-DLV-9); wait for each one.
        const found = await ctx.poll(() =>
          got.delivered
            .since()
            .map(jsonOf)
            .find(
              (j) =>
                hasType(j, "ArtifactPublished") && (j?.object as Json | undefined)?.id === a.id,
            ),
        );
        if (found == null) return fail(`no ArtifactPublished for ${String(a.id)} was delivered`);
        const parsed = parseActivity(found);
        if (!parsed.ok) {
          return fail(
            `the ArtifactPublished of ${String(a.id)} does not parse: ${parsed.reason.message}`,
          );
        }
        const problem = tagsProblem(
          found.object,
          got.tags,
          `the ArtifactPublished of ${String(a.id)}`,
        );
        if (problem != null) return fail(problem);
      }
      return pass();
    },
  },
  {
    id: "TAG-03",
    area: "tags",
    level: "MUST",
    requirements: ["TW-TAG-3", "TW-TAG-2", "TW-DEREF-1", "TW-DEREF-2"],
    title:
      "the tagged task's document, its listed artifacts and each artifact document carry the tags",
    needs: ["tag-task"],
    async run(ctx) {
      const got = await taggedCompleted(ctx);
      if (isVerdict(got)) return got;
      const id = (got.activity.object as Json | undefined)?.id;
      if (typeof id !== "string") return fail("the TaskCompleted's Task has no id");
      const doc = await getJson(id);
      if (doc.status !== 200) return fail(`GET ${id}: expected 200, got ${doc.status}`);
      const task = parseTaskObject(doc.json, { fetchedFrom: id });
      if (!task.ok) return fail(`the task document does not parse: ${task.reason.message}`);
      const problem = taskTagsProblem(doc.json, got.tags, `the task document ${id}`);
      if (problem != null) return fail(problem);
      for (const a of artifactsOf(doc.json)) {
        if (typeof a.id !== "string") return fail("an artifact of the task document has no id");
        const art = await getJson(a.id);
        if (art.status !== 200) return fail(`GET ${a.id}: expected 200, got ${art.status}`);
        const parsed = parseArtifactObject(art.json, { fetchedFrom: a.id });
        if (!parsed.ok)
          return fail(`the artifact document ${a.id} does not parse: ${parsed.reason.message}`);
        const p = tagsProblem(art.json, got.tags, `the artifact document ${a.id}`);
        if (p != null) return fail(p);
      }
      return pass();
    },
  },
  {
    id: "TAG-04",
    area: "tags",
    level: "MUST",
    requirements: ["TW-TAG-3"],
    title:
      "an untagged task carries no tags member: not in its TaskCompleted, ArtifactPublished, task or artifact documents",
    needs: ["complete-task"],
    async run(ctx) {
      const p = await ctx.published();
      const activity = p.completed != null ? jsonOf(p.completed) : undefined;
      if (activity == null) throw new NotObservable("no TaskCompleted was delivered (PUB-01)");
      const task = activity.object as Json | undefined;
      const found = tagsMembers(task, "the TaskCompleted's Task");
      for (const j of p.since().map(jsonOf)) {
        if (!hasType(j, "ArtifactPublished")) continue;
        const artifact = j?.object as Json | undefined;
        if (artifact?.task !== task?.id) continue;
        if (artifact != null && "tags" in artifact) {
          found.push(`the ArtifactPublished of ${String(artifact.id)}`);
        }
      }
      if (typeof task?.id === "string") {
        const doc = await getJson(task.id);
        found.push(...tagsMembers(doc.json, `the task document ${task.id}`));
        for (const a of artifactsOf(doc.json)) {
          if (typeof a.id !== "string") continue;
          const art = (await getJson(a.id)).json;
          if (art != null && typeof art === "object" && "tags" in art) {
            found.push(`the artifact document ${a.id}`);
          }
        }
      }
      return found.length === 0
        ? pass()
        : fail(`a task created without tags carries a tags member in ${found.join("; ")}`);
    },
  },
  {
    id: "TAG-05",
    area: "tags",
    level: "MUST",
    requirements: ["TW-TAG-4"],
    title:
      "a valid TaskCompleted from a followed actor whose task and artifact carry tags is acted on",
    needs: ["follow", "create-waiting-task", "task-state"],
    async run(ctx) {
      await ctx.observation();
      const upstream = ctx.peer.actors.upstream;
      const url = ctx.taskUrl(upstream);
      const waiting = await ctx.driver.createWaitingTask([url]);
      const tags = { dataset: "conformance", period: "2026-11" };
      const name = "public/tagged.txt";
      const activity = buildTaskCompleted({
        id: `${upstream.id}/activities/${randomUUID()}`,
        actor: upstream.id,
        published: new Date(),
        task: {
          ...completedTaskInit(url, upstream.id),
          tags,
          artifacts: [
            {
              id: `${url}/artifacts/${name}`,
              attributedTo: upstream.id,
              name,
              task: url,
              url: `${upstream.id}/content/${randomUUID()}`,
              mediaType: "text/plain",
              size: 4,
              sha256: "0".repeat(64),
              expires: new Date(Date.now() + 86_400_000),
              tags,
            },
          ],
        },
      });
      const answer = await ctx.send(upstream, activity);
      if (answer.status < 200 || answer.status > 299) {
        return fail(
          `the tagged TaskCompleted was answered ${answer.status}: ${answer.text.slice(0, 200)}`,
        );
      }
      const moved = await ctx.poll(
        async () => {
          const state = await ctx.driver.taskState(waiting.taskId);
          return state !== "unscheduled" ? state : undefined;
        },
        Math.max(3000, ctx.timing.deliveryTimeoutMs / 4),
      );
      return moved != null
        ? pass(`the waiting task moved to "${moved}"`)
        : fail(
            "the waiting task stayed unscheduled: a TaskCompleted whose task carries tags was not acted on, where the same activity without tags is (the positive control)",
          );
    },
  },
];
