/**
 * Catch-up trusts a followee's outbox because it is read from the followee's own origin.
 * A stand-in followee on loopback serves its actor, outbox and pages; a second origin serves
 * pages and items that look like the followee's. Items of another origin in the followee's
 * outbox are refused one by one, with the inbox's reason, and the rest applied; an outbox
 * page on another origin, or redirected to one, stops the catch-up before anything is
 * applied. Each refusal is logged with its reason. An item that appears behind the last one
 * seen (its transaction committed late) is applied on the next catch-up.
 */
import { randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { configure, reset, type LogRecord } from "@logtape/logtape";
import { afterAll, beforeAll, expect, it } from "vitest";
import { CONTEXT } from "../../protocol/index.ts";
import type { RunningCluster } from "../../server/cluster.ts";
import { createActivityApplier, type InboxOutcome } from "../../server/federation/inbox.ts";
import {
  CATCH_UP_OVERLAP_MS,
  CATCH_UP_QUEUE,
  CatchUpError,
  catchUpOutbox,
} from "../../server/federation/outbox-catch-up.ts";
import { parseAllowlist } from "../../server/outbound/address-policy.ts";
import { createOutboundFetch } from "../../server/outbound/checked-fetch.ts";
import { createCheckedDocumentLoader } from "../../server/outbound/document-loader.ts";
import { describeEachBackend } from "../support/backends.ts";
import { startTestCluster, type TestCluster } from "../support/clusters.ts";
import { completionBy } from "../support/inbox-input.ts";

type Document = Record<string, unknown>;

/** A loopback origin serving the documents put in `docs` (path → body, or a redirect). */
async function startOrigin(): Promise<{
  server: Server;
  origin: string;
  docs: Map<string, Document | { redirect: string }>;
  hits: string[];
}> {
  const docs = new Map<string, Document | { redirect: string }>();
  const hits: string[] = [];
  const server = createServer((req, res) => {
    hits.push(req.url ?? "");
    const doc = docs.get(req.url ?? "");
    if (doc == null) {
      res.writeHead(404).end();
    } else if ("redirect" in doc && typeof doc.redirect === "string") {
      res.writeHead(302, { location: doc.redirect }).end();
    } else {
      res.writeHead(200, { "content-type": "application/activity+json" });
      res.end(JSON.stringify(doc));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { server, origin, docs, hits };
}

describeEachBackend("catch-up across origins", (backend) => {
  let b: TestCluster;
  let B: RunningCluster;
  let followee: Awaited<ReturnType<typeof startOrigin>>;
  let foreign: Awaited<ReturnType<typeof startOrigin>>;
  const logs: LogRecord[] = [];
  const outcomes: InboxOutcome[] = [];

  beforeAll(async () => {
    await configure({
      reset: true,
      sinks: { memory: (record) => logs.push(record) },
      loggers: [
        { category: ["taskweb"], sinks: ["memory"], lowestLevel: "info" },
        { category: ["logtape", "meta"], sinks: [], lowestLevel: "warning" },
      ],
    });
    [followee, foreign] = await Promise.all([startOrigin(), startOrigin()]);
    b = await startTestCluster(backend, "reader");
    B = b.current();
  });
  afterAll(async () => {
    await b?.destroy();
    for (const o of [followee, foreign]) {
      o?.server.closeAllConnections();
      await new Promise((r) => o?.server.close(r));
    }
    await reset();
  });

  /** A TaskCompleted as the followee (or `actor`) would publish it, with ids on `origin`. */
  const completion = (origin: string, actor: string, taskOrigin = origin) =>
    completionBy(
      actor,
      `${taskOrigin}/clusters/x/tasks/${randomUUID()}`,
      `${origin}/activities/${randomUUID()}`,
    ) as unknown as Document;

  /**
   * Publishes an actor `name` on the followee's origin whose outbox's first page is `first`
   * (a URL), and makes B follow it.
   */
  const followeeWith = async (name: string, first: string): Promise<string> => {
    const actor = `${followee.origin}/actors/${name}`;
    followee.docs.set(`/actors/${name}`, {
      "@context": CONTEXT,
      id: actor,
      type: "Service",
      inbox: `${actor}/inbox`,
      outbox: `${actor}/outbox`,
    });
    followee.docs.set(`/actors/${name}/outbox`, {
      "@context": CONTEXT,
      id: `${actor}/outbox`,
      type: "OrderedCollection",
      first,
    });
    await B.database.db
      .insertInto("following")
      .values({
        actor_id: actor,
        inbox: `${actor}/inbox`,
        shared_inbox: null,
        follow_id: `${B.urls.actor}#follows/${randomUUID()}`,
        state: "accepted",
        updated_at: new Date(),
      })
      .execute();
    return actor;
  };
  const page = (id: string, items: Document[], next?: string): Document => ({
    "@context": CONTEXT,
    id,
    type: "OrderedCollectionPage",
    orderedItems: items,
    ...(next != null ? { next } : {}),
  });

  const catchUp = async (actor: string) => {
    const fetch = createOutboundFetch({ allowlist: parseAllowlist(["127.0.0.1/32"]) });
    return await catchUpOutbox(actor, {
      db: B.database.db,
      loaders: {
        documentLoader: createCheckedDocumentLoader(fetch),
        contextLoader: createCheckedDocumentLoader(fetch, { acceptPlainJson: true }),
      },
      // The cluster's own applier: the inbox's checks, transaction and dedupe.
      apply: createActivityApplier({
        db: B.database.db,
        tasks: B.tasks,
        onOutcome: (o) => outcomes.push(o),
      }),
    });
  };
  const processed = async () =>
    (await B.database.db.selectFrom("inbox_processed").select("activity_id").execute())
      .map((r) => r.activity_id)
      .sort();
  const seen = async (actor: string) =>
    (
      await B.database.db
        .selectFrom("following")
        .select("outbox_seen")
        .where("actor_id", "=", actor)
        .executeTakeFirstOrThrow()
    ).outbox_seen;
  const messages = (since: number) =>
    logs.slice(since).map((r) => r.message.map((part) => String(part)).join(""));

  it("refuses items of another origin in the followee's outbox and applies the rest", async () => {
    const actor = await followeeWith("mixed", `${followee.origin}/actors/mixed/page`);
    const genuine = completion(followee.origin, actor);
    const byAnother = completion(foreign.origin, `${foreign.origin}/actors/mixed`);
    const idElsewhere = completion(foreign.origin, actor);
    const taskElsewhere = completion(followee.origin, actor, foreign.origin);
    followee.docs.set(
      "/actors/mixed/page",
      page(`${actor}/page`, [taskElsewhere, idElsewhere, byAnother, genuine]),
    );
    const before = await processed();
    const logged = logs.length;
    outcomes.length = 0;

    const result = await catchUp(actor);

    expect(result).toEqual({ read: 4, applied: 1, refused: 3 });
    expect(await processed()).toEqual([...before, String(genuine.id)].sort());
    expect(
      outcomes.map((o) => (o.outcome === "applied" ? o.activityId : `${o.reason} ${o.detail}`)),
    ).toEqual([
      String(genuine.id),
      `actor-mismatch ${String(byAnother.id)}`,
      expect.stringMatching(/^invalid origin-mismatch: /),
      expect.stringMatching(/^invalid origin-mismatch: /),
    ]);
    const ignored = logs
      .slice(logged)
      .filter((r) => String(r.message[0]).startsWith("Ignored an activity"));
    expect(ignored.map((r) => r.properties.reason)).toEqual([
      "actor-mismatch",
      "invalid",
      "invalid",
    ]);
    expect(messages(logged)).toContainEqual(expect.stringMatching(/: 1 applied, 3 refused\.$/));
    expect(foreign.hits).toEqual([]);
  });

  it("refuses an outbox page on another origin, or redirected to one, before applying anything", async () => {
    // Each page holds an item that would pass every check were the page the followee's.
    const lure = (actor: string, path: string) => {
      const item = completion(followee.origin, actor);
      foreign.docs.set(path, page(`${foreign.origin}${path}`, [item]));
      return item;
    };
    const cases: { actor: string; because: RegExp; lured: Document }[] = [];

    const direct = await followeeWith("direct", `${foreign.origin}/pages/direct`);
    cases.push({
      actor: direct,
      lured: lure(direct, "/pages/direct"),
      because: /is not on .*'s origin; not read/,
    });

    const redirected = await followeeWith("redirected", `${followee.origin}/actors/redirected/p`);
    followee.docs.set("/actors/redirected/p", { redirect: `${foreign.origin}/pages/redirected` });
    cases.push({
      actor: redirected,
      lured: lure(redirected, "/pages/redirected"),
      because: /was served from http:\/\/127\.0\.0\.1:\d+\/pages\/redirected; not read/,
    });

    const onward = await followeeWith("onward", `${followee.origin}/actors/onward/p1`);
    const onFirstPage = completion(followee.origin, onward);
    followee.docs.set(
      "/actors/onward/p1",
      page(`${onward}/p1`, [onFirstPage], `${foreign.origin}/pages/onward`),
    );
    cases.push({
      actor: onward,
      lured: lure(onward, "/pages/onward"),
      because: /is not on .*'s origin; not read/,
    });

    for (const { actor, lured, because } of cases) {
      const before = await processed();
      outcomes.length = 0;
      const error = await catchUp(actor).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(CatchUpError);
      expect((error as Error).message).toMatch(because);
      // Nothing applied, not even the followee's own first page, and nothing marked seen.
      expect(await processed()).toEqual(before);
      expect(outcomes).toEqual([]);
      expect(await seen(actor)).toBeNull();
      expect(before).not.toContain(String(lured.id));
    }
    expect(await processed()).not.toContain(String(onFirstPage.id));
    // Only the redirect reached the other origin; the pages it names directly were not read.
    expect(foreign.hits).toEqual(["/pages/redirected"]);
  });

  it("applies an item that appeared behind the last one seen, and reads no further back than the overlap", async () => {
    const actor = await followeeWith("late", `${followee.origin}/actors/late/page`);
    const publishedAt = (ms: number): Document => ({
      ...completion(followee.origin, actor),
      published: new Date(ms).toISOString(),
    });
    const now = Date.now();
    const b1 = publishedAt(now);
    followee.docs.set("/actors/late/page", page(`${actor}/page`, [b1]));
    expect(await catchUp(actor)).toEqual({ read: 1, applied: 1, refused: 0 });
    expect(await seen(actor)).toBe(String(b1.id));

    // The followee's outbox now shows a newer item, and behind the one B saw, one whose
    // transaction committed late (published a second before it), and one from long before
    // the overlap that B never processed.
    const newer = publishedAt(now + 1000);
    const late = publishedAt(now - 1000);
    const old = publishedAt(now - CATCH_UP_OVERLAP_MS - 60_000);
    followee.docs.set("/actors/late/page", page(`${actor}/page`, [newer, b1, late, old]));
    const before = await processed();

    expect(await catchUp(actor)).toEqual({ read: 2, applied: 2, refused: 0 });
    expect(await processed()).toEqual([...before, String(newer.id), String(late.id)].sort());
    expect(await processed()).not.toContain(String(old.id));
    expect(await seen(actor)).toBe(String(newer.id));

    // Read again: the overlap finds nothing new.
    expect(await catchUp(actor)).toEqual({ read: 0, applied: 0, refused: 0 });
  });

  it("logs why the cluster's own catch-up job stopped", async () => {
    const actor = await followeeWith("queued", `${foreign.origin}/pages/queued`);
    const logged = logs.length;
    await B.jobs.enqueue(CATCH_UP_QUEUE, actor, { actorId: actor }, { attempts: 1 });
    const deadline = Date.now() + 30_000;
    let line: string | undefined;
    while (line == null && Date.now() < deadline) {
      line = messages(logged).find((l) => l.startsWith("Catch-up on"));
      if (line == null) await new Promise((r) => setTimeout(r, 50));
    }
    expect(line).toMatch(/failed: .*CatchUpError: .*is not on .*'s origin; not read/);
    expect(await seen(actor)).toBeNull();
  });
});
