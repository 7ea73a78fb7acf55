/**
 * `taskweb demo`: the seed scenario, seven clusters on loopback, every step narrated.
 *
 * - An upstream CI cluster (`ci`) and a release cluster (`release`) each build firmware.
 *   A shared hardware-test cluster (`hw`) follows both; its hooks fire a flash-and-test
 *   graph on every build (the two images of one build coalesce into one run).
 * - `ci` and `release` follow `hw`; their own hooks take the hardware report of their build
 *   as input and gate on it: the results flow back.
 * - An aggregation cluster (`agg`) follows three dataset publishers; its aggregate task
 *   depends on one task of each and consumes their artifacts (digests checked), and it
 *   relays (`Announce`) what the publishers sent, their proofs included, so a reader who
 *   trusts only HTTP can check where each dataset came from.
 *
 * The last lines are a checklist, one `ok`/`FAILED` line per outcome; the exit code is 0
 * only when every one is ok.
 * @module
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DocumentLoader } from "@fedify/vocab-runtime";
import { sql } from "kysely";
import { readConfig } from "../config.ts";
import { startCluster, type RunningCluster } from "../cluster.ts";
import type { HookDefinition } from "../domain/hooks.ts";
import { verifyRelayedActivity } from "../federation/relays.ts";
import { readRelayedActivities, verifyProvenance } from "../../protocol/index.ts";

/** Options for {@link runDemo}. */
export interface DemoOptions {
  /** Keep the clusters running until SIGINT/SIGTERM. */
  readonly keep: boolean;
  readonly print: (line: string) => void;
  /** Give up after this long. @defaultValue 180000 */
  readonly timeoutMs?: number;
}

/** The clusters of the scenario, by role. */
const ROLES = {
  ci: "upstream CI",
  release: "release builds",
  hw: "shared hardware tests",
  agg: "dataset aggregation",
  north: "dataset publisher",
  south: "dataset publisher",
  east: "dataset publisher",
} as const;
type Role = keyof typeof ROLES;
type Clusters = Record<Role, RunningCluster>;

const RESOLVED = ["completed", "failed", "exception"];

