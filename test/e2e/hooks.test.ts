/**
 * Hooks end to end: cluster B follows cluster A and has hooks on A's activities. Real
 * servers on loopback, real signatures; the duplicate and the burst are signed by A's key.
 */
import { randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { buildArtifactPublished } from "../../protocol/index.ts";
import type { RunningCluster } from "../../server/cluster.ts";
import { describeEachBackend } from "../support/backends.ts";
import { runTaskweb } from "../support/cli.ts";
import {
  follow,
  snapshot,
  startTestCluster,
  TEST_TOKEN,
  api,
  waitFor,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";
import { clusterRsaKey, signedPost, type SigningKey } from "../support/signing.ts";

/** An ArtifactPublished as A would send it, for an artifact of A's task `taskId`. */
function artifactPublished(A: RunningCluster, taskId: string, name: string) {
  return buildArtifactPublished({
    id: A.urls.activity(randomUUID()),
    actor: A.urls.actor,
    published: new Date(),
    to: [A.urls.followers],
    artifact: {
      id: A.urls.artifact(taskId, name),
      attributedTo: A.urls.actor,
      name,
      task: A.urls.task(taskId),
      url: A.urls.artifactContent(taskId, name),
      mediaType: "application/octet-stream",
      size: 3,
      sha256: "a".repeat(64),
      expires: new Date(Date.now() + 86_400_000),
    },
  });
}

async function firesOf(B: RunningCluster, hookId: string) {
  return await B.database.db
    .selectFrom("hook_fires")
    .selectAll()
    .where("hook_id", "=", hookId)
    .orderBy("seq")
    .execute();
}

describeEachBackend("hooks", (backend) => {
  let a: TestCluster;
  let b: TestCluster;
  let A: RunningCluster;
  let B: RunningCluster;
  let aKey: SigningKey;
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskweb-hooks-"));
    [a, b] = await Promise.all([startTestCluster(backend, "a"), startTestCluster(backend, "b")]);
    A = a.current();
    B = b.current();
    await follow(B, A);
    aKey = await clusterRsaKey(A);
  });
  afterAll(async () => {
    await Promise.all([a?.destroy(), b?.destroy()]);
    await rm(dir, { recursive: true, force: true });
  });

  it("refuses a hook whose template does not make a valid graph, and creates nothing", async () => {
    const before = await B.database.db.selectFrom("hooks").selectAll().execute();
    const bad = await api(B, "PUT", "/hooks/bad", {
      filter: { cluster: A.urls.actor },
      template: {
        tasks: [
          { taskId: "x", dependencies: ["y"], payload: { command: ["true"] } },
          { taskId: "y", dependencies: ["x"], payload: { command: ["echo", "{{nope}}"] } },
        ],
      },
    });
    expect(bad.status).toBe(400);
    const problems = (bad.json.details as { problems: { message: string }[] }).problems;
    expect(problems.some((p) => p.message.includes("{{nope}}"))).toBe(true);
    const cyclic = await api(B, "PUT", "/hooks/bad", {
      filter: { cluster: A.urls.actor },
      template: {
        tasks: [
          { taskId: "x", dependencies: ["y"], payload: { command: ["true"] } },
          { taskId: "y", dependencies: ["x"], payload: { command: ["true"] } },
        ],
      },
    });
    expect(cyclic.status).toBe(400);
    expect(JSON.stringify(cyclic.json.details)).toMatch(/cycle/i);
    const missing = await api(B, "PUT", "/hooks/bad", {
      filter: { cluster: A.urls.actor },
      template: {
        parameters: { board: {} },
        tasks: [{ taskId: "x", payload: { command: ["echo", "{{board}}"] } }],
      },
    });
    expect(missing.status).toBe(400);
    expect(await B.database.db.selectFrom("hooks").selectAll().execute()).toEqual(before);
    expect(await B.database.db.selectFrom("hook_templates").selectAll().execute()).toEqual([]);
  });

  it("keeps every template version; the same definition again changes nothing", async () => {
    const def = (echo: string) => ({
      filter: { cluster: A.urls.actor, artifactName: "never/*" },
      template: { tasks: [{ taskId: "t", payload: { command: ["echo", echo] } }] },
    });
    const first = await api(B, "PUT", "/hooks/versions", def("one"));
    expect(first.status).toBe(201);
    expect(first.json.templateVersion).toBe(1);
    const repeat = await api(B, "PUT", "/hooks/versions", def("one"));
    expect(repeat.status).toBe(200);
    expect(repeat.json).toMatchObject({ templateVersion: 1, changed: false });
    const second = await api(B, "PUT", "/hooks/versions", def("two"));
    expect(second.json).toMatchObject({ templateVersion: 2, changed: true, created: false });
    const versions = await B.database.db
      .selectFrom("hook_templates")
      .select("version")
      .where("hook_id", "=", "versions")
      .orderBy("version")
      .execute();
    expect(versions.map((v) => v.version)).toEqual([1, 2]);
    expect((await api(B, "DELETE", "/hooks/versions")).status).toBe(204);
    expect((await api(B, "GET", "/hooks/versions")).status).toBe(404);
  });

  it("submits the template with A's matched artifact as input, once, even when delivered twice", async () => {
    const created = await api(B, "PUT", "/hooks/on-build", {
      description: "check every build of A",
      filter: { cluster: A.urls.actor, artifactName: "public/*.bin" },
      template: {
        parameters: { project: { default: "demo" } },
        tasks: [
          {
            taskId: "check",
            inputs: [
              { task: "{{event.task}}", artifact: "{{event.artifact.name}}", path: "in.bin" },
            ],
            payload: {
              command: [
                "sh",
                "-c",
                'test "$(sha256sum < "$TASKWEB_INPUTS/in.bin" | cut -c1-64)" = "$EXPECTED" && echo "$PROJECT" > "$TASKWEB_ARTIFACTS/project.txt"',
              ],
              env: { EXPECTED: "{{event.artifact.sha256}}", PROJECT: "{{project}}" },
            },
          },
        ],
      },
      parameters: { project: "taskweb" },
    });
    expect(created.status).toBe(201);

    await A.tasks.createTask({
      taskId: "build",
      payload: {
        command: [
          "sh",
          "-c",
          'mkdir -p "$TASKWEB_ARTIFACTS/public" && head -c 2048 /dev/urandom > "$TASKWEB_ARTIFACTS/public/build.bin" && echo notes > "$TASKWEB_ARTIFACTS/public/notes.txt"',
        ],
      },
    });
    expect(await waitForResolution(A, "build")).toBe("completed");
    const fire = await waitFor("the hook to fire", async () => {
      const fires = await firesOf(B, "on-build");
      return fires[0]?.state === "fired" ? fires[0] : undefined;
    });
    const taskId = `${fire.fire_id}-check`;
    expect(fire.task_group_id).toBe(fire.fire_id);
    expect(await waitForResolution(B, taskId)).toBe("completed");
    const view = await B.tasks.getTask(taskId);
    expect(view?.inputs[0]?.artifact_url).toBe(A.urls.artifact("build", "public/build.bin"));
    expect(view?.artifacts.map((x) => x.name)).toEqual(["project.txt"]);
    // notes.txt does not match the glob: one fire only.
    expect(await firesOf(B, "on-build")).toHaveLength(1);

    // A's ArtifactPublished arrives again (a sender's retry): nothing more happens.
    const outbox = await A.database.db.selectFrom("outbox").select("activity").execute();
    const original = outbox.find(
      (o) =>
        JSON.stringify(o.activity.type).includes("ArtifactPublished") &&
        JSON.stringify(o.activity).includes("public/build.bin"),
    );
    expect(original).toBeDefined();
    await waitFor("the hook's task group to settle", async () =>
      b.events.some((e) => e.type === "task-group-resolved" && e.taskGroupId === fire.fire_id)
        ? true
        : undefined,
    );
    const before = { ...(await snapshot(B)), fires: await firesOf(B, "on-build") };
    const ignoredBefore = b.events.filter(
      (e) => e.type === "inbox" && e.outcome.outcome === "ignored",
    ).length;
    const replay = await signedPost(B.urls.inbox, original!.activity, { key: aKey });
    expect(replay.status).toBe(202);
    await waitFor("the duplicate to be seen", () =>
      b.events.filter(
        (e) =>
          e.type === "inbox" && e.outcome.outcome === "ignored" && e.outcome.reason === "duplicate",
      ).length > 0 &&
      b.events.filter((e) => e.type === "inbox" && e.outcome.outcome === "ignored").length >
        ignoredBefore
        ? true
        : undefined,
    );
    expect({ ...(await snapshot(B)), fires: await firesOf(B, "on-build") }).toEqual(before);
  });

  it("coalesces a burst within the window into one run of the newest", async () => {
    const created = await api(B, "PUT", "/hooks/hardware", {
      filter: { cluster: A.urls.actor, artifactName: "burst/*" },
      coalesce: { windowSeconds: 1.5, key: "{{event.cluster}}" },
      template: {
        tasks: [{ taskId: "flash", payload: { command: ["echo", "{{event.artifact.name}}"] } }],
      },
    });
    expect(created.status).toBe(201);
    for (const n of [1, 2, 3]) {
      const sent = await signedPost(B.urls.inbox, artifactPublished(A, "burst", `burst/${n}`), {
        key: aKey,
      });
      expect(sent.status).toBe(202);
    }
    const pending = await firesOf(B, "hardware");
    expect(pending.map((f) => f.state)).toEqual(["pending", "pending", "pending"]);
    const fires = await waitFor("the window to close", async () => {
      const rows = await firesOf(B, "hardware");
      return rows.every((r) => r.state !== "pending") ? rows : undefined;
    });
    expect(fires.map((f) => f.state)).toEqual(["superseded", "superseded", "fired"]);
    const newest = fires[2]!;
    expect(newest.event["event.artifact.name"]).toBe("burst/3");
    expect(fires[0]!.superseded_by).toBe(newest.fire_id);
    expect(fires[1]!.superseded_by).toBe(newest.fire_id);
    const groups = await B.database.db
      .selectFrom("tasks")
      .select("task_id")
      .where("task_id", "like", "%-flash")
      .execute();
    expect(groups.map((g) => g.task_id)).toEqual([`${newest.fire_id}-flash`]);
    expect(await waitForResolution(B, `${newest.fire_id}-flash`)).toBe("completed");
  });

  it("fires on a completion whose tags match the filter's, and not on one whose tags differ", async () => {
    const created = await api(B, "PUT", "/hooks/web-main", {
      filter: {
        cluster: A.urls.actor,
        activity: "TaskCompleted",
        tags: { project: "web", branch: "main" },
      },
      template: {
        tasks: [{ taskId: "deploy", payload: { command: ["echo", "{{event.taskName}}"] } }],
      },
    });
    expect(created.status).toBe(201);
    const badTags = await api(B, "PUT", "/hooks/bad-tags", {
      filter: { cluster: A.urls.actor, tags: { "no spaces": "x", branch: 3 } },
      template: { tasks: [{ taskId: "t", payload: { command: ["true"] } }] },
    });
    expect(badTags.status).toBe(400);
    expect(JSON.stringify(badTags.json.details)).toContain("filter.tags.branch");

    // The branch differs: B records the completion, and the hook does not fire.
    await A.tasks.createTask({
      taskId: "web-dev",
      tags: { project: "web", branch: "dev" },
      payload: { command: ["true"] },
    });
    expect(await waitForResolution(A, "web-dev")).toBe("completed");
    await waitFor("B to apply the completion of web-dev", async () => {
      const known = await B.database.db
        .selectFrom("remote_tasks")
        .select("state")
        .where("task_url", "=", A.urls.task("web-dev"))
        .executeTakeFirst();
      return known?.state === "completed" ? true : undefined;
    });
    expect(await firesOf(B, "web-main")).toEqual([]);

    // Every tag of the filter matches; the task's extra tag does not matter.
    await A.tasks.createTask({
      taskId: "web-main",
      name: "web-main",
      tags: { project: "web", branch: "main", owner: "ops" },
      payload: { command: ["true"] },
    });
    expect(await waitForResolution(A, "web-main")).toBe("completed");
    const fire = await waitFor("the tagged hook to fire", async () => {
      const fires = await firesOf(B, "web-main");
      return fires[0]?.state === "fired" ? fires[0] : undefined;
    });
    expect(fire.event["event.task"]).toBe(A.urls.task("web-main"));
    expect(await waitForResolution(B, `${fire.fire_id}-deploy`)).toBe("completed");
    expect(await firesOf(B, "web-main")).toHaveLength(1);
    // The tags travel on the wire: on the task and on each of its artifacts.
    const outbox = await A.database.db.selectFrom("outbox").select("activity").execute();
    const completion = outbox
      .map((o) => o.activity as { object?: { id?: string; tags?: unknown } })
      .find((o) => o.object?.id === A.urls.task("web-main"));
    expect(completion?.object?.tags).toEqual({ project: "web", branch: "main", owner: "ops" });
  });

  // The command runs as a child process (seconds each on a loaded machine), and what it
  // calls is the REST API tested above on both backends: declared on the embedded one only.
  if (backend.name === "embedded")
    it("is managed from the command line", async () => {
      const file = join(dir, "hook.yaml");
      await writeFile(
        file,
        [
          "description: nightly from A",
          "filter:",
          `  cluster: ${A.urls.actor}`,
          "  activity: TaskCompleted",
          "  taskName: nightly-*",
          "template:",
          "  tasks:",
          "    - taskId: report",
          "      payload:",
          '        command: ["echo", "{{event.taskName}}"]',
          "",
        ].join("\n"),
      );
      const env = { TASKWEB_URL: B.urls.origin, TASKWEB_TOKEN: TEST_TOKEN };
      const create = await runTaskweb(["hook", "create", "nightly", file], env);
      expect(create.code).toBe(0);
      expect(create.stdout).toContain("Hook nightly created (template v1).");
      const stored = await B.hooks.get("nightly");
      expect(stored?.filter).toEqual({
        cluster: A.urls.actor,
        activity: "TaskCompleted",
        taskName: "nightly-*",
      });
    });
});
