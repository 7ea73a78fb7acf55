/**
 * Relaying with provenance end to end: publisher A, aggregator M (follows and relays A) and
 * follower F (follows M only). F acts on A's activities only when A's own proof verifies
 * and A serves the activity at its id; a forged relay changes nothing on F.
 */
import { createPrivateKey, randomUUID } from "node:crypto";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addProof, buildArtifactPublished } from "../../protocol/index.ts";
import type { RunningCluster } from "../../server/cluster.ts";
import { testBackends } from "../support/backends.ts";
import {
  follow,
  snapshot,
  waitForDeliveries,
  startTestCluster,
  TEST_TOKEN,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";
import { clusterRsaKey, signedPost, type SigningKey } from "../support/signing.ts";

/** Everything a relayed activity could change on a follower. */
async function everything(F: RunningCluster) {
  return {
    ...(await snapshot(F)),
    relayed: await F.database.db.selectFrom("relayed_activities").selectAll().execute(),
  };
}

// The embedded backend only: these paths share the inbox and queue code that the hooks and
// two-clusters suites run on PostgreSQL + Redis too, and CI time is shared.
const backend = testBackends()[0]!;

describe(`relays with provenance on ${backend.name}`, () => {
  let a: TestCluster;
  let m: TestCluster;
  let f: TestCluster;
  let A: RunningCluster;
  let M: RunningCluster;
  let F: RunningCluster;
  let mKey: SigningKey;
  let aKey: SigningKey;

  beforeAll(async () => {
    [a, m, f] = await Promise.all([
      startTestCluster(backend, "a"),
      startTestCluster(backend, "m"),
      startTestCluster(backend, "f"),
    ]);
    A = a.current();
    M = m.current();
    F = f.current();
    await follow(M, A);
    await follow(F, M);
    const response = await fetch(`${M.urls.origin}/api/v1/relays`, {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ cluster: A.urls.actor }),
    });
    expect(response.status).toBe(201);
    mKey = await clusterRsaKey(M);
    aKey = await clusterRsaKey(A);
  });
  afterAll(async () => {
    await Promise.all([a?.destroy(), m?.destroy(), f?.destroy()]);
  });

  it("lets F act on A's activities relayed by M, after checking A's proof and publication", async () => {
    await F.tasks.createTask({
      taskId: "aggregate",
      inputs: [{ task: A.urls.task("dataset"), artifact: "public/data.csv", path: "data.csv" }],
      payload: { command: ["sh", "-c", 'test "$(cat "$TASKWEB_INPUTS/data.csv")" = "1,2,3"'] },
    });
    await A.tasks.createTask({
      taskId: "dataset",
      payload: {
        command: [
          "sh",
          "-c",
          'mkdir -p "$TASKWEB_ARTIFACTS/public" && printf 1,2,3 > "$TASKWEB_ARTIFACTS/public/data.csv"',
        ],
      },
    });
    expect(await waitForResolution(F, "aggregate")).toBe("completed");
    const relayed = await F.database.db
      .selectFrom("relayed_activities")
      .selectAll()
      .orderBy("activity_id")
      .execute();
    expect(relayed.length).toBeGreaterThanOrEqual(2);
    for (const r of relayed) {
      expect(r).toMatchObject({ relayed_by: M.urls.actor, original_actor: A.urls.actor });
      expect(r.activity).toMatchObject({
        actor: A.urls.actor,
        proof: { cryptosuite: "eddsa-jcs-2022" },
      });
    }
    const artifact = await F.database.db
      .selectFrom("remote_artifacts")
      .selectAll()
      .where("artifact_url", "=", A.urls.artifact("dataset", "public/data.csv"))
      .executeTakeFirstOrThrow();
    const original = await A.database.db
      .selectFrom("artifacts")
      .select("sha256")
      .where("task_id", "=", "dataset")
      .executeTakeFirstOrThrow();
    expect(artifact).toMatchObject({ actor_id: A.urls.actor, sha256: original.sha256 });
    // F never followed A.
    expect(await F.database.db.selectFrom("following").select("actor_id").execute()).toEqual([
      { actor_id: M.urls.actor },
    ]);
  });

  /** An Announce from M embedding `original`, signed over HTTP by M's key. */
  async function relay(original: Record<string, unknown>) {
    // What A published and M relayed earlier has all arrived: only this Announce may change F.
    await waitForDeliveries([A, M]);
    const before = await everything(F);
    const refusedBefore = f.events.filter(
      (e) => e.type === "inbox" && e.outcome.outcome === "ignored",
    ).length;
    const sent = await signedPost(
      F.urls.inbox,
      {
        "@context": "https://www.w3.org/ns/activitystreams",
        id: M.urls.activity(randomUUID()),
        type: "Announce",
        actor: M.urls.actor,
        to: [M.urls.followers],
        object: original,
      },
      { key: mKey },
    );
    expect(sent.status).toBe(202);
    const outcome = await waitFor("F to refuse the relay", () => {
      const ignored = f.events.filter((e) => e.type === "inbox" && e.outcome.outcome === "ignored");
      return ignored.length > refusedBefore ? ignored.at(-1) : undefined;
    });
    expect(await everything(F)).toEqual(before);
    return outcome;
  }

  it("refuses a relayed activity whose proof does not verify", async () => {
    const stored = await F.database.db
      .selectFrom("relayed_activities")
      .select("activity")
      .execute();
    const genuine = stored.find((s) =>
      JSON.stringify(s.activity.type).includes("ArtifactPublished"),
    );
    expect(genuine).toBeDefined();
    // Same activity, another digest: A's proof no longer matches it.
    const text = JSON.stringify(genuine!.activity);
    const digest = /[0-9a-f]{64}/.exec(text)![0];
    const tampered = JSON.parse(text.replaceAll(digest, "b".repeat(64))) as Record<string, unknown>;
    expect(await relay(tampered)).toMatchObject({ outcome: { reason: "relay-refused" } });
    expect(JSON.stringify(f.events.at(-1))).toContain("proof-invalid");
  });

  /** A's Ed25519 key and the assertion method naming it, to sign as A does. */
  async function aProofKey() {
    const actor = (await (
      await fetch(A.urls.actor, { headers: { accept: "application/activity+json" } })
    ).json()) as { assertionMethod: { id: string; publicKeyMultibase: string }[] };
    // The Ed25519 key (its multibase starts z6Mk); the other assertion method is RSA.
    const method = [actor.assertionMethod]
      .flat()
      .find((m) => m.publicKeyMultibase.startsWith("z6Mk"))!.id;
    const row = await A.database.db
      .selectFrom("cluster_keys")
      .select("private_jwk")
      .where("algorithm", "=", "Ed25519")
      .executeTakeFirstOrThrow();
    return { method, key: createPrivateKey({ key: row.private_jwk as never, format: "jwk" }) };
  }

  /** `activity` with taskweb's and the Data Integrity contexts and a proof by A's key. */
  async function signedByA(activity: Record<string, unknown>) {
    const { key, method } = await aProofKey();
    return addProof(
      {
        ...activity,
        "@context": [
          "https://www.w3.org/ns/activitystreams",
          "https://w3id.org/security/data-integrity/v1",
          (activity["@context"] as unknown[])[1],
        ],
      },
      key,
      method,
    );
  }

  it("relays an activity M first read from A's outbox once A's signed delivery arrives", async () => {
    // M refuses A's deliveries for a while and reads A's outbox instead (no proofs there).
    await M.followPolicy.add("block", A.urls.actor);
    await A.tasks.createTask({ taskId: "late", payload: { command: ["true"] } });
    expect(await waitForResolution(A, "late")).toBe("completed");
    const completed = await waitFor("A's TaskCompleted", async () =>
      A.database.db
        .selectFrom("outbox")
        .select(["activity_id", "activity"])
        .where(sql<boolean>`activity->'object'->>'id' = ${A.urls.task("late")}`)
        .where(sql<boolean>`types::text like '%TaskCompleted%'`)
        .executeTakeFirst(),
    );
    const announces = async () =>
      await M.database.db
        .selectFrom("outbox")
        .select("activity_id")
        .where(sql<boolean>`activity->'object'->>'id' = ${completed.activity_id}`)
        .execute();
    await M.reconcile();
    await waitFor("M to apply it from A's outbox", async () =>
      M.database.db
        .selectFrom("inbox_processed")
        .select("activity_id")
        .where("activity_id", "=", completed.activity_id)
        .executeTakeFirst(),
    );
    expect(await announces()).toEqual([]);

    await M.followPolicy.remove("block", A.urls.actor);
    // A's delivery, signed and with A's proof (A's own retry may come too: a duplicate).
    const sent = await signedPost(M.urls.inbox, await signedByA(completed.activity), {
      key: aKey,
    });
    expect(sent.status).toBe(202);
    const relayed = await waitFor("F to act on the relayed TaskCompleted", async () =>
      F.database.db
        .selectFrom("relayed_activities")
        .selectAll()
        .where("activity_id", "=", completed.activity_id)
        .executeTakeFirst(),
    );
    expect(relayed).toMatchObject({ relayed_by: M.urls.actor, original_actor: A.urls.actor });
    expect(await announces()).toHaveLength(1);
  });

  it("refuses a relayed activity A signed but never published", async () => {
    const { key, method } = await aProofKey();
    const unpublished = buildArtifactPublished({
      id: A.urls.activity(randomUUID()),
      actor: A.urls.actor,
      published: new Date(),
      to: [A.urls.followers],
      artifact: {
        id: A.urls.artifact("dataset", "public/other.csv"),
        attributedTo: A.urls.actor,
        name: "public/other.csv",
        task: A.urls.task("dataset"),
        url: A.urls.artifactContent("dataset", "public/other.csv"),
        mediaType: "text/csv",
        size: 5,
        sha256: "c".repeat(64),
        expires: new Date(Date.now() + 86_400_000),
      },
    }) as unknown as Record<string, unknown>;
    const signed = addProof(
      {
        ...unpublished,
        "@context": [
          "https://www.w3.org/ns/activitystreams",
          "https://w3id.org/security/data-integrity/v1",
          (unpublished["@context"] as unknown[])[1],
        ],
      },
      key,
      method,
    );
    expect(await relay(signed)).toMatchObject({ outcome: { reason: "relay-refused" } });
    expect(JSON.stringify(f.events.at(-1))).toContain("not-published");
  });
});
