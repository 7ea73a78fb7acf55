/**
 * Provenance end to end: publishers P0..P2, an aggregator M that follows and relays them and
 * runs a task consuming one dataset of each (P0 and P1 through a join, P2 as a declared
 * input), and a reader outside every cluster who checks the aggregate with
 * `taskweb provenance`. A stand-in aggregator that lies about its inputs is refused.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import {
  verifyProvenance,
  type TaskDocumentJson,
  type TaskInputJson,
} from "../../protocol/index.ts";
import type { RunningCluster } from "../../server/cluster.ts";
import { createHttpJsonLoader } from "../../server/cli/provenance.ts";
import { describeEachBackend } from "../support/backends.ts";
import { runTaskweb } from "../support/cli.ts";
import {
  api,
  artifactDigest,
  follow,
  startTestCluster,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";

const PUBLISH = [
  "sh",
  "-c",
  'mkdir -p "$TASKWEB_ARTIFACTS/public" && head -c 512 /dev/urandom | od -An -tx1 > "$TASKWEB_ARTIFACTS/public/data.csv"',
];

async function getJson(url: string): Promise<Record<string, unknown>> {
  const response = await fetch(url, { headers: { accept: "application/activity+json" } });
  expect(response.status).toBe(200);
  return (await response.json()) as Record<string, unknown>;
}

/** Every item of an outbox, read over HTTP. */
async function outboxItems(actorUrl: string): Promise<Record<string, unknown>[]> {
  const actor = await getJson(actorUrl);
  const collection = await getJson(String(actor.outbox));
  const items: Record<string, unknown>[] = [];
  let next: unknown = collection.first;
  while (typeof next === "string") {
    const page = await getJson(next);
    items.push(...[page.orderedItems ?? []].flat().map((x) => x as Record<string, unknown>));
    next = page.next;
  }
  return items;
}

