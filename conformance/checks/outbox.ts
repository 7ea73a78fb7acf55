/**
 * The outbox as a follower that was down reads it to catch up ([TW-COLL-1], [TW-COLL-3]):
 * an OrderedCollection with a first page, pages newest first linked by `next`, activities
 * embedded in full, by the outbox's owner, each dereferenceable at its id.
 * @module
 */
import { jsonOf, type Context } from "../context.ts";
import { fail, NotObservable, pass, type Check } from "../model.ts";
import { getJson } from "./discovery.ts";

/** At most this many pages are read: enough to find a fresh activity, bounded for big outboxes. */
const MAX_PAGES = 5;

interface OutboxRead {
  readonly collection: Record<string, unknown>;
  /** Each page's items, in page order. */
  readonly pages: Record<string, unknown>[][];
  /** What was wrong with the structure, if anything. */
  readonly problem?: string;
}

const idOf = (v: unknown): string | undefined =>
  typeof v === "string"
    ? v
    : v != null && typeof v === "object" && typeof (v as { id?: unknown }).id === "string"
      ? (v as { id: string }).id
      : undefined;

/** Reads the outbox and up to MAX_PAGES pages, once per run. */
function readOutbox(ctx: Context): Promise<OutboxRead> {
  return ctx.once("outbox", async () => {
    // Read after something was published, so that the outbox has items.
    await ctx.published();
    const url = ctx.actor.outbox;
    if (typeof url !== "string") throw new NotObservable("the actor has no outbox");
    const got = await getJson(url);
    const collection = (got.json ?? {}) as Record<string, unknown>;
    const pages: Record<string, unknown>[][] = [];
    if (got.status !== 200) return { collection, pages, problem: `GET ${url}: ${got.status}` };
    if (typeof collection.totalItems !== "number") {
      return { collection, pages, problem: "the outbox has no totalItems" };
    }
    let next = idOf(collection.first);
    if (next == null) return { collection, pages, problem: "the outbox has no first page" };
    const seen = new Set<string>();
    while (next != null && pages.length < MAX_PAGES && !seen.has(next)) {
      seen.add(next);
      const page = await getJson(next);
      const json = (page.json ?? {}) as Record<string, unknown>;
      if (page.status !== 200) return { collection, pages, problem: `GET ${next}: ${page.status}` };
      const type = [json.type].flat();
      if (!type.includes("OrderedCollectionPage")) {
        return {
          collection,
          pages,
          problem: `page ${next} is a ${String(json.type)}, not an OrderedCollectionPage`,
        };
      }
      if (!Array.isArray(json.orderedItems)) {
        return { collection, pages, problem: `page ${next} has no orderedItems` };
      }
      const items = json.orderedItems as unknown[];
      const notEmbedded = items.find((i) => i == null || typeof i !== "object");
      if (notEmbedded !== undefined) {
        return {
          collection,
          pages,
          problem: `page ${next} lists ${JSON.stringify(notEmbedded)} by reference; activities must be embedded in full`,
        };
      }
      pages.push(items as Record<string, unknown>[]);
      next = idOf(json.next);
    }
    return { collection, pages };
  });
}

export const outboxChecks: Check[] = [
  {
    id: "OUT-01",
    area: "outbox",
    level: "MUST",
    requirements: ["TW-COLL-1", "TW-COLL-3"],
    title:
      "the outbox has totalItems and a first page of embedded activities that includes the delivered TaskCompleted",
    needs: ["complete-task"],
    async run(ctx) {
      const read = await readOutbox(ctx);
      if (read.problem != null) return fail(read.problem);
      const p = await ctx.published();
      const delivered = p.completed != null ? jsonOf(p.completed)?.id : undefined;
      if (typeof delivered !== "string") {
        throw new NotObservable("no TaskCompleted was delivered to look for (PUB-01)");
      }
      const found = read.pages.flat().find((i) => i.id === delivered);
      if (found == null) {
        return fail(
          `${delivered} is not in the first ${read.pages.length} page(s) of the outbox (${read.pages.flat().length} items)`,
        );
      }
      return found.actor === ctx.actorId
        ? pass()
        : fail(`its actor is ${String(found.actor)}, not the outbox's owner ${ctx.actorId}`);
    },
  },
  {
    id: "OUT-02",
    area: "outbox",
    level: "MUST",
    requirements: ["TW-COLL-1"],
    title: "outbox pages list activities newest first, and next leads to older ones",
    needs: ["complete-task"],
    async run(ctx) {
      const read = await readOutbox(ctx);
      if (read.problem != null) return fail(read.problem);
      const items = read.pages.flat();
      if (items.length < 2) throw new NotObservable("the outbox holds fewer than two activities");
      let previous: { id: string; at: number } | undefined;
      for (const item of items) {
        const at = Date.parse(String(item.published));
        if (Number.isNaN(at)) return fail(`${String(item.id)} has no published date-time`);
        if (previous != null && at > previous.at) {
          return fail(
            `${String(item.id)} (${String(item.published)}) is newer than ${previous.id}, listed before it`,
          );
        }
        previous = { id: String(item.id), at };
      }
      return pass(`${items.length} activities on ${read.pages.length} page(s)`);
    },
  },
  {
    id: "OUT-03",
    area: "outbox",
    level: "MUST",
    requirements: ["TW-DEREF-3", "TW-COLL-3"],
    title: "every activity on the first outbox page is by the owner and dereferences to itself",
    needs: ["complete-task"],
    async run(ctx) {
      const read = await readOutbox(ctx);
      if (read.problem != null) return fail(read.problem);
      const items = (read.pages[0] ?? []).slice(0, 10);
      if (items.length === 0) throw new NotObservable("the first outbox page is empty");
      for (const item of items) {
        if (item.actor !== ctx.actorId) {
          return fail(`${String(item.id)} has actor ${String(item.actor)}, not ${ctx.actorId}`);
        }
        if (typeof item.id !== "string") return fail("an outbox activity has no id");
        const got = await getJson(item.id);
        const doc = got.json as { id?: unknown } | undefined;
        if (got.status !== 200 || doc?.id !== item.id) {
          return fail(`GET ${item.id}: ${got.status}, id ${String(doc?.id)}`);
        }
      }
      return pass();
    },
  },
];
