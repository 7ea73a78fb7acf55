/**
 * An inbox fuzz run: a bounded number of random and mutated activities (random bytes,
 * random JSON, and genuine `TaskCompleted`s with fields deleted, retyped, moved to other
 * origins, nested, reshaped as JSON-LD), sent unsigned, signed by their actor, signed by
 * someone else, stale, or altered after signing, under various media types. No answer may
 * be a 5xx, the cluster must stay healthy, and nothing may change: B does not follow the
 * signer, so even a mutation that stays valid is parsed and then ignored. The seed is
 * printed; `TASKWEB_FUZZ_SEED=<seed>` replays a run. The inbox is the same code on every
 * backend, so this runs on the embedded default.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunningCluster } from "../../server/cluster.ts";
import { testBackends } from "../support/backends.ts";
import { queueDepths, snapshot, startTestCluster, type TestCluster } from "../support/clusters.ts";
import { taskCompleted } from "../support/inbox-input.ts";
import { clusterRsaKey, signedPost, type SigningKey } from "../support/signing.ts";

const REQUESTS = 300;
const CONCURRENCY = 4;

/** A small seeded generator (mulberry32), so that a failing run can be replayed. */
function generator(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)]!;
  return { next, int, pick };
}

type Random = ReturnType<typeof generator>;

const STRINGS = [
  "",
  "x",
  "Activity",
  "TaskCompleted",
  "https://www.w3.org/ns/activitystreams",
  "http://169.254.169.254/latest/meta-data/",
  "http://127.0.0.2/",
  "file:///etc/passwd",
  "javascript:alert(1)",
  "\u0000",
  "\ud800",
  "🙂",
  "a".repeat(70_000),
  "2026-13-45T99:99:99Z",
  "@graph",
  "completed",
];

function randomJson(r: Random, depth = 0): unknown {
  const kind = r.int(depth > 4 ? 4 : 7);
  switch (kind) {
    case 0:
      return r.pick([null, true, false]);
    case 1:
      return r.pick([0, -1, 1e308, 2 ** 53 + 1, 0.5, -0]);
    case 2:
    case 3:
      return r.pick(STRINGS);
    case 4:
      return Array.from({ length: r.int(4) }, () => randomJson(r, depth + 1));
    default: {
      const object: Record<string, unknown> = {};
      for (let i = r.int(5); i > 0; i--) {
        object[r.pick(["id", "type", "actor", "object", "@context", "to", "x", "@graph"])] =
          randomJson(r, depth + 1);
      }
      return object;
    }
  }
}

/** Changes one thing of a JSON object somewhere in it. */
function mutate(r: Random, value: Record<string, unknown>, others: string[]): void {
  const keys = Object.keys(value);
  const key = keys.length > 0 ? r.pick(keys) : "id";
  const inner = value[key];
  switch (r.int(9)) {
    case 0:
      delete value[key];
      break;
    case 1:
      value[key] = randomJson(r);
      break;
    case 2:
      value.type = r.pick([
        ["Activity", "TaskCompleted"],
        ["Activity", "TaskFailed"],
        ["Activity", "ArtifactPublished"],
        ["Activity", "TaskGroupResolved"],
        "TaskCompleted",
        "Undo",
        "Accept",
        "Reject",
        "Delete",
        "Update",
        "Announce",
        ["Activity"],
        [],
      ]);
      break;
    case 3:
      value[key] =
        typeof inner === "string" ? inner.replace(/^https?:\/\/[^/]+/, r.pick(others)) : inner;
      break;
    case 4:
      value[key] = [inner, inner];
      break;
    case 5: {
      let nested: unknown = inner;
      for (let i = 1 + r.int(40); i > 0; i--) nested = [nested];
      value[key] = nested;
      break;
    }
    case 6:
      value[r.pick(["@graph", "@included", "@reverse", "@context", "@id", "@type"])] =
        randomJson(r);
      break;
    case 7:
      if (typeof inner === "object" && inner !== null && !Array.isArray(inner)) {
        mutate(r, inner as Record<string, unknown>, others);
      } else value[key] = {};
      break;
    default:
      value[`extra${r.int(100)}`] = randomJson(r);
  }
}