/** A stand-in cluster serving fixed documents at `/clusters/liar…`; `null` answers 404. */
async function standIn(
  documents: (origin: string) => Record<string, unknown | null>,
): Promise<{ origin: string; server: Server }> {
  let served: Record<string, unknown | null> = {};
  const server = createServer((req, res) => {
    const body = served[req.url ?? ""];
    if (body == null) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": "application/activity+json" });
    res.end(JSON.stringify(body));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  served = documents(origin);
  return { origin, server };
}

describeEachBackend("provenance", (backend) => {
  let p: TestCluster[];
  let m: TestCluster;
  let f: TestCluster;
  let P: RunningCluster[];
  let M: RunningCluster;
  let F: RunningCluster;
  let liar: Server | undefined;

  beforeAll(async () => {
    [m, f, ...p] = await Promise.all([
      startTestCluster(backend, "m"),
      startTestCluster(backend, "f"),
      startTestCluster(backend, "p0"),
      startTestCluster(backend, "p1"),
      startTestCluster(backend, "p2"),
    ]);
    M = m.current();
    F = f.current();
    P = p.map((c) => c.current());
    // F follows the aggregator only, and depends on its aggregate.
    await follow(F, M);
    for (const publisher of P) {
      await follow(M, publisher);
      const relay = await api(M, "POST", "/relays", { cluster: publisher.urls.actor });
      expect(relay.status).toBe(201);
    }
  }, 300_000);
  afterAll(async () => {
    liar?.close();
    await Promise.all([m?.destroy(), f?.destroy(), ...(p ?? []).map((c) => c.destroy())]);
  });

  it("lists what the aggregate consumed, and a reader verifies each input by its publisher's proof", async () => {
    const created = await api(M, "POST", "/tasks", {
      taskId: "aggregate",
      payload: {
        command: [
          "sh",
          "-c",
          'cat "$TASKWEB_INPUTS"/join/*/public/data.csv "$TASKWEB_INPUTS/p2.csv" > /dev/null',
        ],
      },
      join: {
        clusters: [P[0]!.urls.actor, P[1]!.urls.actor],
        artifact: "public/data.csv",
        deadline: "PT10M",
      },
      inputs: [{ task: P[2]!.urls.task("dataset"), artifact: "public/data.csv", path: "p2.csv" }],
    });
    expect(created.status).toBe(201);
    await F.tasks.createTask({
      taskId: "downstream",
      dependencies: [M.urls.task("aggregate")],
      payload: { command: ["true"] },
    });
    for (const publisher of P) {
      await publisher.tasks.createTask({ taskId: "dataset", payload: { command: PUBLISH } });
    }
    expect(await waitForResolution(M, "aggregate", 120_000)).toBe("completed");
    const digests = await Promise.all(
      P.map((x) => artifactDigest(x, "dataset", "public/data.csv")),
    );

    // The published Task object, in the document and in M's TaskCompleted, lists the inputs.
    const expected: TaskInputJson[] = [
      { path: "join/0/public/data.csv", index: 0 },
      { path: "join/1/public/data.csv", index: 1 },
      { path: "p2.csv", index: 2 },
    ].map(({ path, index }) => ({
      artifact: P[index]!.urls.artifact("dataset", "public/data.csv"),
      task: P[index]!.urls.task("dataset"),
      attributedTo: P[index]!.urls.actor,
      sha256: digests[index]!,
      path,
    }));
    // The worker recorded the digest it verified each input's bytes against.
    const recorded = await M.database.db
      .selectFrom("task_inputs")
      .select(["path", "sha256"])
      .where("task_id", "=", "aggregate")
      .orderBy("path")
      .execute();
    expect(recorded).toEqual(expected.map((i) => ({ path: i.path, sha256: i.sha256 })));
    const document = (await getJson(M.urls.task("aggregate"))) as unknown as TaskDocumentJson;
    expect(document.inputs).toEqual(expected);
    expect(document["@context"][1]).toHaveProperty("inputs", {
      "@id": "tw:inputs",
      "@type": "@json",
      "@container": "@set",
    });
    const outbox = await outboxItems(M.urls.actor);
    const completed = outbox.find(
      (i) =>
        [i.type].flat().includes("TaskCompleted") &&
        (i.object as { id?: string }).id === M.urls.task("aggregate"),
    );
    expect((completed?.object as { inputs?: unknown }).inputs).toEqual(expected);
    // A follower accepts the TaskCompleted that lists them (through JSON-LD re-compaction).
    expect(await waitForResolution(F, "downstream", 120_000)).toBe("completed");

    // M relays each publisher's activities (the Announces may trail the aggregate).
    await waitFor("M to relay every publisher", async () => {
      const actors = new Set(
        (await outboxItems(M.urls.actor))
          .filter((i) => i.type === "Announce")
          .map((i) => (i.object as { actor?: string }).actor),
      );
      return P.every((x) => actors.has(x.urls.actor)) ? true : undefined;
    });

    const result = await verifyProvenance(document, { loadDocument: createHttpJsonLoader(10_000) });
    expect(result.ok).toBe(true);
    expect(result.inputs?.map((r) => (r.ok ? r.evidence : r.reason))).toEqual([
      "relayed-proof",
      "relayed-proof",
      "relayed-proof",
    ]);

    const cli = await runTaskweb(["provenance", M.urls.task("aggregate")]);
    expect(cli.stderr).toBe("");
    expect(cli.code).toBe(0);
    for (const [index, x] of P.entries()) {
      expect(cli.stdout).toContain(
        `verified  ${x.urls.actor}  task ${x.urls.task("dataset")}  sha256 ${digests[index]}`,
      );
    }
    expect(cli.stdout).toContain("signed original");
    expect(cli.lines.at(-1)).toBe(`All 3 inputs of ${M.urls.task("aggregate")} verified.`);
    const json = await runTaskweb(["provenance", "--json", M.urls.task("aggregate")]);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: true, cluster: M.urls.actor });
  }, 300_000);

  it("refuses an aggregator that lies about a digest or claims an input nobody published", async () => {
    const genuine = (await getJson(M.urls.task("aggregate"))) as unknown as TaskDocumentJson;
    const relayed = (await outboxItems(M.urls.actor)).filter((i) => i.type === "Announce");
    const inputs = genuine.inputs!;
    const { origin, server } = await standIn((origin) => {
      const actor = `${origin}/clusters/liar`;
      return {
        "/clusters/liar": { id: actor, type: "Service", outbox: `${actor}/outbox` },
        "/clusters/liar/outbox": { type: "OrderedCollection", first: `${actor}/outbox?page=1` },
        // The genuine relayed originals, signed by the publishers: they give it away.
        "/clusters/liar/outbox?page=1": { type: "OrderedCollectionPage", orderedItems: relayed },
        "/clusters/liar/tasks/aggregate": {
          ...genuine,
          id: `${actor}/tasks/aggregate`,
          attributedTo: actor,
          taskGroup: `${actor}/task-groups/g`,
          inputs: [
            { ...inputs[0]!, sha256: "0".repeat(64) },
            inputs[1]!,
            {
              ...inputs[2]!,
              artifact: P[2]!.urls.artifact("never-ran", "public/data.csv"),
              task: P[2]!.urls.task("never-ran"),
            },
          ],
        },
      };
    });
    liar = server;
    const url = `${origin}/clusters/liar/tasks/aggregate`;
    const cli = await runTaskweb(["provenance", url]);
    expect(cli.code).toBe(1);
    const blocks = cli.stdout.split(/\n(?=verified|REFUSED)/);
    expect(blocks[0]).toMatch(/^REFUSED /);
    expect(blocks[0]).toContain(`digest-mismatch: the relayed ${"http"}`);
    expect(blocks[0]).toContain(
      `gives sha256 ${inputs[0]!.sha256}, the aggregate claims ${"0".repeat(64)}`,
    );
    expect(blocks[1]).toMatch(/^verified /);
    expect(blocks[2]).toMatch(/^REFUSED /);
    expect(blocks[2]).toContain("not-published: no relayed original lists it");
    expect(cli.lines.at(-1)).toBe(`2 of 3 inputs of ${url} REFUSED.`);

    // Without the relayed originals, the publisher's own origin still contradicts the lie.
    const result = await verifyProvenance(await getJson(url), {
      loadDocument: createHttpJsonLoader(10_000),
      relayed: [],
    });
    expect(result.inputs?.map((r) => (r.ok ? r.evidence : r.reason))).toEqual([
      "digest-mismatch",
      "origin",
      "not-published",
    ]);
    // And a reader who wants signatures refuses what only an origin vouches for.
    const strict = await verifyProvenance(await getJson(url), {
      loadDocument: createHttpJsonLoader(10_000),
      relayed: [],
      requireProof: true,
    });
    expect(strict.ok).toBe(false);
    expect(strict.inputs?.[1]).toMatchObject({ ok: false, reason: "no-proof" });
  }, 120_000);

  it("says when there is nothing to verify, the task cannot be fetched, or the URL is wrong", async () => {
    const [none, unreachable, usage] = await Promise.all([
      runTaskweb(["provenance", P[0]!.urls.task("dataset")]),
      runTaskweb(["provenance", "--timeout", "5", "http://127.0.0.1:1/clusters/x/tasks/y"]),
      runTaskweb(["provenance", "not-a-url"]),
    ]);
    expect(none.code).toBe(1);
    expect(none.lines).toEqual([
      `${P[0]!.urls.task("dataset")} lists no inputs: there is no provenance to verify.`,
    ]);
    expect(unreachable.code).toBe(3);
    expect(unreachable.stdout).toContain("Could not fetch the task: http://127.0.0.1:1/");
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("not-a-url is not an http(s) URL");
  }, 120_000);

  it("never lists a private input: its name and digest are as private as its bytes", async () => {
    await M.tasks.createTask({
      taskId: "private-consumer",
      inputs: [{ task: P[2]!.urls.task("secret"), artifact: "private/secret.csv", path: "s.csv" }],
      payload: { command: ["sh", "-c", 'test -s "$TASKWEB_INPUTS/s.csv"'] },
    });
    await P[2]!.tasks.createTask({
      taskId: "secret",
      payload: {
        command: [
          "sh",
          "-c",
          'mkdir -p "$TASKWEB_ARTIFACTS/private" && echo secret > "$TASKWEB_ARTIFACTS/private/secret.csv"',
        ],
      },
    });
    // M, an accepted follower, may fetch it, and its run consumed it.
    expect(await waitForResolution(M, "private-consumer", 120_000)).toBe("completed");
    const document = await getJson(M.urls.task("private-consumer"));
    expect(document).not.toHaveProperty("inputs");
    expect(JSON.stringify(document)).not.toContain("secret.csv");
  }, 180_000);
});
