/**
 * The inbox's trust rules, each against real clusters on loopback: an activity acts only
 * when its HTTP signature verifies with a key its actor owns, its objects are on the actor's
 * origin, the actor is followed, and its id was never processed. Every refused or ignored
 * input must leave cluster B exactly as it was.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import type { RunningCluster } from "../../server/cluster.ts";
import { describeEachBackend } from "../support/backends.ts";
import { expectNothingChanges as expectUnchanged, taskCompleted } from "../support/inbox-input.ts";
import {
  follow,
  startTestCluster,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";
import { cavagePost, clusterRsaKey, signedPost, type SigningKey } from "../support/signing.ts";

describeEachBackend("inbox trust rules", (backend) => {
  let a: TestCluster;
  let b: TestCluster;
  let m: TestCluster;
  let A: RunningCluster;
  let B: RunningCluster;
  let M: RunningCluster;
  let aKey: SigningKey;
  let mKey: SigningKey;
  let targetUrl: string;

  beforeAll(async () => {
    [a, b, m] = await Promise.all([
      startTestCluster(backend, "a"),
      startTestCluster(backend, "b"),
      startTestCluster(backend, "mallory"),
    ]);
    A = a.current();
    B = b.current();
    M = m.current();
    await follow(B, A);
    aKey = await clusterRsaKey(A);
    mKey = await clusterRsaKey(M);
    // B waits on a task of A that A never runs, and on a task of mallory: only a forged
    // activity could unblock either.
    targetUrl = A.urls.task("never-runs");
    await B.tasks.createTask({
      taskId: "waits-on-a",
      dependencies: [targetUrl],
      payload: { command: ["true"] },
    });
    await B.tasks.createTask({
      taskId: "waits-on-mallory",
      dependencies: [M.urls.task("x")],
      payload: { command: ["true"] },
    });
  });
  afterAll(async () => {
    await Promise.all([a?.destroy(), b?.destroy(), m?.destroy()]);
  });

  /**
   * Sends, then proves B is unchanged (tables, queues, deliveries) and that the expected
   * rule is what stopped it. Key fetches from A and mallory are the only requests allowed.
   */
  const expectNothingChanges = (
    send: () => Promise<{ status: number }>,
    status: number,
    because: string | readonly string[],
  ) =>
    expectUnchanged(b, send, status, because, {
      allowOutbound: (url) => url.startsWith(A.urls.actor) || url.startsWith(M.urls.actor),
    });

  it("refuses an unsigned TaskCompleted with 401", async () => {
    await expectNothingChanges(
      () => signedPost(B.urls.inbox, taskCompleted(A, targetUrl)),
      401,
      "no-signature",
    );
    expect((await B.tasks.getTask("waits-on-a"))!.task.state).toBe("unscheduled");
  });

  it("refuses a TaskCompleted signed by a key its actor does not own", async () => {
    await expectNothingChanges(
      () => signedPost(B.urls.inbox, taskCompleted(A, targetUrl), { key: mKey }),
      401,
      "key-not-owned-by-actor",
    );
  });

  it("refuses a TaskCompleted whose signature is two hours old", async () => {
    await expectNothingChanges(
      () =>
        signedPost(B.urls.inbox, taskCompleted(A, targetUrl), {
          key: aKey,
          signedAt: new Date(Date.now() - 2 * 3600_000),
        }),
      401,
      "invalid-signature",
    );
  });

  it("refuses a TaskCompleted whose body was altered after signing", async () => {
    await expectNothingChanges(
      () =>
        signedPost(B.urls.inbox, taskCompleted(A, A.urls.task("other")), {
          key: aKey,
          tamper: (body) => body.replaceAll(A.urls.task("other"), targetUrl),
        }),
      401,
      "invalid-signature",
    );
  });

  it("refuses a draft-cavage signed body altered after signing", async () => {
    await expectNothingChanges(
      () =>
        signedPost(B.urls.inbox, taskCompleted(A, A.urls.task("other")), {
          key: aKey,
          spec: "draft-cavage-http-signatures-12",
          tamper: (body) => body.replaceAll(A.urls.task("other"), targetUrl),
        }),
      401,
      "invalid-signature",
    );
  });

  it("refuses a draft-cavage signature whose signed headers leave out the digest", async () => {
    await expectNothingChanges(
      () =>
        cavagePost(B.urls.inbox, taskCompleted(A, targetUrl), aKey, [
          "(request-target)",
          "host",
          "date",
        ]),
      401,
      "body-not-covered",
    );
  });

  it("accepts the same draft-cavage signature when it covers the digest", async () => {
    // The control for the case above: only the covered headers differ.
    const response = await cavagePost(
      B.urls.inbox,
      taskCompleted(A, A.urls.task("control")),
      aKey,
      ["(request-target)", "host", "date", "digest"],
    );
    expect(response.status).toBe(202);
  });

  it("ignores a signed activity whose @context needs a remote document", async () => {
    const activity = {
      ...taskCompleted(A, targetUrl),
      "@context": ["https://www.w3.org/ns/activitystreams", `${M.urls.origin}/context.jsonld`],
    };
    await expectNothingChanges(
      () => signedPost(B.urls.inbox, activity, { key: aKey }),
      202,
      "unsupported-context",
    );
  });

  it("ignores a TaskCompleted from a cluster B does not follow", async () => {
    await expectNothingChanges(
      () => signedPost(B.urls.inbox, taskCompleted(M, M.urls.task("x")), { key: mKey }),
      202,
      "not-followed",
    );
    expect((await B.tasks.getTask("waits-on-mallory"))!.task.state).toBe("unscheduled");
  });

  it("ignores a TaskCompleted whose task is on another origin than its actor", async () => {
    await expectNothingChanges(
      () => signedPost(B.urls.inbox, taskCompleted(A, M.urls.task("x")), { key: aKey }),
      202,
      "invalid",
    );
    expect((await B.tasks.getTask("waits-on-mallory"))!.task.state).toBe("unscheduled");
  });

  it("refuses bodies that are not activity JSON, too large or too deep", async () => {
    await expectNothingChanges(
      () =>
        signedPost(B.urls.inbox, taskCompleted(A, targetUrl), {
          key: aKey,
          contentType: "text/plain",
        }),
      415,
      "unsupported-media-type",
    );
    const huge = { ...taskCompleted(A, targetUrl), padding: "x".repeat(2 * 1024 * 1024) };
    await expectNothingChanges(
      () => signedPost(B.urls.inbox, huge, { key: aKey }),
      413,
      "too-large",
    );
    const deep = JSON.stringify({ ...taskCompleted(A, targetUrl), deep: "DEEP" }).replace(
      '"DEEP"',
      `${"[".repeat(10_000)}${"]".repeat(10_000)}`,
    );
    await expectNothingChanges(
      () => signedPost(B.urls.inbox, deep, { key: aKey }),
      400,
      "malformed",
    );
  });

  it("acts on a genuine TaskCompleted once, and a replay of it changes nothing", async () => {
    const activity = taskCompleted(A, targetUrl);
    const first = await signedPost(B.urls.inbox, activity, { key: aKey });
    expect(first.status).toBe(202);
    expect(await waitForResolution(B, "waits-on-a")).toBe("completed");
    await waitFor("B's outbox to settle", async () => {
      const rows = await B.database.db.selectFrom("outbox").select("fanned_out_at").execute();
      return rows.every((r) => r.fanned_out_at != null) ? true : undefined;
    });
    // Fedify's own short-lived cache answers a replay to the same inbox before taskweb sees it…
    await expectNothingChanges(() => signedPost(B.urls.inbox, activity, { key: aKey }), 202, []);
    // …but not one to the shared inbox: there taskweb's durable dedupe must catch it.
    await expectNothingChanges(
      () => signedPost(B.urls.sharedInbox, activity, { key: aKey }),
      202,
      "duplicate",
    );
    const processed = await B.database.db
      .selectFrom("inbox_processed")
      .selectAll()
      .where("activity_id", "=", activity.id)
      .execute();
    expect(processed).toHaveLength(1);
    const runs = await B.database.db
      .selectFrom("runs")
      .selectAll()
      .where("task_id", "=", "waits-on-a")
      .execute();
    expect(runs).toHaveLength(1);
  });
});
