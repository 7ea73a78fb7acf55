/**
 * Fetching: the target dereferences the remote tasks its tasks wait on, and uses a fetched
 * document only when its id is the URL it fetched and the origin rules hold.
 * @module
 */
import { buildTaskObject } from "../../protocol/index.ts";
import { completedTaskInit, type Context } from "../context.ts";
import { fail, NotObservable, pass, type Check, type Verdict } from "../model.ts";

const NEEDS: Check["needs"] = ["create-waiting-task", "task-state"];

function completedTask(id: string, attributedTo: string): unknown {
  return buildTaskObject(completedTaskInit(id, attributedTo));
}

/** Serves `doc` at a fresh upstream task URL, makes a task wait on it, and reports the state. */
async function waitOnServed(
  ctx: Context,
  doc: (url: string) => unknown,
  timeoutMs: number,
): Promise<{ moved: boolean; state: string; fetched: boolean }> {
  const url = ctx.taskUrl(ctx.peer.actors.upstream);
  ctx.peer.tasks.set(url, doc(url));
  const waiting = await ctx.driver.createWaitingTask([url]);
  const state = await ctx.poll(async () => {
    const s = await ctx.driver.taskState(waiting.taskId);
    return s !== "unscheduled" ? s : undefined;
  }, timeoutMs);
  const fetched = ctx.peer.requests.some((r) => r.method === "GET" && r.url === url);
  return {
    moved: state != null,
    state: state ?? (await ctx.driver.taskState(waiting.taskId)),
    fetched,
  };
}

/** Whether the target applies a fetched, valid document (the positive control of this area). */
function dereferences(ctx: Context): Promise<boolean> {
  return ctx.once("dereferences", async () => {
    const upstream = ctx.peer.actors.upstream;
    const r = await waitOnServed(ctx, (url) => completedTask(url, upstream.id), 10_000);
    return r.moved;
  });
}

async function notUsed(ctx: Context, doc: (url: string) => unknown): Promise<Verdict> {
  if (!(await dereferences(ctx))) {
    throw new NotObservable(
      "the target did not apply a valid fetched document (DEREF-01), so ignoring a bad one proves nothing",
    );
  }
  const r = await waitOnServed(ctx, doc, Math.max(ctx.timing.settleMs, 3000));
  if (!r.fetched) throw new NotObservable("the target did not fetch the served document");
  return r.moved ? fail(`the waiting task moved to "${r.state}": the document was used`) : pass();
}

export const derefChecks: Check[] = [
  {
    id: "DEREF-01",
    area: "dereference",
    level: "SHOULD",
    requirements: ["TW-DEREF-7", "TW-DEREF-6", "TW-DLV-10"],
    title:
      "a waited-on remote task that is already completed is fetched and unblocks its dependent",
    needs: NEEDS,
    async run(ctx) {
      return (await dereferences(ctx))
        ? pass()
        : fail("a task waiting on an already completed remote task did not move within 10 s");
    },
  },
  {
    id: "DEREF-02",
    area: "dereference",
    level: "MUST",
    requirements: ["TW-DEREF-5"],
    title: "a fetched task document whose id is not the URL requested is not used",
    needs: NEEDS,
    run: (ctx) => notUsed(ctx, (url) => completedTask(`${url}-other`, ctx.peer.actors.upstream.id)),
  },
  {
    id: "DEREF-03",
    area: "dereference",
    level: "MUST",
    requirements: ["TW-DEREF-5", "TW-TRUST-4"],
    title: "a fetched task document attributed to an actor on another origin is not used",
    needs: NEEDS,
    run: (ctx) => notUsed(ctx, (url) => completedTask(url, "http://127.0.0.2:9/actors/elsewhere")),
  },
];
