/**
 * `taskweb demo`: two clusters on loopback. B follows A; B's task waits for A's task and
 * consumes its artifact; A runs; B's task moves unscheduled → pending → running →
 * completed with the artifact's digest verified. Each step is narrated.
 * @module
 */
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readConfig } from "../config.ts";
import { startCluster, type RunningCluster } from "../cluster.ts";

/** Options for {@link runDemo}. */
export interface DemoOptions {
  /** Keep both clusters running until SIGINT/SIGTERM. */
  readonly keep: boolean;
  readonly print: (line: string) => void;
  /** Give up after this long. @defaultValue 120000 */
  readonly timeoutMs?: number;
}

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
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Runs the demo; resolves to the process exit code. */
export async function runDemo(options: DemoOptions): Promise<number> {
  const { print } = options;
  const timeoutMs = options.timeoutMs ?? 120_000;
  const root = await mkdtemp(join(tmpdir(), "taskweb-demo-"));
  const clusters: RunningCluster[] = [];
  const started = Date.now();
  const t = () => `${((Date.now() - started) / 1000).toFixed(2).padStart(6)}s`;
  try {
    print(`${t()}  Starting cluster A (upstream CI) and cluster B (downstream tests) on loopback…`);
    const start = (name: string) =>
      startCluster(
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
    const [a, b] = await Promise.all([start("a"), start("b")]);
    clusters.push(a, b);
    print(`${t()}  A is ${a.urls.actor}`);
    print(`${t()}  B is ${b.urls.actor}`);

    print(`${t()}  B follows A (Follow → Accept, signed with B's RSA key)…`);
    await b.federation.follow(a.urls.actor);
    await waitFor(
      "A to accept B's follow",
      async () => {
        const row = await b.database.db
          .selectFrom("following")
          .select("state")
          .where("actor_id", "=", a.urls.actor)
          .executeTakeFirst();
        return row?.state === "accepted" ? true : undefined;
      },
      timeoutMs,
    );
    print(`${t()}  A accepted: B now receives A's signed activities.`);

    const upstreamId = "build-1";
    await a.tasks.createTask({
      taskId: upstreamId,
      name: "build",
      payload: {
        command: [
          "sh",
          "-c",
          'sleep 1; mkdir -p "$TASKWEB_ARTIFACTS/public"; echo "taskweb demo build $(date -u +%FT%TZ)" > "$TASKWEB_ARTIFACTS/public/build.txt"',
        ],
      },
    });
    const upstreamUrl = a.urls.task(upstreamId);
    print(`${t()}  A: created task ${upstreamUrl} (it builds public/build.txt).`);

    const downstreamId = "test-1";
    await b.tasks.createTask({
      taskId: downstreamId,
      name: "test against A's build",
      inputs: [{ task: upstreamUrl, artifact: "public/build.txt", path: "build.txt" }],
      payload: {
        command: [
          "sh",
          "-c",
          'echo "testing:"; cat "$TASKWEB_INPUTS/build.txt"; sha256sum "$TASKWEB_INPUTS/build.txt"',
        ],
      },
    });
    print(
      `${t()}  B: created task ${b.urls.task(downstreamId)}, depending on A's task and taking its artifact.`,
    );

    let last = "";
    const final = await waitFor(
      "B's task to resolve",
      async () => {
        const view = await b.tasks.getTask(downstreamId);
        const state = view?.task.state ?? "missing";
        if (state !== last) {
          const why =
            state === "unscheduled"
              ? "waiting for A's task"
              : state === "pending"
                ? "A's TaskCompleted arrived (HTTP signature verified, A is followed, first delivery)"
                : state === "running"
                  ? "a worker claimed it; it downloads A's artifact and checks its sha256"
                  : "";
          print(`${t()}  B: ${downstreamId} is ${state}${why ? ` — ${why}` : ""}`);
          last = state;
        }
        return ["completed", "failed", "exception"].includes(state) ? view : undefined;
      },
      timeoutMs,
    );
    if (final?.task.state !== "completed") {
      print(`${t()}  B's task ended ${final?.task.state}; see its log below.`);
    }
    const upstream = await a.database.db
      .selectFrom("artifacts")
      .select(["content", "sha256"])
      .where("task_id", "=", upstreamId)
      .where("name", "=", "public/build.txt")
      .executeTakeFirstOrThrow();
    const log =
      (
        await b.database.db
          .selectFrom("runs")
          .select("log")
          .where("task_id", "=", downstreamId)
          .executeTakeFirst()
      )?.log ?? "";
    const digest = createHash("sha256").update(upstream.content).digest("hex");
    print(`${t()}  A's artifact public/build.txt has sha256 ${digest}.`);
    print(`${t()}  B's task log:\n${log.trimEnd().replace(/^/gm, "          | ")}`);
    const upstreamTask = await a.tasks.getTask(upstreamId);
    const downstreamRun = final?.runs.at(-1);
    const ms = (d: Date | string | null | undefined) =>
      d == null ? "—" : `${new Date(d).toISOString().slice(11, 23)}`;
    print(`${t()}  Timeline (from both databases):`);
    print(`          ${ms(final?.task.created_at)}  B: ${downstreamId} created, unscheduled`);
    print(
      `          ${ms(upstreamTask?.task.resolved_at)}  A: ${upstreamId} completed; TaskCompleted signed and delivered`,
    );
    print(
      `          ${ms(downstreamRun?.scheduled_at)}  B: ${downstreamId} pending (A's activity verified and applied)`,
    );
    print(
      `          ${ms(downstreamRun?.started_at)}  B: ${downstreamId} running (claimed by a worker)`,
    );
    print(`          ${ms(downstreamRun?.resolved_at)}  B: ${downstreamId} ${final?.task.state}`);
    const verified =
      final?.task.state === "completed" && log.includes(digest) && upstream.sha256 === digest;
    print(
      verified
        ? `${t()}  Done: B's task ran after A's, on the exact bytes A published (digest verified).`
        : `${t()}  Something went wrong: B's task did not see A's exact artifact.`,
    );
    if (options.keep) {
      print("Both clusters keep running; press Ctrl-C to stop.");
      await new Promise<void>((resolve) => {
        process.once("SIGINT", () => resolve());
        process.once("SIGTERM", () => resolve());
      });
    }
    return verified ? 0 : 1;
  } finally {
    await Promise.all(clusters.map((c) => c.stop()));
    await rm(root, { recursive: true, force: true });
  }
}
