/**
 * Delivery to followers whose inboxes misbehave: a real cluster publishes to inboxes served
 * by a loopback HTTP server that answers what each test tells it. Retries honour
 * `Retry-After`, a 410 marks the follower gone for good, consecutive failures open the
 * inbox's circuit until a probe succeeds, the horizon gives a delivery up, followers
 * behind one shared inbox get one POST, and an inbox whose name resolves to an address the
 * cluster's policy refuses gets no POST at all.
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  backoffDelay,
  DEFAULT_DELIVERY_POLICY,
  parseRetryAfter,
} from "../../server/federation/delivery.ts";
import { describeServerBackend } from "../support/backends.ts";
import {
  startTestCluster,
  TEST_TOKEN,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";

interface Received {
  readonly path: string;
  readonly at: number;
  readonly activityId: string;
}

interface PeerJson {
  inbox: string;
  lastSuccessAt: string | null;
  lastFailureAt: string | null;
  consecutiveFailures: number;
  circuit: string;
  gone: boolean;
  pending: number;
}

async function body(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString();
}

describeServerBackend("delivery to failing inboxes", (backend) => {
  let a: TestCluster;
  let server: Server;
  let base: string;
  const received: Received[] = [];
  /** Status (and headers) per inbox path; 202 when absent. */
  const answers = new Map<string, () => { status: number; headers?: Record<string, string> }>();
  let taskCount = 0;

  const addFollower = async (name: string, sharedInbox?: string, origin = base) => {
    await a
      .current()
      .database.db.insertInto("followers")
      .values({
        actor_id: `${origin}/actors/${name}`,
        inbox: `${origin}/${name}/inbox`,
        shared_inbox: sharedInbox ?? null,
        follow_id: `${base}/actors/${name}#follow`,
        state: "accepted",
        updated_at: new Date(),
      })
      .execute();
  };
  const removeFollowers = async () => {
    await a.current().database.db.deleteFrom("followers").execute();
  };
  /** Completes a task on A; returns the id of its TaskCompleted. */
  const publishOne = async (): Promise<string> => {
    const A = a.current();
    const taskId = `t${taskCount++}`;
    await A.tasks.createTask({ taskId, payload: { command: ["true"] } });
    expect(await waitForResolution(A, taskId)).toBe("completed");
    const row = await waitFor("the TaskCompleted to be fanned out", async () => {
      const rows = await A.database.db
        .selectFrom("outbox")
        .select(["activity_id", "types", "activity", "fanned_out_at"])
        .execute();
      const r = rows.find(
        (o) =>
          o.types.includes("TaskCompleted") &&
          JSON.stringify(o.activity).includes(`/tasks/${taskId}"`),
      );
      return r?.fanned_out_at != null ? r : undefined;
    });
    return row.activity_id;
  };
  const peers = async (): Promise<PeerJson[]> => {
    const response = await fetch(`http://127.0.0.1:${a.current().port}/api/v1/deliveries/peers`, {
      headers: { authorization: `Bearer ${TEST_TOKEN}` },
    });
    expect(response.status).toBe(200);
    return ((await response.json()) as { peers: PeerJson[] }).peers;
  };
  const delivery = async (activityId: string, inbox: string) =>
    await a
      .current()
      .database.db.selectFrom("deliveries")
      .selectAll()
      .where("activity_id", "=", activityId)
      .where("inbox", "=", inbox)
      .executeTakeFirstOrThrow();

  beforeAll(async () => {
    server = createServer((req, res) => {
      void body(req).then((text) => {
        const path = req.url ?? "";
        let activityId = "";
        try {
          activityId = String((JSON.parse(text) as { id?: unknown }).id);
        } catch {
          // Recorded with an empty id; no test expects unparsable bodies.
        }
        received.push({ path, at: Date.now(), activityId });
        const answer = answers.get(path)?.() ?? { status: 202 };
        res.writeHead(answer.status, answer.headers ?? {});
        res.end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    base = `http://127.0.0.1:${typeof address === "object" && address != null ? address.port : 0}`;
    a = await startTestCluster(backend, "sender", {
      config: {
        delivery: {
          initialDelayMs: 200,
          maxDelayMs: 1000,
          horizonMs: 600_000,
          circuitFailures: 3,
          circuitCooldownMs: 1500,
          attemptLeaseMs: 10_000,
        },
      },
    });
  });
  afterAll(async () => {
    await a?.destroy();
    await new Promise((r) => server?.close(r));
  });

  it("retries a 503 no sooner than its Retry-After and then delivers once", async () => {
    await removeFollowers();
    await addFollower("busy");
    let firstCall: number | undefined;
    // Busy for half a second (a try may be two requests: Fedify's double knock), asking for 2 s.
    answers.set("/busy/inbox", () => {
      firstCall ??= Date.now();
      return Date.now() - firstCall < 500
        ? { status: 503, headers: { "retry-after": "2" } }
        : { status: 202 };
    });
    const activityId = await publishOne();
    const inbox = `${base}/busy/inbox`;
    await waitFor("the delivery", async () =>
      (await delivery(activityId, inbox)).delivered_at != null ? true : undefined,
    );
    const tries = received.filter((r) => r.path === "/busy/inbox" && r.activityId === activityId);
    expect(tries.length).toBeGreaterThanOrEqual(2);
    expect(tries.at(-1)!.at - tries[0]!.at).toBeGreaterThanOrEqual(1900);
    const row = await delivery(activityId, inbox);
    expect(row.failures).toBe(1);
    const peer = (await peers()).find((p) => p.inbox === inbox);
    expect(peer).toMatchObject({ consecutiveFailures: 0, circuit: "closed", gone: false });
    expect(peer?.lastSuccessAt).not.toBeNull();
    expect(peer?.lastFailureAt).not.toBeNull();
  });

  it("marks a follower gone on 410 and delivers nothing more to it", async () => {
    await removeFollowers();
    await addFollower("left");
    await addFollower("stays");
    answers.set("/left/inbox", () => ({ status: 410 }));
    const first = await publishOne();
    const inbox = `${base}/left/inbox`;
    await waitFor("the follower to be marked gone", async () => {
      const row = await a
        .current()
        .database.db.selectFrom("followers")
        .select("gone_at")
        .where("actor_id", "=", `${base}/actors/left`)
        .executeTakeFirstOrThrow();
      return row.gone_at != null ? true : undefined;
    });
    expect((await delivery(first, inbox)).abandoned_at).not.toBeNull();
    const second = await publishOne();
    await waitFor("the second activity at the remaining follower", () =>
      received.some((r) => r.path === "/stays/inbox" && r.activityId === second) ? true : undefined,
    );
    expect(received.filter((r) => r.path === "/left/inbox" && r.activityId === second)).toEqual([]);
    const rows = await a
      .current()
      .database.db.selectFrom("deliveries")
      .select("inbox")
      .where("activity_id", "=", second)
      .execute();
    expect(rows.map((r) => r.inbox)).toEqual([`${base}/stays/inbox`]);
    const response = await fetch(`http://127.0.0.1:${a.current().port}/api/v1/followers`, {
      headers: { authorization: `Bearer ${TEST_TOKEN}` },
    });
    const { followers } = (await response.json()) as {
      followers: { actor_id: string; gone_at: string | null }[];
    };
    expect(followers.find((f) => f.actor_id.endsWith("/left"))?.gone_at).not.toBeNull();
    expect(followers.find((f) => f.actor_id.endsWith("/stays"))?.gone_at).toBeNull();
    expect((await peers()).find((p) => p.inbox === inbox)?.gone).toBe(true);
  });

  it("opens the circuit after consecutive failures, holds deliveries, and closes it after a probe", async () => {
    await removeFollowers();
    await addFollower("flaky");
    let healthy = false;
    answers.set("/flaky/inbox", () => ({ status: healthy ? 202 : 500 }));
    const inbox = `${base}/flaky/inbox`;
    const first = await publishOne();
    const open = await waitFor("the circuit to open", async () => {
      const peer = (await peers()).find((p) => p.inbox === inbox);
      return peer?.circuit === "open" ? peer : undefined;
    });
    expect(open.consecutiveFailures).toBeGreaterThanOrEqual(3);
    // While open, a new activity is held, not sent.
    const held = await publishOne();
    const sentWhileOpen = received.filter((r) => r.path === "/flaky/inbox").length;
    await new Promise((r) => setTimeout(r, 500));
    expect(received.filter((r) => r.path === "/flaky/inbox" && r.activityId === held)).toEqual([]);
    healthy = true;
    await waitFor(
      "every held activity to be delivered",
      async () =>
        (await delivery(first, inbox)).delivered_at != null &&
        (await delivery(held, inbox)).delivered_at != null &&
        (await peers()).find((p) => p.inbox === inbox)?.pending === 0
          ? true
          : undefined,
      20_000,
    );
    expect(received.filter((r) => r.path === "/flaky/inbox").length).toBeGreaterThan(sentWhileOpen);
    expect((await peers()).find((p) => p.inbox === inbox)).toMatchObject({
      circuit: "closed",
      consecutiveFailures: 0,
      pending: 0,
    });
  });

  it("gives a delivery up once its horizon has passed", async () => {
    await removeFollowers();
    await addFollower("down");
    answers.set("/down/inbox", () => ({ status: 503 }));
    await a.restart({
      delivery: {
        initialDelayMs: 200,
        maxDelayMs: 400,
        horizonMs: 2000,
        circuitFailures: 100,
        circuitCooldownMs: 1000,
        attemptLeaseMs: 10_000,
      },
    });
    const activityId = await publishOne();
    const row = await waitFor("the delivery to be given up", async () => {
      const r = await delivery(activityId, `${base}/down/inbox`);
      return r.abandoned_at != null ? r : undefined;
    });
    expect(row.delivered_at).toBeNull();
    expect(row.last_error).toBe("horizon");
  });

  it("sends one POST per shared inbox", async () => {
    await removeFollowers();
    for (const name of ["s1", "s2", "s3"]) await addFollower(name, `${base}/shared/inbox`);
    const activityId = await publishOne();
    await waitFor("the shared inbox to receive it", () =>
      received.some((r) => r.path === "/shared/inbox" && r.activityId === activityId)
        ? true
        : undefined,
    );
    await new Promise((r) => setTimeout(r, 300));
    expect(received.filter((r) => r.activityId === activityId).map((r) => r.path)).toEqual([
      "/shared/inbox",
    ]);
  });

  it("sends nothing to an inbox whose name resolves to a refused address, until the allowlist admits it", async () => {
    await removeFollowers();
    // Stored as a follower would be once its inbox passed the check; the name now resolves
    // to loopback, which this cluster's allowlist admits only on another port.
    const named = base.replace("127.0.0.1", "localhost");
    await addFollower("named", undefined, named);
    const inbox = `${named}/named/inbox`;
    const port = Number(new URL(base).port);
    const policy = {
      initialDelayMs: 200,
      maxDelayMs: 1000,
      horizonMs: 600_000,
      circuitFailures: 3,
      circuitCooldownMs: 1500,
      attemptLeaseMs: 10_000,
    };
    await a.restart({ privateAddressAllowlist: [`127.0.0.1:${port + 1}`], delivery: policy });
    const heard = received.length;
    const activityId = await publishOne();
    const refused = await waitFor("the delivery to fail on the address policy", async () => {
      const row = await delivery(activityId, inbox);
      return row.failures >= 2 ? row : undefined;
    });
    expect(refused.delivered_at).toBeNull();
    expect(refused.abandoned_at).toBeNull();
    expect(refused.last_status).toBeNull();
    expect(refused.last_error).toMatch(
      /^refused by the outbound policy: .*localhost.*127\.0\.0\.1/,
    );
    // The listener heard nothing, and a refusal says nothing of the peer's health.
    expect(received.slice(heard)).toEqual([]);
    expect((await peers()).find((p) => p.inbox === inbox)).toMatchObject({
      circuit: "closed",
      consecutiveFailures: 0,
    });

    // The operator admits loopback: the next retry goes through, once.
    await a.restart({
      privateAddressAllowlist: ["127.0.0.1/32", "::1/128"],
      delivery: policy,
    });
    await waitFor("the delivery once loopback is allowlisted", async () =>
      (await delivery(activityId, inbox)).delivered_at != null ? true : undefined,
    );
    await new Promise((r) => setTimeout(r, 300));
    expect(received.slice(heard).filter((r) => r.activityId === activityId)).toEqual([
      expect.objectContaining({ path: "/named/inbox" }),
    ]);
  });
});

describe("delivery backoff", () => {
  const policy = { ...DEFAULT_DELIVERY_POLICY, initialDelayMs: 1000, maxDelayMs: 10_000 };

  it("doubles with every failure, adds up to half again as jitter, and stops at the maximum", () => {
    for (const [failures, base] of [
      [1, 1000],
      [2, 2000],
      [3, 4000],
      [5, 10_000],
      [40, 10_000],
    ] as const) {
      const delay = backoffDelay(policy, failures);
      expect(delay).toBeGreaterThanOrEqual(base);
      expect(delay).toBeLessThanOrEqual(base * 1.5);
    }
  });

  it("reads Retry-After as seconds or as an HTTP date", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    expect(parseRetryAfter("120", now)).toBe(120_000);
    expect(parseRetryAfter("Thu, 01 Jan 2026 00:00:30 GMT", now)).toBe(30_000);
    expect(parseRetryAfter("Wed, 31 Dec 2025 00:00:00 GMT", now)).toBe(0);
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter(null, now)).toBeUndefined();
  });
});
