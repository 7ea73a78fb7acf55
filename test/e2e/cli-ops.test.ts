/**
 * The operator's command line run as a user runs it, against real clusters on loopback:
 * help and exit codes, follow / unfollow / followers / following, task show / logs / rerun /
 * cancel, migrate, with human output and `--json`. The CLI talks HTTP only, so one backend
 * (the embedded default) is enough; the routes behind it run on both in their own suites.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testBackends } from "../support/backends.ts";
import { runTaskweb } from "../support/cli.ts";
import { freePort } from "../support/ports.ts";
import {
  startTestCluster,
  TEST_TOKEN,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";

// PostgreSQL + Redis where the run has them (lighter to start than two PGlite engines).
const backend = testBackends().at(-1)!;

describe("the taskweb command line for operators", () => {
  let a: TestCluster;
  let b: TestCluster;
  let dir: string;
  let flagsA: string[];
  let flagsB: string[];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskweb-cli-ops-"));
    [a, b] = await Promise.all([
      startTestCluster(backend, "ops-a"),
      startTestCluster(backend, "ops-b"),
    ]);
    flagsA = ["--url", a.current().urls.origin, "--token", TEST_TOKEN];
    flagsB = ["--url", b.current().urls.origin, "--token", TEST_TOKEN];
  }, 120_000);
  afterAll(async () => {
    await Promise.all([a?.destroy(), b?.destroy()]);
    await rm(dir, { recursive: true, force: true });
  });

  it("documents every command and its exit codes, and exits 2 on a usage error", async () => {
    const [root, logsHelp, unknown] = await Promise.all([
      runTaskweb(["--help"]),
      runTaskweb(["task", "logs", "--help"]),
      runTaskweb(["no-such-command"]),
    ]);
    expect(root.code).toBe(0);
    for (const command of [
      "start",
      "web",
      "worker",
      "migrate",
      "demo",
      "follow",
      "unfollow",
      "followers",
      "following",
      "task",
      "graph",
      "artifact",
      "stats",
    ]) {
      expect(root.stdout).toMatch(new RegExp(`^  ${command}\\b.*\\S`, "m"));
    }
    expect(root.stdout).toContain("Exit status:");
    expect(root.stdout).toMatch(/^ {2}3 {2}unavailable/m);
    expect(logsHelp.code).toBe(0);
    expect(logsHelp.stdout).toContain("Usage: taskweb task logs [options] <task-id>");
    expect(logsHelp.stdout).toContain("--follow");
    expect(logsHelp.stdout).toContain("--json");
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("unknown command");
  });

  it(
    "follows, lists and unfollows a cluster, waiting for the answer",
    { timeout: 120_000 },
    async () => {
      const actorB = b.current().urls.actor;
      const followed = await runTaskweb(["follow", actorB, "--wait", "30", ...flagsA]);
      expect(followed.stderr).toBe("");
      expect(followed.code).toBe(0);
      expect(followed.lines).toEqual([`${actorB} accepted: this cluster follows it.`]);

      const [followers, followersJson, pendingOnly] = await Promise.all([
        runTaskweb(["followers", ...flagsB]),
        runTaskweb(["followers", "--json", ...flagsB]),
        runTaskweb(["following", "--state", "pending", ...flagsA]),
      ]);
      expect(followers.code).toBe(0);
      expect(followers.lines).toHaveLength(1);
      expect(followers.lines[0]).toMatch(
        new RegExp(`^${a.current().urls.actor} {2}accepted {2}since \\d{4}-`),
      );
      expect(followersJson.code).toBe(0);
      const parsed = JSON.parse(followersJson.stdout) as {
        followers: { actor_id: string; state: string }[];
      };
      expect(parsed.followers.map((f) => [f.actor_id, f.state])).toEqual([
        [a.current().urls.actor, "accepted"],
      ]);
      expect(pendingOnly.lines).toEqual(["Not following any cluster."]);

      const unfollowed = await runTaskweb(["unfollow", actorB, "--json", ...flagsA]);
      expect(unfollowed.code).toBe(0);
      expect(JSON.parse(unfollowed.stdout)).toEqual({ actorId: actorB, unfollowed: true });
      expect(await a.current().database.db.selectFrom("following").selectAll().execute()).toEqual(
        [],
      );

      const [again, unreachable] = await Promise.all([
        runTaskweb(["unfollow", actorB, "--json", ...flagsA]),
        runTaskweb(["followers", "--url", `http://127.0.0.1:${await freePort()}`, "--token", "x"]),
      ]);
      expect(again.code).toBe(1);
      expect(JSON.parse(again.lines.at(-1)!)).toEqual({
        error: { code: "ResourceNotFound", message: "This cluster does not follow that actor." },
      });
      expect(unreachable.code).toBe(3);
      expect(unreachable.stderr).toMatch(/Cannot reach http:\/\/127\.0\.0\.1:\d+/);
    },
  );

  it(
    "shows a task, prints and follows its logs, reruns and cancels it",
    { timeout: 150_000 },
    async () => {
      const A = a.current();
      await A.tasks.createTask({
        taskId: "ops-hello",
        payload: { command: ["sh", "-c", "echo hello from ops; echo second line"] },
      });
      expect(await waitForResolution(A, "ops-hello")).toBe("completed");

      const [show, showJson, logs, logsJson, noTask, badToken] = await Promise.all([
        runTaskweb(["task", "show", "ops-hello", ...flagsA]),
        runTaskweb(["task", "show", "ops-hello", "--json", ...flagsA]),
        runTaskweb(["task", "logs", "ops-hello", ...flagsA]),
        runTaskweb(["task", "logs", "ops-hello", "--run", "0", "--json", ...flagsA]),
        runTaskweb(["task", "logs", "no-such-task", ...flagsA]),
        runTaskweb(["task", "show", "ops-hello", "--url", A.urls.origin, "--token", "wrong"]),
      ]);
      expect(show.code).toBe(0);
      expect(show.lines[0]).toMatch(/^ops-hello \(.*\): completed$/);
      expect(show.lines[1]).toBe("  run 0: completed (completed)");
      expect(showJson.code).toBe(0);
      expect((JSON.parse(showJson.stdout) as { state: string }).state).toBe("completed");
      expect(logs.code).toBe(0);
      expect(logs.stdout).toContain("hello from ops\nsecond line\n");
      expect(logsJson.code).toBe(0);
      const logBody = JSON.parse(logsJson.stdout) as Record<string, unknown>;
      expect(logBody).toMatchObject({ taskId: "ops-hello", runId: 0, state: "completed" });
      expect(logBody.log).toContain("hello from ops\n");
      expect(noTask.code).toBe(1);
      expect(noTask.stderr).toContain("No such task on this cluster.");
      expect(badToken.code).toBe(1);
      expect(badToken.stderr).toContain("Authorization: Bearer");

      const rerun = await runTaskweb(["task", "rerun", "ops-hello", ...flagsA]);
      expect(rerun.code).toBe(0);
      expect(rerun.lines).toEqual(["ops-hello: run 1 is pending"]);
      await waitFor("run 1 to complete", async () => {
        const view = await A.tasks.getTask("ops-hello");
        return view?.runs[1]?.state === "completed" ? true : undefined;
      });

      // A long task: its log is followed live until it is canceled.
      await A.tasks.createTask({
        taskId: "ops-long",
        payload: { command: ["sh", "-c", "echo started; sleep 60"] },
      });
      await waitFor("ops-long to write its first line", async () => {
        const view = await A.tasks.getTask("ops-long");
        return view?.runs[0]?.log?.includes("started") === true ? true : undefined;
      });
      const followed = runTaskweb(["task", "logs", "ops-long", "--follow", ...flagsA]);
      await new Promise((r) => setTimeout(r, 500));
      const canceled = await runTaskweb(["task", "cancel", "ops-long", "--json", ...flagsA]);
      expect(canceled.code).toBe(0);
      expect(JSON.parse(canceled.stdout)).toMatchObject({ taskId: "ops-long", state: "exception" });
      const log = await followed;
      expect(log.code).toBe(0);
      expect(log.stdout).toContain("started\n");
      expect((await A.tasks.getTask("ops-long"))?.task.state).toBe("exception");
    },
  );

  it("migrates a new database, then finds it up to date", async () => {
    const db = backend.database();
    const where =
      db.url != null
        ? { args: [], env: { DATABASE_URL: db.url, DATABASE_SCHEMA: db.schema ?? "public" } }
        : { args: ["--data", join(dir, "fresh")], env: {} };
    const first = await runTaskweb(["migrate", ...where.args, "--json"], where.env);
    expect(first.stderr).toBe("");
    expect(first.code).toBe(0);
    const applied = (JSON.parse(first.stdout) as { applied: string[] }).applied;
    expect(applied[0]).toBe("0001-initial");
    expect(applied.length).toBeGreaterThan(3);
    const second = await runTaskweb(["migrate", ...where.args], where.env);
    expect(second.code).toBe(0);
    expect(second.lines).toEqual(["The database is up to date."]);
  });
});
