/**
 * The federation policy between two real clusters on loopback: in `approval` mode a Follow
 * stays pending until an administrator approves it (`taskweb followers approve`); a
 * rejected follower leaves nothing behind; a blocked cluster's Follow is answered with a
 * Reject, and its activities are refused and change nothing — a task waiting on the blocked
 * cluster's task stays waiting after that task completes.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testBackends } from "../support/backends.ts";
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