async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs: number,
): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error(`Timed out waiting for ${what}.`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A payload running `script` with `sh -c`. */
function sh(script: string): { command: string[] } {
  return { command: ["sh", "-c", script] };
}

/** A build of two images, public/firmware.img and public/bootloader.img. */
function buildTask(taskId: string, name: string, version: string): Record<string, unknown> {
  return {
    taskId,
    name,
    payload: sh(
      `mkdir -p "$TASKWEB_ARTIFACTS/public" && printf 'firmware ${version}\\n' > "$TASKWEB_ARTIFACTS/public/firmware.img" && printf 'bootloader ${version}\\n' > "$TASKWEB_ARTIFACTS/public/bootloader.img"`,
    ),
  };
}

/**
 * The hardware cluster's hook on one build cluster: flash both images of a build, then test;
 * the report, `public/report-<source>.txt`, names the firmware's digest. The two images of
 * one build arrive as two `ArtifactPublished`: coalescing by task runs the graph once.
 */
function hardwareHook(source: RunningCluster, label: string): Omit<HookDefinition, "hookId"> {
  const image = (name: string, path: string) => ({
    task: "{{event.task}}",
    artifact: `public/${name}.img`,
    path,
  });
  return {
    description: `flash and test every ${label} build on the bench`,
    filter: {
      cluster: source.urls.actor,
      activity: "ArtifactPublished",
      artifactName: "public/*.img",
    },
    coalesce: { windowSeconds: 3, key: "{{event.task}}" },
    template: {
      parameters: {
        source: { description: "whose build this is" },
        board: { description: "the board on the bench", default: "rev-c" },
      },
      tasks: [
        {
          taskId: "flash",
          name: "flash {{source}} build on {{board}}",
          inputs: [image("firmware", "firmware.img"), image("bootloader", "bootloader.img")],
          payload: sh('echo "flashing {{board}}"; cat "$TASKWEB_INPUTS"/*.img'),
        },
        {
          taskId: "test",
          name: "test {{source}} build on {{board}}",
          dependencies: ["flash"],
          inputs: [image("firmware", "firmware.img")],
          payload: sh(
            'mkdir -p "$TASKWEB_ARTIFACTS/public" && printf "firmware %s PASS on {{board}}\\n" "$(sha256sum < "$TASKWEB_INPUTS/firmware.img" | cut -c1-64)" > "$TASKWEB_ARTIFACTS/public/report-{{source}}.txt"',
          ),
        },
      ],
    },
    parameters: { source: label },
  };
}

/** A build cluster's hook on the hardware cluster's report of its builds: gate on it. */
function reportHook(
  hw: RunningCluster,
  label: string,
  gate: string,
): Omit<HookDefinition, "hookId"> {
  return {
    description: `${gate} once the hardware bench passed a ${label} build`,
    filter: {
      cluster: hw.urls.actor,
      activity: "ArtifactPublished",
      artifactName: `public/report-${label}.txt`,
    },
    coalesce: null,
    template: {
      parameters: {},
      tasks: [
        {
          taskId: gate,
          name: `${gate} after hardware tests`,
          inputs: [
            { task: "{{event.task}}", artifact: "{{event.artifact.name}}", path: "report.txt" },
          ],
          payload: sh(
            'cat "$TASKWEB_INPUTS/report.txt"; grep -q PASS "$TASKWEB_INPUTS/report.txt"',
          ),
        },
      ],
    },
    parameters: {},
  };
}

/**
 * The aggregate over one period's datasets: a task that depends on one task of each
 * publisher and consumes its `public/data.csv` (digest checked by the worker). Everything
 * the join needs is here, so that it can become a single join declaration later.
 */
function aggregateTask(taskId: string, publishers: readonly string[]): Record<string, unknown> {
  return {
    taskId,
    name: "join the publishers' datasets",
    join: {
      clusters: [...publishers],
      artifact: "public/data.csv",
      tags: { dataset: "population", period: "2026-12" },
      deadline: "PT10M",
      atDeadline: "run",
    },
    payload: sh(
      'mkdir -p "$TASKWEB_ARTIFACTS/public" && cd "$TASKWEB_INPUTS/join" && sha256sum */public/data.csv && cat */public/data.csv > "$TASKWEB_ARTIFACTS/public/joined.csv" && echo "rows: $(wc -l < "$TASKWEB_ARTIFACTS/public/joined.csv")"',
    ),
  };
}

/** A plain HTTP document loader: what a reader outside any cluster has. */
const httpLoader: DocumentLoader = async (url) => {
  const response = await fetch(url, { headers: { accept: "application/activity+json" } });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return { contextUrl: null, document: await response.json(), documentUrl: response.url || url };
};
/** The same, giving the document alone. */
const loadJson = async (url: string): Promise<unknown> => (await httpLoader(url)).document;

/** Runs the demo; resolves to the process exit code. */
export async function runDemo(options: DemoOptions): Promise<number> {
  const { print } = options;
  const timeoutMs = options.timeoutMs ?? 180_000;
  const root = await mkdtemp(join(tmpdir(), "taskweb-demo-"));
  const running: RunningCluster[] = [];
  const started = Date.now();
  const t = () => `${((Date.now() - started) / 1000).toFixed(2).padStart(6)}s`;
  const say = (line: string) => print(`${t()}  ${line}`);
  const checks: { ok: boolean; what: string }[] = [];
  const check = (ok: boolean, what: string) => {
    checks.push({ ok, what });
    return ok;
  };
  let stopWatching = () => {};
  try {
    const roles = Object.keys(ROLES) as Role[];
    say(
      `Starting ${roles.length} clusters on loopback, each with its own embedded PGlite database and queue (each runs its migrations first)…`,
    );
    const entries = await Promise.all(
      roles.map(async (name) => {
        const cluster = await startCluster(
          readConfig(
            {},
            {
              name,
              port: 0,
              dataDir: join(root, name),
              privateAddressAllowlist: ["127.0.0.1/32"],
              reconcileIntervalMs: 60_000,
            },
          ),
          { roles: { web: true, worker: true } },
        );
        running.push(cluster);
        say(`  ${name.padEnd(7)} (${ROLES[name]}) is up: ${cluster.urls.actor}`);
        return [name, cluster] as const;
      }),
    );
    const c = Object.fromEntries(entries) as Clusters;

    // Progress: every task state change on every cluster, as it happens.
    const seen = new Map<string, string>();
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        for (const r of roles) {
          const rows = await c[r].database.db
            .selectFrom("tasks")
            .select(["task_id", "name", "state"])
            .orderBy("created_at")
            .execute()
            .catch(() => []);
          for (const row of rows) {
            const key = `${r}/${row.task_id}`;
            if (seen.get(key) === row.state) continue;
            seen.set(key, row.state);
            say(`  · ${r}: ${row.name || row.task_id} is ${row.state}`);
          }
        }
        await new Promise((res) => setTimeout(res, 50));
      }
    })();
    stopWatching = () => {
      watching = false;
    };

    say("Following (Follow → Accept, each signed with the follower's RSA key):");
    const follows: [Role, Role, string][] = [
      ["hw", "ci", "the bench tests CI builds"],
      ["hw", "release", "the bench tests release builds"],
      ["ci", "hw", "CI reads the bench's reports"],
      ["release", "hw", "release reads the bench's reports"],
      ["agg", "north", "the aggregator reads a publisher"],
      ["agg", "south", "the aggregator reads a publisher"],
      ["agg", "east", "the aggregator reads a publisher"],
    ];
    await Promise.all(
      follows.map(async ([who, whom, why]) => {
        await c[who].federation.follow(c[whom].urls.actor);
        await waitFor(
          `${whom} to accept ${who}'s follow`,
          async () => {
            const row = await c[who].database.db
              .selectFrom("following")
              .select("state")
              .where("actor_id", "=", c[whom].urls.actor)
              .executeTakeFirst();
            return row?.state === "accepted" ? true : undefined;
          },
          timeoutMs,
        );
        say(`  ${who} follows ${whom}: accepted (${why})`);
      }),
    );

    say("hw: hooks on ci's and release's builds (flash + test; images of one build coalesce, 3 s)");
    await c.hw.hooks.put("ci-builds", hardwareHook(c.ci, "ci"));
    await c.hw.hooks.put("release-builds", hardwareHook(c.release, "release"));
    say("ci, release: hooks on hw's reports of their builds (gate on the result)");
    await c.ci.hooks.put("bench-report", reportHook(c.hw, "ci", "merge-gate"));
    await c.release.hooks.put("bench-report", reportHook(c.hw, "release", "publish"));

    say("agg: relays north, south and east to its followers (Announce, proofs kept)");
    for (const p of ["north", "south", "east"] as const)
      await c.agg.relays.addSource(c[p].urls.actor);
    const publishers = (["north", "south", "east"] as const).map((p) => c[p].urls.actor);
    await c.agg.tasks.createTask(aggregateTask("aggregate-2026-12", publishers));
    say(
      "agg: created aggregate-2026-12, a join: one public/data.csv tagged period=2026-12 from each publisher (deadline 10 min, then run with what arrived)",
    );

    say("ci builds trunk #101, release builds v2.0, the publishers publish December's data:");
    await Promise.all([
      c.ci.tasks.createTask(buildTask("build-101", "build trunk #101", "trunk-101")),
      c.release.tasks.createTask(buildTask("build-v2", "build v2.0", "v2.0")),
      ...(["north", "south", "east"] as const).map((p, i) =>
        c[p].tasks.createTask({
          taskId: "dataset-2026-12",
          name: "publish December's dataset",
          tags: { dataset: "population", period: "2026-12" },
          payload: sh(
            `mkdir -p "$TASKWEB_ARTIFACTS/public" && printf '${p},2026-12,${(i + 1) * 100}\\n' > "$TASKWEB_ARTIFACTS/public/data.csv"`,
          ),
        }),
      ),
    ]);

    const resolution = async (cluster: RunningCluster, taskId: string) =>
      await waitFor(
        `${taskId} to resolve`,
        async () => {
          const view = await cluster.tasks.getTask(taskId);
          return view != null && RESOLVED.includes(view.task.state) ? view : undefined;
        },
        timeoutMs,
      );
    const fired = async (cluster: RunningCluster, hookId: string) =>
      await waitFor(
        `hook ${hookId} to fire`,
        async () => {
          const fires = await cluster.hooks.fires(hookId);
          const done = fires?.find((f) => f.state === "fired");
          return done != null && fires!.every((f) => f.state !== "pending") ? fires! : undefined;
        },
        timeoutMs,
      );
    const artifactDigest = async (cluster: RunningCluster, taskId: string, name: string) =>
      (
        await cluster.database.db
          .selectFrom("artifacts")
          .select("sha256")
          .where("task_id", "=", taskId)
          .where("name", "=", name)
          .executeTakeFirst()
      )?.sha256;
    const logOf = async (cluster: RunningCluster, taskId: string) =>
      (
        await cluster.database.db
          .selectFrom("runs")
          .select("log")
          .where("task_id", "=", taskId)
          .orderBy("run_id", "desc")
          .executeTakeFirst()
      )?.log ?? "";
    const indent = (text: string) => text.trimEnd().replace(/^/gm, "          | ");

    // The hardware bench, its reports, and the gates back on ci and release.
    const chains = await Promise.all(
      (
        [
          ["ci", "build-101", "ci-builds", "merge-gate"],
          ["release", "build-v2", "release-builds", "publish"],
        ] as const
      ).map(async ([source, build, hookId, gate]) => {
        const fires = await fired(c.hw, hookId);
        const fire = fires.find((f) => f.state === "fired")!;
        const superseded = fires.filter((f) => f.state === "superseded").length;
        say(
          `hw: hook ${hookId} fired task group ${fire.taskGroupId} for ${fire.event["event.artifact.name"]}` +
            (superseded > 0
              ? ` (${superseded} more image of the same build coalesced into it)`
              : ""),
        );
        const test = await resolution(c.hw, `${fire.fireId}-test`);
        const built = await artifactDigest(c[source], build, "public/firmware.img");
        const report = `public/report-${source}.txt`;
        const back = await fired(c[source], "bench-report");
        const backFire = back.find((f) => f.state === "fired")!;
        say(`${source}: hw's ${report} arrived; hook bench-report fired ${gate}`);
        const gated = await resolution(c[source], `${backFire.fireId}-${gate}`);
        const gateLog = await logOf(c[source], `${backFire.fireId}-${gate}`);
        say(`${source}: ${gate} ${gated.task.state}; its log:\n${indent(gateLog)}`);
        return { source, fires, superseded, test, built, gated, gateLog, report };
      }),
    );

    // The aggregate.
    const aggregate = await resolution(c.agg, "aggregate-2026-12");
    const aggLog = await logOf(c.agg, "aggregate-2026-12");
    say(`agg: aggregate-2026-12 ${aggregate.task.state}; its log:\n${indent(aggLog)}`);
    const published = await Promise.all(
      (["north", "south", "east"] as const).map(
        async (p) => [p, await artifactDigest(c[p], "dataset-2026-12", "public/data.csv")] as const,
      ),
    );
    for (const [p, digest] of published)
      say(`${p} published public/data.csv with sha256 ${digest}`);

    // Provenance, as a reader outside every cluster checks it.
    say("A reader fetches agg's outbox over plain HTTP and checks each relayed activity:");
    await waitFor(
      "agg to relay each publisher's activities",
      async () => {
        const rows = await c.agg.database.db
          .selectFrom("outbox")
          .select(sql<string>`activity->'object'->>'actor'`.as("original"))
          .where(sql<boolean>`types::text like '%Announce%'`)
          .execute();
        const relayed = new Set(rows.map((r) => r.original));
        return publishers.every((p) => relayed.has(p)) ? true : undefined;
      },
      timeoutMs,
    );
    const announces = await readRelayedActivities(c.agg.urls.actor, loadJson);
    const verifications = await Promise.all(
      announces.map(async (a) => ({
        original: a.object as Record<string, unknown>,
        result: await verifyRelayedActivity(a, {
          documentLoader: httpLoader,
          contextLoader: httpLoader,
        }),
      })),
    );
    for (const { original, result } of verifications) {
      const type = [original.type].flat().join(", ");
      say(
        `  ${result.ok ? "verified" : `REFUSED (${result.reason}: ${result.detail})`}: ${type} by ${String(original.actor)} — proof by its own Ed25519 key, served at its id`,
      );
    }

    // The aggregate's own provenance: each input it lists, checked against the publisher.
    say(
      "The reader then fetches the aggregate's task document and verifies each input it lists (taskweb provenance):",
    );
    const provenance = await verifyProvenance(
      (await httpLoader(c.agg.urls.task("aggregate-2026-12"))).document,
      {
        loadDocument: loadJson,
        relayed: announces,
      },
    );
    for (const result of provenance.inputs ?? []) {
      say(
        `  ${result.ok ? "verified" : `REFUSED (${result.reason}: ${result.detail})`}: ${result.input.path ?? result.input.artifact} from ${result.input.attributedTo}, sha256 ${result.input.sha256.slice(0, 12)}…${result.ok ? (result.evidence === "relayed-proof" ? " — matches the publisher's signed original" : " — matches what the publisher serves") : ""}`,
      );
    }

    stopWatching();
    await watcher;

    // The checklist.
    for (const chain of chains) {
      check(
        chain.fires.some((f) => f.state === "fired"),
        `hw's hook on ${chain.source} fired`,
      );
      check(
        chain.test.task.state === "completed",
        `hw tested ${chain.source}'s build: ${chain.test.task.state}`,
      );
      check(
        chain.gated.task.state === "completed" &&
          chain.built != null &&
          chain.gateLog.includes(`firmware ${chain.built} PASS`),
        `${chain.source} received hw's report on its own firmware (sha256 ${chain.built?.slice(0, 12)}…) and its gate completed`,
      );
    }
    check(
      chains.some((ch) => ch.superseded > 0),
      "the images of one build coalesced into one hardware run",
    );
    const inputs = published.filter(([, d]) => d != null && aggLog.includes(d));
    check(
      aggregate.task.state === "completed" && inputs.length === 3,
      `agg's aggregate completed on ${inputs.length} inputs whose digests match what each publisher published`,
    );
    const verifiedActors = new Set(
      verifications.filter((v) => v.result.ok).map((v) => v.original.actor),
    );
    check(
      verifications.length > 0 &&
        verifications.every((v) => v.result.ok) &&
        verifiedActors.size === 3,
      `agg relayed ${verifications.length} activities of 3 publishers; every proof verifies`,
    );
    const provenInputs = (provenance.inputs ?? []).filter(
      (r) => r.ok && r.evidence === "relayed-proof",
    );
    const provenPublishers = new Set(provenInputs.map((r) => r.input.attributedTo));
    check(
      provenance.ok && provenInputs.length === 3 && provenPublishers.size === 3,
      `the aggregate lists ${provenance.inputs?.length ?? 0} inputs; ${provenInputs.length} verified by their publisher's signed original`,
    );
    print("");
    for (const { ok, what } of checks) print(`  ${ok ? "ok    " : "FAILED"}  ${what}`);
    const allOk = checks.every((x) => x.ok);
    print("");
    say(allOk ? "Done: every step happened as described." : "Something went wrong; see above.");

    if (options.keep) {
      print("The clusters keep running; press Ctrl-C to stop. Their web apps:");
      for (const r of roles) {
        print(`  ${r.padEnd(7)} ${c[r].urls.origin}/   (admin token: ${c[r].adminToken})`);
      }
      await new Promise<void>((resolve) => {
        process.once("SIGINT", () => resolve());
        process.once("SIGTERM", () => resolve());
      });
    }
    // Let the last deliveries between the clusters land before they stop.
    await waitFor(
      "the clusters to settle",
      async () => {
        for (const r of roles) {
          const due = await c[r].database.db
            .selectFrom("jobs")
            .select("job_id")
            .where("run_at", "<", sql<Date>`now() + interval '5 seconds'`)
            .executeTakeFirst();
          if (due != null) return undefined;
        }
        return true;
      },
      15_000,
    ).catch(() => undefined);
    return allOk ? 0 : 1;
  } finally {
    stopWatching();
    await Promise.all(running.map((x) => x.stop()));
    await rm(root, { recursive: true, force: true });
  }
}
