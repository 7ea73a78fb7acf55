/**
 * The worker on a real cluster: what a run's log keeps, how maxRunTime stops a command and
 * everything it started, what a missing program resolves to, how the artifacts folder
 * becomes artifacts, and that an input is refused unless its bytes match the digest its
 * cluster published. A second cluster plays the upstream whose artifact bytes are served
 * over HTTP (with Range and Content-Digest).
 */
import { createHash, randomBytes } from "node:crypto";
import { access, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkContentDigest, parseArtifactObject } from "../../protocol/index.ts";
import type { RunningCluster } from "../../server/cluster.ts";
import { describeEachBackend } from "../support/backends.ts";
import { startTestCluster, waitForResolution, type TestCluster } from "../support/clusters.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function uid(label: string): string {
  return `${label}-${randomBytes(4).toString("hex")}`;
}

function sha256(bytes: Uint8Array | string): string {
  return createHash("sha256").update(bytes).digest("hex");
}

async function exists(path: string): Promise<boolean> {
  return await access(path).then(
    () => true,
    () => false,
  );
}

/** Whether a process is alive (a zombie waiting to be reaped counts as dead). */
async function isAlive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    // The state follows the parenthesised command name.
    return !/\)\s+[ZX]\s/.test(stat);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    if (await exists("/proc/self/stat")) return false;
    // No procfs (macOS): signal 0 only checks that the process exists.
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  }
}

async function lastRun(cluster: RunningCluster, taskId: string) {
  const view = await cluster.tasks.getTask(taskId);
  const run = view?.runs.at(-1);
  if (run == null) throw new Error(`${taskId} has no run`);
  return run;
}

async function artifactRows(cluster: RunningCluster, taskId: string) {
  return await cluster.database.db
    .selectFrom("artifacts")
    .select(["name", "size", "sha256", "media_type", "content"])
    .where("task_id", "=", taskId)
    .orderBy("name")
    .execute();
}

