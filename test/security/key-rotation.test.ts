/**
 * Key rotation between real clusters: A rotates its keys (REST, as `taskweb keys rotate`
 * does), its followers get an `Update`, and its next deliveries to B verify: B fetches A's
 * key again once per verifying cache, and a flood of bad signatures under A's key id
 * afterwards makes B fetch nothing more (the refetch limit).
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import type { RunningCluster } from "../../server/cluster.ts";
import { describeEachBackend } from "../support/backends.ts";
import {
  follow,
  startTestCluster,
  TEST_TOKEN,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";
import { expectNothingChanges, taskCompleted } from "../support/inbox-input.ts";
import { clusterRsaKey, signedPost } from "../support/signing.ts";

describeEachBackend("key rotation", (backend) => {
  let a: TestCluster;
  let b: TestCluster;
  let A: RunningCluster;
  let B: RunningCluster;

  beforeAll(async () => {
    [a, b] = await Promise.all([startTestCluster(backend, "a"), startTestCluster(backend, "b")]);
    A = a.current();
    B = b.current();
    await follow(B, A);
  });
  afterAll(async () => {
    await Promise.all([a?.destroy(), b?.destroy()]);
  });

  /** A runs `taskId`; B's task waiting on it must complete. */
  async function deliveredThrough(taskId: string): Promise<void> {
    await B.tasks.createTask({
      taskId: `waits-${taskId}`,
      dependencies: [A.urls.task(taskId)],
      payload: { command: ["true"] },
    });
    await A.tasks.createTask({ taskId, payload: { command: ["true"] } });
    expect(await waitForResolution(A, taskId)).toBe("completed");
    expect(await waitForResolution(B, `waits-${taskId}`)).toBe("completed");
  }

  const actorDoc = async () =>
    (await (
      await fetch(A.urls.actor, { headers: { accept: "application/activity+json" } })
    ).json()) as { publicKey: unknown };

  it("keeps deliveries working after the sender rotates its keys", async () => {
    await deliveredThrough("before");
    const oldKey = await clusterRsaKey(A);
    const before = await actorDoc();

    const rotationStarted = new Date();
    const response = await fetch(`${A.urls.origin}/api/v1/keys/rotate`, {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_TOKEN}` },
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { keyIds: string[]; replacedKeys: number };
    expect(body.keyIds).toEqual([`${A.urls.actor}#main-key`, `${A.urls.actor}#key-2`]);
    expect(body.replacedKeys).toBe(2);

    // The new RSA key is first; the replaced one is still published beside it.
    const after = await actorDoc();
    const keys = [after.publicKey].flat() as { id: string; publicKeyPem: string }[];
    const previous = [before.publicKey].flat() as { id: string; publicKeyPem: string }[];
    expect(keys).toHaveLength(2);
    expect(keys[0]!.publicKeyPem).not.toBe(previous[0]!.publicKeyPem);
    expect(keys[1]!.publicKeyPem).toBe(previous[0]!.publicKeyPem);

    // Fetches of A's keys (the actor document by key id), not of A's tasks.
    const fetchesOfA = () => b.outbound.filter((url) => url.startsWith(`${A.urls.actor}#`)).length;
    const fetchedIndex = b.outbound.length;
    await deliveredThrough("after");
    // Bounded per key id (RSA for the HTTP signature, Ed25519 for the proof): once by the
    // inbox guard's limiter, and by the ActivityPub library's verifier at most once per
    // request that raced the rotation: the actor's Update and the activities of "after"
    // (all sent from the delivery table), which may arrive together.
    const refetches = b.outbound
      .slice(fetchedIndex)
      .filter((u) => u.startsWith(`${A.urls.actor}#`));
    const sentSince = await A.database.db
      .selectFrom("deliveries")
      .select("activity_id")
      .where("delivered_at", ">=", rotationStarted)
      .execute();
    expect(sentSince.some((d) => d.activity_id.includes("#updates/"))).toBe(true);
    expect(refetches.length).toBeGreaterThanOrEqual(1);
    for (const id of new Set(refetches)) {
      expect(refetches.filter((u) => u === id).length).toBeLessThanOrEqual(1 + sentSince.length);
    }

    // A forger still holding the replaced key: its signatures fail, and B does not fetch
    // A's key again for each of them.
    // Every activity A published has reached B (one may have been retried: it raced the
    // rotation), and B's own outbox is done.
    await waitFor("A's deliveries and B's outbox to settle", async () => {
      const published = await A.database.db.selectFrom("outbox").select("activity_id").execute();
      const processed = await B.database.db
        .selectFrom("inbox_processed")
        .select("activity_id")
        .execute();
      const seen = new Set(processed.map((r) => r.activity_id));
      const rows = await B.database.db.selectFrom("outbox").select("fanned_out_at").execute();
      const pending = (
        await A.database.db
          .selectFrom("deliveries")
          .select("activity_id")
          .where("delivered_at", "is", null)
          .where("abandoned_at", "is", null)
          .execute()
      ).length;
      return published.every((r) => seen.has(r.activity_id)) &&
        rows.every((r) => r.fanned_out_at != null) &&
        pending === 0
        ? true
        : undefined;
    });
    await new Promise((r) => setTimeout(r, 500));
    const flood = fetchesOfA();
    for (let i = 0; i < 5; i++) {
      await expectNothingChanges(
        b,
        () =>
          signedPost(B.urls.inbox, taskCompleted(A, A.urls.task(`forged-${i}`)), { key: oldKey }),
        401,
        // The key fetched at the rotation (from memory within the interval) proves the
        // signature bad; a failed refetch would refuse it as unfetchable.
        /^(invalid-signature|key-fetch-failed)$/,
        { allowOutbound: (url) => url.startsWith(`${A.urls.actor}#`) },
      );
    }
    // A key is fetched again at most once per interval after its first fetch: five forged
    // requests cause at most two fetches, however they interleave with the rotation's.
    expect(fetchesOfA() - flood).toBeLessThanOrEqual(2);
  });
});
