/**
 * The federation policy between two real clusters on loopback: in `approval` mode a Follow
 * stays pending until an administrator approves it (`taskweb followers approve`); a
 * rejected follower leaves nothing behind; a blocked cluster's Follow is answered with a
 * Reject, and its activities are refused and change nothing — a task waiting on the blocked
 * cluster's task stays waiting after that task completes. A private artifact is served only
 * to a signed GET from an accepted follower (authorized fetch).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { signRequest } from "@fedify/fedify";
import { testBackends } from "../support/backends.ts";
import { clusterRsaKey } from "../support/signing.ts";
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

  beforeAll(async () => {
    const [embedded] = testBackends();
    if (embedded == null) throw new Error("no embedded backend");
    [a, b] = await Promise.all([
      startTestCluster(embedded, "owner", { config: { followerAcceptance: "approval" } }),
      startTestCluster(embedded, "peer"),
    ]);
    // The owner follows the peer (the peer accepts every follow).
    await follow(a.current(), b.current());
  });
  afterAll(async () => {
    await Promise.all([a?.destroy(), b?.destroy()]);
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

  /** GETs `url` signed with the peer's key (or unsigned); returns status and text. */
  async function peerGet(url: string, signed: boolean): Promise<{ status: number; text: string }> {
    let request = new Request(url, { headers: { accept: "*/*" } });
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
