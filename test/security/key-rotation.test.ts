/**
 * Key rotation between real clusters: A rotates its keys (REST, as `taskweb keys rotate`
 * does), its followers get an `Update`, and its next deliveries to B verify. Every key keeps
 * its id for life: the new keys get new ids, the replaced ones stay published under theirs
 * for the grace period, so a request signed before the rotation still verifies at a cluster
 * that never saw A's keys. A flood of bad signatures under A's new key id makes B fetch
 * nothing more (the refetch limit).
 */
import { signRequest } from "@fedify/fedify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadOrCreateKeyPairs, rotateKeyPairs } from "../../server/federation/key-store.ts";
import { openDatabase } from "../../server/store/database.ts";
import { migrateToLatest } from "../../server/store/migrate.ts";
import * as stableKeyIds from "../../server/store/migrations/0010-stable-key-ids.ts";
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
  let c: TestCluster;
  let A: RunningCluster;
  let B: RunningCluster;
  let C: RunningCluster;

  beforeAll(async () => {
    [a, b, c] = await Promise.all([
      startTestCluster(backend, "a"),
      startTestCluster(backend, "b"),
      startTestCluster(backend, "c"),
    ]);
    A = a.current();
    B = b.current();
    C = c.current();
    await follow(B, A);
  });
  afterAll(async () => {
    await Promise.all([a?.destroy(), b?.destroy(), c?.destroy()]);
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
    const idsOf = (doc: { publicKey: unknown }) =>
      ([doc.publicKey].flat() as { id: string }[]).map((k) => k.id);
    expect(idsOf(before)).toEqual([oldKey.keyId.href]);
    // Signed before the rotation, sent after it.
    const early = await signRequest(
      new Request(C.urls.inbox, {
        method: "POST",
        headers: { "content-type": "application/activity+json" },
        body: JSON.stringify(taskCompleted(A, A.urls.task("signed-before"))),
      }),
      oldKey.privateKey,
      oldKey.keyId,
      { spec: "rfc9421" },
    );

    // B's fetches of A's keys from the rotation on (the Update may arrive at once).
    const fetchedIndex = b.outbound.length;
    const rotationStarted = new Date();
    const response = await fetch(`${A.urls.origin}/api/v1/keys/rotate`, {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_TOKEN}` },
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { keyIds: string[]; replacedKeys: number };
    expect(body.replacedKeys).toBe(2);
    const newKey = await clusterRsaKey(A);
    expect(body.keyIds).toHaveLength(2);
    expect(body.keyIds[0]).toBe(newKey.keyId.href);
    expect(body.keyIds).not.toContain(oldKey.keyId.href);

    // The new RSA key is first under a new id; the replaced one is still published beside
    // it, under the id it always had.
    const after = await actorDoc();
    const keys = [after.publicKey].flat() as { id: string; publicKeyPem: string }[];
    const previous = [before.publicKey].flat() as { id: string; publicKeyPem: string }[];
    expect(keys.map((k) => k.id)).toEqual([newKey.keyId.href, oldKey.keyId.href]);
    expect(keys[0]!.publicKeyPem).not.toBe(previous[0]!.publicKeyPem);
    expect(keys[1]!.publicKeyPem).toBe(previous[0]!.publicKeyPem);
    // The Ed25519 keys too: the replaced one keeps its id, the new one has a new id.
    const methods = (doc: unknown) =>
      ([(doc as { assertionMethod: unknown }).assertionMethod].flat() as { id: string }[]).map(
        (m) => m.id,
      );
    const oldMethods = methods(before);
    expect(methods(after)).toEqual(expect.arrayContaining(oldMethods));
    expect(methods(after)).toContain(body.keyIds[1]);
    expect(oldMethods).not.toContain(body.keyIds[1]);

    // C never saw A's keys: it fetches the key the early request names, the replaced one, and
    // the signature verifies (202; a failed one would be 401).
    const verifiedAtC = await fetch(early);
    expect(verifiedAtC.status).toBe(202);
    expect(c.outbound).toContain(oldKey.keyId.href);

    // Fetches of A's keys (the actor document by key id), not of A's tasks.
    const fetchesOfA = () => b.outbound.filter((url) => url.startsWith(`${A.urls.actor}#`)).length;
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
    // The new keys have new ids, which B fetches when it first meets them.
    expect(refetches).toContain(body.keyIds[0]);
    for (const id of new Set(refetches)) {
      expect(refetches.filter((u) => u === id).length).toBeLessThanOrEqual(1 + sentSince.length);
    }

    // A forger holding the replaced key signs under the new key's id: its signatures fail,
    // and B does not fetch A's key again for each of them.
    const forged = { keyId: newKey.keyId, privateKey: oldKey.privateKey };
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
          signedPost(B.urls.inbox, taskCompleted(A, A.urls.task(`forged-${i}`)), { key: forged }),
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

describe("stable key ids", () => {
  it("gives each key an id of its own, and keeps the ids the keys in use before had", async () => {
    const database = await openDatabase({});
    try {
      await migrateToLatest(database.db);
      const first = await loadOrCreateKeyPairs(database.db, "x");
      expect(first.map((p) => p.fragment)).toEqual([
        expect.stringMatching(/^key-\d+$/),
        expect.stringMatching(/^key-\d+$/),
      ]);
      await rotateKeyPairs(database.db, "x");
      const rotated = await loadOrCreateKeyPairs(database.db, "x", 86_400_000);
      // The replaced keys are listed after the new ones, under the ids they had.
      expect(rotated.map((p) => [p.fragment, p.active])).toEqual([
        [
          expect.not.stringMatching(new RegExp(`^(${first.map((p) => p.fragment).join("|")})$`)),
          true,
        ],
        [expect.any(String), true],
        [first[0]!.fragment, false],
        [first[1]!.fragment, false],
      ]);

      // A database from before ids were stable: its active keys keep the ids Fedify gave
      // them by position, the replaced ones get their own.
      await stableKeyIds.down(database.db as never);
      await stableKeyIds.up(database.db as never);
      const upgraded = await loadOrCreateKeyPairs(database.db, "x", 86_400_000);
      expect(upgraded.map((p) => p.fragment)).toEqual([
        "main-key",
        "multikey-2",
        first[0]!.fragment,
        first[1]!.fragment,
      ]);
    } finally {
      await database.close();
    }
  });
});
