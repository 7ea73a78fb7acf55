/**
 * Provenance inputs (v1.4, [spec/v1/provenance.md](../../spec/v1/provenance.md)): a task that
 * consumed an artifact of the suite's `upstream` actor lists it in `inputs`, with the digest of
 * the bytes the suite served, in its `TaskCompleted` and its task document ([TW-PRV-3]), well
 * formed and with the `inputs` term defined ([TW-PRV-1], [TW-PRV-2]); a task that consumed
 * nothing lists none; and a receiver takes another cluster's `inputs` as claims that decide
 * nothing ([TW-PRV-4]).
 * @module
 */
import { createHash, randomUUID } from "node:crypto";
import {
  buildArtifactObject,
  buildTaskCompleted,
  buildTaskObject,
  parseActivity,
  parseTaskObject,
  type ArtifactObjectInit,
} from "../../protocol/index.ts";
import {
  completedTaskInit,
  hasType,
  jsonOf,
  sleep,
  type Context,
  type DeliveredTask,
} from "../context.ts";
import { fail, isVerdict, NotObservable, pass, type Check, type Verdict } from "../model.ts";
import { getJson } from "./discovery.ts";

type Json = Record<string, unknown>;

/** The input the consuming task must list. */
interface ExpectedInput {
  readonly artifact: string;
  readonly task: string;
  readonly attributedTo: string;
  readonly sha256: string;
}

/**
 * The suite's upstream publishes a completed task with one artifact (task document, artifact
 * document and bytes served by the peer, and, when the target follows upstream, a signed
 * TaskCompleted); the driver creates a task consuming that artifact. What the follower saw.
 * With `mismatch`, the bytes served are not the ones whose sha256 upstream published.
 */
function consumed(
  ctx: Context,
  variant: "match" | "mismatch" = "match",
): Promise<{ expected: ExpectedInput; delivered: DeliveredTask }> {
  return ctx.once(`consumed-${variant}`, async () => {
    const create = ctx.driver.createConsumingTask;
    if (create == null) throw new NotObservable("the driver cannot create a consuming task");
    const upstream = ctx.peer.actors.upstream;
    const taskUrl = ctx.taskUrl(upstream);
    const name = "public/conformance-input.txt";
    const bytes = Buffer.from(`conformance input ${randomUUID()}\n`);
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    const artifact: ArtifactObjectInit = {
      id: `${taskUrl}/artifacts/${name}`,
      attributedTo: upstream.id,
      name,
      task: taskUrl,
      url: `${upstream.id}/content/${randomUUID()}/conformance-input.txt`,
      mediaType: "text/plain",
      size: bytes.length,
      sha256,
      expires: new Date(Date.now() + 86_400_000),
    };
    const task = { ...completedTaskInit(taskUrl, upstream.id), artifacts: [artifact] };
    ctx.peer.tasks.set(taskUrl, buildTaskObject(task));
    ctx.peer.tasks.set(String(artifact.id), buildArtifactObject(artifact));
    // Same length, other bytes: only the digest tells them apart.
    const served = variant === "match" ? bytes : Buffer.from(bytes.toString().toUpperCase());
    ctx.peer.files.set(String(artifact.url), { type: "text/plain", body: served });
    // A target that follows upstream also learns of the task from its TaskCompleted; one
    // that does not dereferences the task it waits on (TW-DEREF-7).
    const follows = await ctx.observation().then(
      () => true,
      () => false,
    );
    const delivered = await ctx.deliveredTask(
      `consuming-${variant}`,
      ["consume-input"],
      async () => {
        const created = await create.call(ctx.driver, [{ task: taskUrl, artifact: name }]);
        if (follows) {
          await ctx.send(
            upstream,
            buildTaskCompleted({
              id: `${upstream.id}/activities/${randomUUID()}`,
              actor: upstream.id,
              published: new Date(),
              task,
            }),
          );
        }
        return created;
      },
    );
    const expected = {
      artifact: String(artifact.id),
      task: taskUrl,
      attributedTo: upstream.id,
      sha256,
    };
    return { expected, delivered };
  });
}

/** The consuming task's delivered TaskCompleted, or a failure saying what came instead. */
async function consumingCompleted(
  ctx: Context,
): Promise<{ expected: ExpectedInput; activity: Json } | Verdict> {
  const { expected, delivered } = await consumed(ctx);
  const activity = delivered.completed != null ? jsonOf(delivered.completed) : undefined;
  if (activity == null) {
    return fail(
      `no TaskCompleted about the task consuming ${expected.artifact} reached the follower's inbox within the timeout (task ${String(delivered.taskUrl)})`,
    );
  }
  if (!hasType(activity, "TaskCompleted")) {
    const task = activity.object as Json | undefined;
    return fail(
      `the task consuming ${expected.artifact} resolved ${String(task?.taskState)} (${String(task?.reasonResolved)}), not completed`,
    );
  }
  return { expected, activity };
}