describe("inbox fuzz on embedded", () => {
  const backend = testBackends()[0]!;
  let a: TestCluster;
  let b: TestCluster;
  let A: RunningCluster;
  let B: RunningCluster;
  let aKey: SigningKey;
  let bKey: SigningKey;

  beforeAll(async () => {
    [a, b] = await Promise.all([startTestCluster(backend, "a"), startTestCluster(backend, "b")]);
    A = a.current();
    B = b.current();
    aKey = await clusterRsaKey(A);
    bKey = await clusterRsaKey(B);
    await B.tasks.createTask({
      taskId: "waits-on-a",
      dependencies: [A.urls.task("t")],
      payload: { command: ["true"] },
    });
  });
  afterAll(async () => {
    await Promise.all([a?.destroy(), b?.destroy()]);
  });

  it(`answers ${REQUESTS} random and mutated activities without a 5xx or a state change`, async () => {
    const seed = Number(process.env.TASKWEB_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
    console.log(`inbox fuzz seed: ${seed} (replay with TASKWEB_FUZZ_SEED=${seed})`);
    const r = generator(seed);
    const others = [A.urls.origin, B.urls.origin, "http://127.0.0.2:1", "https://evil.example"];
    // B's keys sign too: a request "from" B to itself must not be trusted either.
    const keys = [aKey, bKey];
    const before = await snapshot(B);
    const depths = await queueDepths(B);
    const jobs = b.enqueued.length;
    const statuses = new Map<number, number>();
    const failures: string[] = [];

    /** One request, drawn up front so that a seed always gives the same run. */
    interface FuzzRequest {
      readonly body: string | Buffer;
      readonly contentType: string;
      readonly signing: number;
      readonly inbox: string;
      readonly key: SigningKey;
    }
    const requests: FuzzRequest[] = [];
    for (let i = 0; i < REQUESTS; i++) {
      let body: string | Buffer;
      const shape = r.int(10);
      if (shape === 0) {
        body = Buffer.from(Array.from({ length: r.int(2000) }, () => r.int(256)));
      } else if (shape === 1) {
        body = JSON.stringify(randomJson(r));
      } else {
        const activity = taskCompleted(
          A,
          A.urls.task(r.pick(["t", "u", "x"])),
        ) as unknown as Record<string, unknown>;
        for (let n = 1 + r.int(3); n > 0; n--) mutate(r, activity, others);
        body = JSON.stringify(activity);
      }
      requests.push({
        body,
        contentType: r.pick([
          "application/activity+json",
          "application/activity+json",
          'application/ld+json; profile="https://www.w3.org/ns/activitystreams"',
          "application/json",
          "text/plain",
          "",
        ]),
        signing: r.int(5),
        inbox: r.pick([B.urls.inbox, B.urls.sharedInbox]),
        key: r.pick(keys),
      });
    }

    async function one(i: number): Promise<void> {
      const { body, contentType, signing, inbox, key } = requests[i]!;
      const text = typeof body === "string" ? body : body.toString("latin1");
      let status: number;
      try {
        const response =
          signing === 0 || typeof body !== "string"
            ? await fetch(inbox, {
                method: "POST",
                headers: contentType === "" ? {} : { "content-type": contentType },
                body: typeof body === "string" ? body : new Uint8Array(body),
              })
            : await signedPost(inbox, text, {
                key,
                contentType: contentType === "" ? "application/octet-stream" : contentType,
                ...(signing === 2 ? { signedAt: new Date(Date.now() - 3600_000) } : {}),
                ...(signing === 3 ? { tamper: (t: string) => `${t} ` } : {}),
                ...(signing === 4 ? { spec: "draft-cavage-http-signatures-12" as const } : {}),
              });
        status = response.status;
      } catch (error) {
        failures.push(`#${i}: request failed: ${String(error)}`);
        return;
      }
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      if (status >= 500) failures.push(`#${i}: HTTP ${status} for ${text}`);
    }

    const started = Date.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < REQUESTS && Date.now() - started < 60_000) await one(next++);
      }),
    );
    console.log(
      `inbox fuzz: ${next} requests in ${Date.now() - started} ms; statuses ${JSON.stringify(Object.fromEntries(statuses))}`,
    );
    expect(next).toBe(REQUESTS);
    expect(failures).toEqual([]);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await fetch(`${B.urls.origin}/healthz`)).status).toBe(200);
    expect(await snapshot(B)).toEqual(before);
    expect(await queueDepths(B)).toEqual(depths);
    expect(b.enqueued.slice(jobs)).toEqual([]);
    expect(
      b.outbound.filter((url) => !url.startsWith(A.urls.actor) && !url.startsWith(B.urls.actor)),
    ).toEqual([]);
    // Not every request was refused at the door: some reached signature checks and beyond.
    expect(statuses.get(202) ?? 0).toBeGreaterThan(0);
  });
});