describeEachBackend("worker", (backend) => {
  let upstream: TestCluster;
  let cluster: TestCluster;
  let scratch: string;

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), "taskweb-worker-test-"));
    [upstream, cluster] = await Promise.all([
      startTestCluster(backend, "upstream"),
      startTestCluster(backend, "worker"),
    ]);
  });
  afterAll(async () => {
    await Promise.all([upstream?.destroy(), cluster?.destroy()]);
    await rm(scratch, { recursive: true, force: true });
  });

  /** Runs a task on the upstream cluster that publishes `bytes` as `public/data.bin`. */
  async function publishUpstream(bytes: Buffer): Promise<string> {
    const up = upstream.current();
    const taskId = uid("producer");
    await up.tasks.createTask({
      taskId,
      payload: {
        command: [
          "sh",
          "-c",
          'mkdir -p "$TASKWEB_ARTIFACTS/public" && printf %s "$DATA" | base64 -d > "$TASKWEB_ARTIFACTS/public/data.bin"',
        ],
        env: { DATA: bytes.toString("base64") },
      },
    });
    expect(await waitForResolution(up, taskId)).toBe("completed");
    return taskId;
  }

  describe("runs", () => {
    it("keeps both stdout and stderr in the run's log", async () => {
      const W = cluster.current();
      const token = randomBytes(6).toString("hex");
      const taskId = uid("log");
      await W.tasks.createTask({
        taskId,
        payload: {
          command: ["sh", "-c", 'echo "to-stdout-$T"; echo "to-stderr-$T" >&2'],
          env: { T: token },
        },
      });
      expect(await waitForResolution(W, taskId)).toBe("completed");
      const run = await lastRun(W, taskId);
      expect(run.exit_code).toBe(0);
      expect(run.log).toContain(`to-stdout-${token}`);
      expect(run.log).toContain(`to-stderr-${token}`);
    });

    it("resolves failed with the exit code when the command exits non-zero", async () => {
      const W = cluster.current();
      const taskId = uid("exit");
      await W.tasks.createTask({ taskId, payload: { command: ["sh", "-c", "exit 7"] } });
      expect(await waitForResolution(W, taskId)).toBe("failed");
      const run = await lastRun(W, taskId);
      expect([run.state, run.reason_resolved, run.exit_code]).toEqual(["failed", "failed", 7]);
    });

    it("kills a command and everything it started past maxRunTime, and resolves failed", async () => {
      const W = cluster.current();
      const taskId = uid("slow");
      const dir = join(scratch, taskId);
      await mkdir(dir);
      const created = Date.now();
      await W.tasks.createTask({
        taskId,
        payload: {
          command: [
            "sh",
            "-c",
            // The shell and its sleep both record their pid; the marker would prove survival.
            'echo $$ > "$DIR/shell.pid"; sleep 5 & echo $! > "$DIR/sleep.pid"; wait; touch "$DIR/after-sleep"',
          ],
          env: { DIR: dir },
          maxRunTime: 1,
        },
      });
      expect(await waitForResolution(W, taskId)).toBe("failed");
      expect(Date.now() - created).toBeLessThan(4500);
      const run = await lastRun(W, taskId);
      expect(run.reason_resolved).toBe("failed");
      expect(run.exit_code).toBeNull();
      expect(run.log).toMatch(/maxRunTime of 1 s exceeded/);

      for (const file of ["shell.pid", "sleep.pid"]) {
        const pid = Number((await readFile(join(dir, file), "utf8")).trim());
        expect(pid).toBeGreaterThan(0);
        expect(await isAlive(pid)).toBe(false);
      }
      // Had anything survived, the marker would appear once the 5 s sleep ended.
      const started = new Date(run.started_at!).getTime();
      await sleep(Math.max(0, started + 5500 - Date.now()));
      expect(await exists(join(dir, "after-sleep"))).toBe(false);
    });

    it("resolves exception (malformed-payload) when the program does not exist", async () => {
      const W = cluster.current();
      const taskId = uid("missing");
      const program = `taskweb-no-such-program-${randomBytes(3).toString("hex")}`;
      await W.tasks.createTask({ taskId, payload: { command: [program, "--flag"] } });
      expect(await waitForResolution(W, taskId)).toBe("exception");
      const run = await lastRun(W, taskId);
      expect([run.state, run.reason_resolved, run.exit_code]).toEqual([
        "exception",
        "malformed-payload",
        null,
      ]);
      expect(run.log).toContain(program);
    });

    it("gives the command its env and the taskweb variables", async () => {
      const W = cluster.current();
      const taskId = uid("env");
      await W.tasks.createTask({
        taskId,
        payload: {
          command: [
            "sh",
            "-c",
            'printf "%s|%s|%s|%s" "$MINE" "$TASKWEB_TASK_ID" "$TASKWEB_RUN_ID" "$TASKWEB_TASK_URL" > "$TASKWEB_ARTIFACTS/env.txt"',
          ],
          env: { MINE: "my value" },
        },
      });
      expect(await waitForResolution(W, taskId)).toBe("completed");
      const [row] = await artifactRows(W, taskId);
      expect(Buffer.from(row!.content).toString("utf8")).toBe(
        `my value|${taskId}|0|${W.urls.task(taskId)}`,
      );
    });
  });

  describe("artifacts", () => {
    it("uploads nested files of $TASKWEB_ARTIFACTS named by relative path with their sha256 and size", async () => {
      const W = cluster.current();
      const taskId = uid("nested");
      const files = {
        "public/deep/er/a.txt": randomBytes(12).toString("hex"),
        "b.json": JSON.stringify({ n: randomBytes(4).toString("hex") }),
        "public/c.bin": randomBytes(40).toString("base64"),
      };
      await W.tasks.createTask({
        taskId,
        payload: {
          command: [
            "sh",
            "-c",
            [
              'cd "$TASKWEB_ARTIFACTS"',
              "mkdir -p public/deep/er empty/dir",
              'printf %s "$A" > public/deep/er/a.txt',
              'printf %s "$B" > b.json',
              'printf %s "$C" > public/c.bin',
            ].join(" && "),
          ],
          env: { A: files["public/deep/er/a.txt"], B: files["b.json"], C: files["public/c.bin"] },
        },
      });
      expect(await waitForResolution(W, taskId)).toBe("completed");
      const rows = await artifactRows(W, taskId);
      const mediaTypes: Record<string, string> = {
        "public/deep/er/a.txt": "text/plain",
        "b.json": "application/json",
        "public/c.bin": "application/octet-stream",
      };
      expect(rows.map((r) => [r.name, Number(r.size), r.sha256, r.media_type])).toEqual(
        Object.entries(files)
          .sort(([x], [y]) => (x < y ? -1 : 1))
          .map(([name, text]) => [name, Buffer.byteLength(text), sha256(text), mediaTypes[name]]),
      );

      // Each artifact's public document says the same, and its bytes are served.
      for (const row of rows) {
        const response = await fetch(W.urls.artifact(taskId, row.name), {
          headers: { accept: "application/activity+json" },
        });
        expect(response.status).toBe(200);
        const parsed = parseArtifactObject(await response.json(), {
          fetchedFrom: W.urls.artifact(taskId, row.name),
        });
        expect(parsed.ok).toBe(true);
        if (!parsed.ok) continue;
        expect([parsed.value.name, parsed.value.sha256, parsed.value.size]).toEqual([
          row.name,
          row.sha256,
          Number(row.size),
        ]);
        const content = await fetch(parsed.value.url);
        expect(sha256(Buffer.from(await content.arrayBuffer()))).toBe(row.sha256);
      }
    });

    it("uploads nothing from a command that fails", async () => {
      const W = cluster.current();
      const taskId = uid("no-upload");
      await W.tasks.createTask({
        taskId,
        payload: { command: ["sh", "-c", 'echo partial > "$TASKWEB_ARTIFACTS/out.txt"; exit 1'] },
      });
      expect(await waitForResolution(W, taskId)).toBe("failed");
      expect(await artifactRows(W, taskId)).toEqual([]);
    });
  });

  describe("inputs", () => {
    /** Makes the worker cluster believe `producer` completed with `public/data.bin` of digest `sha`. */
    async function reportUpstream(producer: string, bytes: Buffer, sha: string): Promise<string> {
      const up = upstream.current();
      const taskUrl = up.urls.task(producer);
      const name = "public/data.bin";
      await cluster.current().tasks.applyRemoteTask({
        taskUrl,
        actorId: up.urls.actor,
        state: "completed",
        resolvedAt: new Date().toISOString(),
        source: "activity",
        artifacts: [
          {
            artifactUrl: up.urls.artifact(producer, name),
            taskUrl,
            actorId: up.urls.actor,
            name,
            contentUrl: up.urls.artifactContent(producer, name),
            sha256: sha,
            size: bytes.byteLength,
            mediaType: "application/octet-stream",
          },
        ],
      });
      return taskUrl;
    }

    it("runs the command on an input whose bytes match the published digest", async () => {
      const bytes = randomBytes(2048);
      const producer = await publishUpstream(bytes);
      const taskUrl = await reportUpstream(producer, bytes, sha256(bytes));
      const W = cluster.current();
      const taskId = uid("consumer-ok");
      await W.tasks.createTask({
        taskId,
        inputs: [{ task: taskUrl, artifact: "public/data.bin", path: "in/data.bin" }],
        payload: {
          command: ["sh", "-c", 'cp "$TASKWEB_INPUTS/in/data.bin" "$TASKWEB_ARTIFACTS/seen.bin"'],
        },
      });
      expect(await waitForResolution(W, taskId)).toBe("completed");
      const [seen] = await artifactRows(W, taskId);
      expect(Buffer.from(seen!.content).equals(bytes)).toBe(true);
    });

    it("resolves exception (input-digest-mismatch) and never runs the command when an input's bytes do not match", async () => {
      const bytes = randomBytes(2048);
      const producer = await publishUpstream(bytes);
      // The same size, another digest: what a tampered or replaced artifact looks like.
      const taskUrl = await reportUpstream(producer, bytes, sha256(randomBytes(2048)));
      const W = cluster.current();
      const taskId = uid("consumer-bad");
      const marker = join(scratch, `${taskId}.ran`);
      await W.tasks.createTask({
        taskId,
        inputs: [{ task: taskUrl, artifact: "public/data.bin" }],
        payload: { command: ["touch", marker] },
      });
      expect(await waitForResolution(W, taskId)).toBe("exception");
      const run = await lastRun(W, taskId);
      expect([run.state, run.reason_resolved, run.exit_code]).toEqual([
        "exception",
        "input-digest-mismatch",
        null,
      ]);
      expect(run.log).toContain("digest");
      expect(await exists(marker)).toBe(false);
      expect(await artifactRows(W, taskId)).toEqual([]);
    });
  });

  describe("artifact content endpoint", () => {
    let bytes: Buffer;
    let contentUrl: string;

    beforeAll(async () => {
      bytes = randomBytes(64);
      const producer = await publishUpstream(bytes);
      contentUrl = upstream.current().urls.artifactContent(producer, "public/data.bin");
    });

    it("serves the exact bytes with a Content-Digest that matches them", async () => {
      const response = await fetch(contentUrl);
      expect(response.status).toBe(200);
      const body = Buffer.from(await response.arrayBuffer());
      expect(body.equals(bytes)).toBe(true);
      expect(response.headers.get("content-type")).toBe("application/octet-stream");
      expect(response.headers.get("accept-ranges")).toBe("bytes");
      const digest = checkContentDigest(response.headers.get("content-digest") ?? "", body);
      expect(digest).toEqual({ ok: true, value: sha256(bytes) });
    });

    it("answers Range: bytes=2-5 with 206, that slice and its Content-Range", async () => {
      const response = await fetch(contentUrl, { headers: { range: "bytes=2-5" } });
      expect(response.status).toBe(206);
      const body = Buffer.from(await response.arrayBuffer());
      expect(body.equals(bytes.subarray(2, 6))).toBe(true);
      expect(response.headers.get("content-range")).toBe(`bytes 2-5/${bytes.byteLength}`);
      // RFC 9530: Content-Digest is of the content sent; the whole artifact's is Repr-Digest.
      expect(checkContentDigest(response.headers.get("content-digest") ?? "", body).ok).toBe(true);
      expect(checkContentDigest(response.headers.get("repr-digest") ?? "", bytes).ok).toBe(true);
    });

    it("answers an open-ended range with the rest of the bytes", async () => {
      const response = await fetch(contentUrl, { headers: { range: "bytes=60-" } });
      expect(response.status).toBe(206);
      expect(Buffer.from(await response.arrayBuffer()).equals(bytes.subarray(60))).toBe(true);
      expect(response.headers.get("content-range")).toBe(`bytes 60-63/${bytes.byteLength}`);
    });

    it("answers a range past the end with 416 and the size", async () => {
      const response = await fetch(contentUrl, {
        headers: { range: `bytes=${bytes.byteLength}-` },
      });
      expect(response.status).toBe(416);
      expect(response.headers.get("content-range")).toBe(`bytes */${bytes.byteLength}`);
    });

    it("answers 404 ResourceNotFound for an artifact that does not exist", async () => {
      const response = await fetch(`${contentUrl}.missing`);
      expect(response.status).toBe(404);
      expect(await response.json()).toMatchObject({ code: "ResourceNotFound" });
    });
  });
});