/** Undefined when `task.inputs` lists `expected` exactly; otherwise what is wrong. */
function inputProblem(task: unknown, expected: ExpectedInput, where: string): string | undefined {
  const inputs = (task as { inputs?: unknown } | undefined)?.inputs;
  if (!Array.isArray(inputs)) {
    return `${where} has no inputs; expected one naming ${expected.artifact}`;
  }
  const entry = (inputs as Json[]).find((i) => i?.artifact === expected.artifact);
  if (entry == null) {
    return `${where} lists ${inputs.length} input(s), none with artifact ${expected.artifact}`;
  }
  for (const key of ["task", "attributedTo", "sha256"] as const) {
    if (entry[key] !== expected[key]) {
      return `the input ${expected.artifact} on ${where} has ${key} ${JSON.stringify(entry[key])}; expected ${expected[key]}`;
    }
  }
  return undefined;
}

export const provenanceChecks: Check[] = [
  {
    id: "PRV-01",
    area: "provenance",
    level: "SHOULD",
    requirements: ["TW-PRV-3"],
    title:
      "a task that consumed an upstream artifact lists it in its TaskCompleted's inputs: artifact, task, publisher and the sha256 of the bytes served",
    needs: ["consume-input"],
    async run(ctx) {
      const got = await consumingCompleted(ctx);
      if (isVerdict(got)) return got;
      const problem = inputProblem(got.activity.object, got.expected, "the TaskCompleted's Task");
      return problem == null ? pass() : fail(problem);
    },
  },
  {
    id: "PRV-02",
    area: "provenance",
    level: "MUST",
    requirements: ["TW-PRV-1", "TW-PRV-2"],
    title:
      "inputs, where the TaskCompleted or task document lists them, are well formed and the inputs term is defined",
    needs: ["consume-input"],
    async run(ctx) {
      const got = await consumingCompleted(ctx);
      if (isVerdict(got)) return got;
      const task = got.activity.object as Json | undefined;
      let seen = 0;
      if (task != null && "inputs" in task) {
        seen += 1;
        const parsed = parseActivity(got.activity);
        if (!parsed.ok) {
          return fail(
            `the TaskCompleted: ${parsed.reason.code} at ${parsed.reason.path}: ${parsed.reason.message}`,
          );
        }
      }
      if (typeof task?.id === "string") {
        const doc = await getJson(task.id);
        if (doc.json != null && typeof doc.json === "object" && "inputs" in doc.json) {
          seen += 1;
          const parsed = parseTaskObject(doc.json, { fetchedFrom: task.id });
          if (!parsed.ok) {
            return fail(
              `the task document: ${parsed.reason.code} at ${parsed.reason.path}: ${parsed.reason.message}`,
            );
          }
        }
      }
      if (seen === 0) {
        throw new NotObservable(
          "neither the TaskCompleted nor the task document lists inputs (PRV-01)",
        );
      }
      return pass();
    },
  },
  {
    id: "PRV-03",
    area: "provenance",
    level: "SHOULD",
    requirements: ["TW-PRV-3", "TW-DEREF-1"],
    title: "the consuming task's document lists the same input with the same sha256",
    needs: ["consume-input"],
    async run(ctx) {
      const got = await consumingCompleted(ctx);
      if (isVerdict(got)) return got;
      const id = (got.activity.object as Json | undefined)?.id;
      if (typeof id !== "string") return fail("the TaskCompleted's Task has no id");
      const doc = await getJson(id);
      if (doc.status !== 200) return fail(`GET ${id}: expected 200, got ${doc.status}`);
      const problem = inputProblem(doc.json, got.expected, `the task document ${id}`);
      return problem == null ? pass() : fail(problem);
    },
  },
  {
    id: "PRV-04",
    area: "provenance",
    level: "SHOULD",
    requirements: ["TW-PRV-3"],
    title: "a task that consumed nothing has no inputs member, in its TaskCompleted or document",
    needs: ["complete-task"],
    async run(ctx) {
      const p = await ctx.published();
      const task =
        p.completed != null ? (jsonOf(p.completed)?.object as Json | undefined) : undefined;
      if (task == null) throw new NotObservable("no TaskCompleted was delivered (PUB-01)");
      const found: string[] = [];
      if ("inputs" in task) found.push("the TaskCompleted's Task");
      if (typeof task.id === "string") {
        const doc = (await getJson(task.id)).json;
        if (doc != null && typeof doc === "object" && "inputs" in doc) {
          found.push(`the task document ${task.id}`);
        }
      }
      return found.length === 0
        ? pass()
        : fail(`a task without inputs carries an inputs member in ${found.join(" and ")}`);
    },
  },
  {
    id: "PRV-05",
    area: "provenance",
    level: "SHOULD",
    requirements: ["TW-PRV-3"],
    title:
      "an input whose bytes did not match upstream's sha256 is not listed, in the TaskFailed or the task document",
    needs: ["consume-input"],
    async run(ctx) {
      const { expected, delivered } = await consumed(ctx, "mismatch");
      const activity = delivered.completed != null ? jsonOf(delivered.completed) : undefined;
      if (activity == null) {
        return fail(
          `no TaskCompleted or TaskFailed about the task consuming ${expected.artifact} reached the follower's inbox within the timeout (task ${String(delivered.taskUrl)})`,
        );
      }
      const task = activity.object as Json | undefined;
      if (task?.taskState !== "exception" || task.reasonResolved !== "input-digest-mismatch") {
        throw new NotObservable(
          `the task consuming bytes that do not match their sha256 resolved ${String(task?.taskState)} (${String(task?.reasonResolved)}), not exception (input-digest-mismatch) as TW-ART-4 requires, so what it verified is unknown`,
        );
      }
      const listed = (where: string, node: unknown) => {
        const inputs = (node as { inputs?: unknown } | undefined)?.inputs;
        return Array.isArray(inputs) &&
          (inputs as Json[]).some((i) => i?.artifact === expected.artifact)
          ? [where]
          : [];
      };
      const found = listed(
        hasType(activity, "TaskFailed") ? "the TaskFailed" : "the activity",
        task,
      );
      if (typeof task.id === "string") {
        found.push(...listed(`the task document ${task.id}`, (await getJson(task.id)).json));
      }
      return found.length === 0
        ? pass()
        : fail(
            `${found.join(" and ")} list(s) ${expected.artifact}, whose bytes the target refused: an input it did not verify`,
          );
    },
  },
  {
    id: "PRV-06",
    area: "provenance",
    level: "MUST",
    requirements: ["TW-PRV-4"],
    title:
      "a followed actor's TaskCompleted with inputs is acted on, and a task its inputs name is not taken as resolved",
    needs: ["follow", "create-waiting-task", "task-state"],
    async run(ctx) {
      await ctx.observation();
      const { upstream, evil } = ctx.peer.actors;
      // A task of an actor the target does not follow, which the peer answers 404 for: only
      // the claim in upstream's inputs could make it look completed.
      const claimed = ctx.taskUrl(evil);
      const waitsOnClaimed = await ctx.driver.createWaitingTask([claimed]);
      const url = ctx.taskUrl(upstream);
      const waiting = await ctx.driver.createWaitingTask([url]);
      const activity = buildTaskCompleted({
        id: `${upstream.id}/activities/${randomUUID()}`,
        actor: upstream.id,
        published: new Date(),
        task: {
          ...completedTaskInit(url, upstream.id),
          inputs: [
            {
              artifact: `${claimed}/artifacts/public/claimed.txt`,
              task: claimed,
              attributedTo: evil.id,
              sha256: "a".repeat(64),
              path: "claimed.txt",
            },
          ],
        },
      });
      const answer = await ctx.send(upstream, activity);
      if (answer.status < 200 || answer.status > 299) {
        return fail(
          `the TaskCompleted with inputs was answered ${answer.status}: ${answer.text.slice(0, 200)}`,
        );
      }
      const moved = await ctx.poll(
        async () => {
          const state = await ctx.driver.taskState(waiting.taskId);
          return state !== "unscheduled" ? state : undefined;
        },
        Math.max(3000, ctx.timing.deliveryTimeoutMs / 4),
      );
      if (moved == null) {
        return fail(
          "the task waiting on upstream's task stayed unscheduled: a TaskCompleted whose task lists inputs was not acted on, where one without is (the positive control)",
        );
      }
      await sleep(ctx.timing.settleMs);
      const state = await ctx.driver.taskState(waitsOnClaimed.taskId);
      return state === "unscheduled"
        ? pass()
        : fail(
            `the task waiting on ${claimed}, which only upstream's inputs named, moved to "${state}": the claim was acted on`,
          );
    },
  },
];
