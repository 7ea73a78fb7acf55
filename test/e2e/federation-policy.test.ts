/**
 * The federation policy between two real clusters on loopback: in `approval` mode a Follow
 * stays pending until an administrator approves it (`taskweb followers approve`); a
 * rejected follower leaves nothing behind; a blocked cluster's Follow is answered with a
 * Reject, and its activities are refused and change nothing — a task waiting on the blocked
 * cluster's task stays waiting after that task completes. A private artifact is served only
 * to a signed GET from an accepted follower (authorized fetch); a follower's task with such an
 * artifact as input runs on its exact bytes (the worker fetches signed as its cluster), while
 * a cluster that does not follow the owner is refused and served none of them.
 */
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { createHash, randomBytes } from "node:crypto";
import type { Response as EResponse } from "express";
import { signRequest } from "@fedify/fedify";
import { testBackends } from "../support/backends.ts";
import { clusterRsaKey, signedPost } from "../support/signing.ts";
import { runTaskweb } from "../support/cli.ts";
import {
  follow,
  snapshot,
  startTestCluster,
  TEST_TOKEN,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";

describe("federation policy on embedded", () => {
  let a: TestCluster;
  let b: TestCluster;
  /** A cluster that follows no one. */
  let c: TestCluster;

  beforeAll(async () => {
    const [embedded] = testBackends();
    if (embedded == null) throw new Error("no embedded backend");
    [a, b, c] = await Promise.all([
      startTestCluster(embedded, "owner", { config: { followerAcceptance: "approval" } }),
      startTestCluster(embedded, "peer"),
      startTestCluster(embedded, "stranger"),
    ]);
    // The owner follows the peer (the peer accepts every follow).
    await follow(a.current(), b.current());
  });
  afterAll(async () => {
    await Promise.all([a?.destroy(), b?.destroy(), c?.destroy()]);
  });

  const followingState = async (from: TestCluster, to: TestCluster) =>
    (
      await from
        .current()
        .database.db.selectFrom("following")
        .select("state")
        .where("actor_id", "=", to.current().urls.actor)
        .executeTakeFirst()
    )?.state;
  const followerRow = async (at: TestCluster, of: TestCluster) =>
    await at
      .current()
      .database.db.selectFrom("followers")
      .selectAll()
      .where("actor_id", "=", of.current().urls.actor)
      .executeTakeFirst();
  const as = (cluster: TestCluster) => ({
    TASKWEB_URL: cluster.current().urls.origin,
    TASKWEB_TOKEN: TEST_TOKEN,
  });

  it("keeps a follow pending until approved, and a rejected follower leaves nothing", async () => {
    const A = a.current();
    const B = b.current();
    const actor = (await fetch(A.urls.actor, {
      headers: { accept: "application/activity+json" },
    }).then((r) => r.json())) as Record<string, unknown>;
    expect(actor.manuallyApprovesFollowers).toBe(true);

    await B.federation.follow(A.urls.actor);
    await waitFor("the owner to record the pending follow", async () =>
      (await followerRow(a, b))?.state === "pending" ? true : undefined,
    );
    // An Accept would have been sent with the Follow's answer: give it time to arrive anyway.
    await new Promise((r) => setTimeout(r, 1000));
    expect(await followingState(b, a)).toBe("pending");

    const pending = await runTaskweb(["followers", "--pending", "--json"], as(a));
    expect(pending.code).toBe(0);
    expect(
      (JSON.parse(pending.stdout) as { followers: { actor_id: string }[] }).followers.map(
        (f) => f.actor_id,
      ),
    ).toEqual([B.urls.actor]);

    const approved = await runTaskweb(["followers", "approve", B.urls.actor], as(a));
    expect(approved.code).toBe(0);
    await waitFor("the peer to learn it was accepted", async () =>
      (await followingState(b, a)) === "accepted" ? true : undefined,
    );
    expect((await followerRow(a, b))?.state).toBe("accepted");

    const rejected = await runTaskweb(["followers", "reject", B.urls.actor], as(a));
    expect(rejected.code).toBe(0);
    expect(await followerRow(a, b)).toBeUndefined();
    await waitFor("the peer to learn it was rejected", async () =>
      (await followingState(b, a)) === "rejected" ? true : undefined,
    );
  }, 120_000);

  it("ignores a Follow that arrives after its own Undo", async () => {
    const B = b.current();
    const C = c.current();
    const key = await clusterRsaKey(C);
    const followOf = (id: string) => ({
      "@context": "https://www.w3.org/ns/activitystreams",
      id: `${C.urls.actor}#follows/${id}`,
      type: "Follow",
      actor: C.urls.actor,
      object: B.urls.actor,
    });
    const undoOf = (follow: { id: string }) => ({
      "@context": "https://www.w3.org/ns/activitystreams",
      id: `${C.urls.actor}#undo/${randomBytes(8).toString("hex")}`,
      type: "Undo",
      actor: C.urls.actor,
      object: follow.id,
    });
    const answersTo = async (followId: string) =>
      (await B.database.db.selectFrom("addressed_activities").select("activity").execute()).filter(
        (row) => JSON.stringify(row.activity).includes(followId),
      );
    // The follower sent a Follow and then its Undo; the Follow was retried and arrives last.
    const late = followOf(randomBytes(8).toString("hex"));
    expect((await signedPost(B.urls.inbox, undoOf(late), { key })).status).toBe(202);
    expect((await signedPost(B.urls.inbox, late, { key })).status).toBe(202);
    expect(await followerRow(b, c)).toBeUndefined();
    expect(await answersTo(late.id)).toEqual([]);

    // A Follow of its own is accepted as usual, and its Undo removes the follower.
    const fresh = followOf(randomBytes(8).toString("hex"));
    expect((await signedPost(B.urls.inbox, fresh, { key })).status).toBe(202);
    expect(await followerRow(b, c)).toMatchObject({ follow_id: fresh.id, state: "accepted" });
    expect(await answersTo(fresh.id)).toHaveLength(1);
    expect((await signedPost(B.urls.inbox, undoOf(fresh), { key })).status).toBe(202);
    expect(await followerRow(b, c)).toBeUndefined();
  });

  /** GETs `url` signed with the peer's key (or unsigned); returns status and text. */
  async function peerGet(
    url: string,
    signed: boolean,
    accept = "*/*",
  ): Promise<{ status: number; text: string }> {
    let request = new Request(url, { headers: { accept } });
    if (signed) {
      const key = await clusterRsaKey(b.current());
      request = await signRequest(request, key.privateKey, key.keyId, { spec: "rfc9421" });
    }
    const response = await fetch(request);
    return { status: response.status, text: await response.text() };
  }

  const REPORT = `report-${randomBytes(16).toString("hex")}`;

  it("serves a private artifact only to a signed GET from an accepted follower", async () => {
    const A = a.current();
    const B = b.current();
    await A.tasks.createTask({
      taskId: "report",
      payload: {
        command: [
          "sh",
          "-c",
          `mkdir -p "$TASKWEB_ARTIFACTS/private" "$TASKWEB_ARTIFACTS/public" && printf '%s' '${REPORT}' > "$TASKWEB_ARTIFACTS/private/report.txt" && printf 'hello' > "$TASKWEB_ARTIFACTS/public/readme.txt"`,
        ],
      },
    });
    expect(await waitForResolution(A, "report")).toBe("completed");
    const content = A.urls.artifactContent("report", "private/report.txt");
    const document = A.urls.artifact("report", "private/report.txt");

    // Public artifacts stay public.
    const readme = await peerGet(A.urls.artifactContent("report", "public/readme.txt"), false);
    expect(readme).toEqual({ status: 200, text: "hello" });
    // Unsigned: 401 and no bytes. Signed by a cluster that is not a follower: 403, no bytes.
    for (const url of [content, document]) {
      const unsigned = await peerGet(url, false);
      expect(unsigned.status).toBe(401);
      expect(unsigned.text).not.toContain(REPORT);
    }
    expect(await followerRow(a, b)).toBeUndefined();
    const stranger = await peerGet(content, true);
    expect(stranger.status).toBe(403);
    expect(stranger.text).not.toContain(REPORT);
    // The task's document lists the public artifact to everyone, and nothing of the private
    // one (name, size, digest) to an unsigned GET or to a signed one by a non-follower.
    const digest = createHash("sha256").update(REPORT).digest("hex");
    for (const signed of [false, true]) {
      const taskDoc = await peerGet(A.urls.task("report"), signed);
      expect(taskDoc.status).toBe(200);
      expect(taskDoc.text).toContain("public/readme.txt");
      expect(taskDoc.text).not.toContain("private/report.txt");
      expect(taskDoc.text).not.toContain(digest);
      // Nor does the outbox, whose signed activities name it.
      const outbox = await peerGet(`${A.urls.outbox}?cursor=`, signed, "application/activity+json");
      expect(outbox.status).toBe(200);
      expect(outbox.text).toContain("public/readme.txt");
      expect(outbox.text).not.toContain("private/report.txt");
      expect(outbox.text).not.toContain(digest);
    }

    // Once the owner accepts the peer as a follower, the signed GET gets the bytes.
    await B.federation.follow(A.urls.actor);
    await waitFor("the pending follow", async () =>
      (await followerRow(a, b))?.state === "pending" ? true : undefined,
    );
    expect((await peerGet(content, true)).status).toBe(403);
    expect(await A.federation.approveFollower(B.urls.actor)).toBe(true);
    expect(await peerGet(content, true)).toEqual({ status: 200, text: REPORT });
    expect((await peerGet(document, true)).status).toBe(200);
    expect((await peerGet(content, false)).status).toBe(401);
    // The follower's signed GET of the task lists the private artifact, with its digest.
    const followerDoc = await peerGet(A.urls.task("report"), true);
    expect(followerDoc.status).toBe(200);
    const listed = (JSON.parse(followerDoc.text) as { artifacts: { name: string }[] }).artifacts;
    expect(listed.map((x) => x.name).sort()).toEqual(["private/report.txt", "public/readme.txt"]);
    expect(followerDoc.text).toContain(digest);
    const followerOutbox = await peerGet(
      `${A.urls.outbox}?cursor=`,
      true,
      "application/activity+json",
    );
    expect(followerOutbox.text).toContain("private/report.txt");
    expect(followerOutbox.text).toContain(digest);
    expect((await peerGet(A.urls.task("report"), false)).text).not.toContain("private/report.txt");
  }, 120_000);

  /** One answer of the owner to a request for a path containing `needle`, with its signature. */
  interface Served {
    readonly signature: string;
    readonly status: number;
    readonly body: Buffer;
  }

  /**
   * Records what the owner answers to requests whose path contains `needle` (status, body and
   * signature headers), by wrapping `write` and `end` of its app's responses; call the
   * returned function to stop.
   */
  function recordServed(needle: string, served: Served[]): () => void {
    const proto = a.current().app!.response as unknown as Record<string, unknown>;
    const parent = Object.getPrototypeOf(proto) as Record<string, (...args: unknown[]) => unknown>;
    const chunksOf = new WeakMap<object, Buffer[]>();
    const keep = (res: EResponse, chunk: unknown) => {
      if (chunk == null || typeof chunk === "function") return;
      const list = chunksOf.get(res) ?? [];
      list.push(typeof chunk === "string" ? Buffer.from(chunk) : Buffer.from(chunk as Uint8Array));
      chunksOf.set(res, list);
    };
    proto.write = function (this: EResponse, ...args: unknown[]) {
      keep(this, args[0]);
      return parent.write!.apply(this, args);
    };
    proto.end = function (this: EResponse, ...args: unknown[]) {
      keep(this, args[0]);
      if (decodeURIComponent(this.req.originalUrl).includes(needle)) {
        served.push({
          signature: `${String(this.req.headers["signature-input"] ?? "")} ${String(this.req.headers.signature ?? "")}`,
          status: this.statusCode,
          body: Buffer.concat(chunksOf.get(this) ?? []),
        });
      }
      return parent.end!.apply(this, args);
    };
    return () => {
      delete proto.write;
      delete proto.end;
    };
  }

  it("runs a follower's task on a private input's exact bytes, and refuses a stranger's", async () => {
    const A = a.current();
    const B = b.current();
    const C = c.current();
    expect((await followerRow(a, b))?.state).toBe("accepted");
    expect(await followerRow(a, c)).toBeUndefined();
    const served: Served[] = [];
    const stopRecording = recordServed("private/data.bin", served);
    onTestFinished(stopRecording);
    const data = randomBytes(16 * 1024);
    await A.tasks.createTask({
      taskId: "produce",
      payload: {
        command: [
          "sh",
          "-c",
          `mkdir -p "$TASKWEB_ARTIFACTS/private" && printf '%s' '${data.toString("base64")}' | base64 -d > "$TASKWEB_ARTIFACTS/private/data.bin"`,
        ],
      },
    });
    expect(await waitForResolution(A, "produce")).toBe("completed");
    const produced = await A.database.db
      .selectFrom("artifacts")
      .select(["content", "sha256", "private"])
      .where("task_id", "=", "produce")
      .where("name", "=", "private/data.bin")
      .executeTakeFirstOrThrow();
    expect(produced.private).toBe(true);
    expect(Buffer.from(produced.content).equals(data)).toBe(true);
    const sha256 = createHash("sha256").update(data).digest("hex");
    expect(produced.sha256).toBe(sha256);

    const input = { task: A.urls.task("produce"), artifact: "private/data.bin", path: "data.bin" };
    const copy = ["sh", "-c", 'cp "$TASKWEB_INPUTS/data.bin" "$TASKWEB_ARTIFACTS/seen.bin"'];
    await Promise.all([
      B.tasks.createTask({ taskId: "consume", inputs: [input], payload: { command: copy } }),
      C.tasks.createTask({ taskId: "consume", inputs: [input], payload: { command: copy } }),
    ]);

    // The follower saw the exact bytes.
    expect(await waitForResolution(B, "consume")).toBe("completed");
    const seen = await B.database.db
      .selectFrom("artifacts")
      .select(["content", "sha256"])
      .where("task_id", "=", "consume")
      .where("name", "=", "seen.bin")
      .executeTakeFirstOrThrow();
    expect(Buffer.from(seen.content).equals(data)).toBe(true);
    expect(seen.sha256).toBe(sha256);

    // The stranger's task is refused with a reason that says why, and never ran its command.
    expect(await waitForResolution(C, "consume")).toBe("exception");
    const refused = await C.tasks.getTask("consume");
    const run = refused!.runs.at(-1)!;
    expect(run.reason_resolved).toBe("resource-unavailable");
    expect(run.log).toContain("input not authorized");
    expect(run.log).toContain("HTTP 403");
    const cArtifacts = await C.database.db
      .selectFrom("artifacts")
      .select("name")
      .where("task_id", "=", "consume")
      .execute();
    expect(cArtifacts).toEqual([]);

    // The producer answered the follower's signed requests with the bytes, and the
    // stranger's signed requests with 403 and none of them.
    const byB = served.filter((s) => s.signature.includes(B.urls.origin));
    const byC = served.filter((s) => s.signature.includes(C.urls.origin));
    expect(byB.some((s) => s.status === 200 && s.body.equals(data))).toBe(true);
    expect(byC.length).toBeGreaterThan(0);
    for (const s of byC) {
      expect(s.status).toBe(403);
      expect(s.body.includes(data.subarray(0, 64))).toBe(false);
    }
    // Every request for it was signed: nothing went out unsigned and got through.
    for (const s of served) expect(s.signature.trim()).not.toBe("");
  }, 120_000);

  it("answers a blocked cluster's Follow with a Reject and refuses its activities", async () => {
    const A = a.current();
    const B = b.current();
    // The owner waits on a task the peer has not created yet.
    await A.tasks.createTask({
      taskId: "after-peer",
      payload: { command: ["true"] },
      dependencies: [B.urls.task("peer-build")],
    });

    const blocked = await runTaskweb(["federation", "block", B.urls.origin, "--json"], as(a));
    expect(blocked.code).toBe(0);
    expect(await A.followPolicy.isBlocked(B.urls.actor)).toBe(true);
    // Blocking drops the peer as a follower, and its signed fetches with it.
    expect(JSON.parse(blocked.stdout)).toMatchObject({ dropped: [B.urls.actor] });
    expect(await followerRow(a, b)).toBeUndefined();
    const refused = await peerGet(A.urls.artifactContent("report", "private/report.txt"), true);
    expect(refused.status).toBe(403);
    expect(refused.text).not.toContain(REPORT);

    await B.federation.follow(A.urls.actor);
    await waitFor("the peer's follow to be rejected", async () =>
      (await followingState(b, a)) === "rejected" ? true : undefined,
    );
    expect(await followerRow(a, b)).toBeUndefined();

    const before = await snapshot(A);
    const refusals = () =>
      a.events.filter((e) => e.type === "inbox-refused" && e.reason === "blocked-actor").length;
    const refusedBefore = refusals();
    // The peer completes the task the owner waits on, and delivers the news to the owner.
    await B.tasks.createTask({ taskId: "peer-build", payload: { command: ["true"] } });
    expect(await waitForResolution(B, "peer-build")).toBe("completed");
    await waitFor("the owner to refuse the blocked peer's activities", () =>
      refusals() > refusedBefore ? true : undefined,
    );
    expect(await snapshot(A)).toEqual(before);
    expect((await A.tasks.getTask("after-peer"))?.task.state).toBe("unscheduled");
  }, 120_000);

  it("accepts by allowlist, with origins covering their actors", async () => {
    const A = a.current();
    const policy = A.followPolicy;
    await policy.setAcceptance("allowlist");
    expect(await policy.decide("https://ci.example/clusters/main")).toBe("reject");
    await policy.add("allow", "https://ci.example");
    expect(await policy.decide("https://ci.example/clusters/main")).toBe("accept");
    expect(await policy.decide("https://ci.example.evil/clusters/main")).toBe("reject");
    await policy.setAcceptance("approval");
    expect(await policy.decide("https://ci.example/clusters/main")).toBe("accept");
    expect(await policy.decide("https://other.example/clusters/x")).toBe("pending");
    // A block wins over the allowlist.
    await policy.add("block", "https://ci.example/clusters/main");
    expect(await policy.decide("https://ci.example/clusters/main")).toBe("reject");
    expect(await policy.decide("https://ci.example/clusters/other")).toBe("accept");
  });
});
