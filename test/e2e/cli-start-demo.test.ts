/**
 * The two things a newcomer runs first, run as they would run them: `taskweb start` on
 * the embedded default, and `taskweb demo`.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { TASKWEB_BIN } from "../support/cli.ts";

describe("the taskweb command", () => {
  it("starts a cluster on the embedded default, prints where it lives, and stops on SIGTERM", async () => {
    const dir = await mkdtemp(join(tmpdir(), "taskweb-start-"));
    const env = { ...process.env };
    delete env.DATABASE_URL;
    delete env.REDIS_URL;
    const child = spawn(
      process.execPath,
      [TASKWEB_BIN, "start", "--port", "0", "--data", dir, "--name", "fresh"],
      {
        env,
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    try {
      const actor = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no actor line in:\n${out}`)), 60_000);
        child.stdout.on("data", () => {
          const match = /actor:\s+(\S+)/.exec(out);
          if (match?.[1] != null) {
            clearTimeout(timer);
            resolve(match[1]);
          }
        });
      });
      expect(out).toContain("embedded PGlite");
      expect(out).toMatch(/UI:\s+http:\/\/127\.0\.0\.1:\d+\//);
      const response = await fetch(actor, { headers: { accept: "application/activity+json" } });
      expect(response.status).toBe(200);
      expect(((await response.json()) as { type: string }).type).toBe("Service");
    } finally {
      child.kill("SIGTERM");
      const code = await new Promise((r) => child.on("exit", r));
      expect(code).toBe(0);
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("stops cleanly when SIGTERM arrives while it is still starting", async () => {
    const dir = await mkdtemp(join(tmpdir(), "taskweb-start-"));
    const env = { ...process.env };
    delete env.DATABASE_URL;
    delete env.REDIS_URL;
    // Twice: once while the command is loading, once while the cluster sets up its database.
    try {
      for (const afterMs of [1000, 4000]) {
        const child = spawn(
          process.execPath,
          [TASKWEB_BIN, "start", "--port", "0", "--data", dir, "--name", "early"],
          { env, stdio: ["ignore", "pipe", "pipe"] },
        );
        let out = "";
        child.stdout.on("data", (d: Buffer) => (out += d.toString()));
        child.stderr.on("data", (d: Buffer) => (out += d.toString()));
        const exited = new Promise<string>((r) =>
          child.on("exit", (code, signal) => r(String(code ?? signal))),
        );
        await new Promise((r) => setTimeout(r, afterMs));
        child.kill("SIGTERM");
        expect(await exited, out).toBe("0");
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);

  it("runs the demo: hooks fire, results flow back, the join has 3 verified inputs, relayed proofs and the aggregate's provenance verify", async () => {
    const child = spawn(process.execPath, [TASKWEB_BIN, "demo"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const code = await new Promise((r) => child.on("exit", r));
    expect(out).not.toContain("FAILED");
    expect(code).toBe(0);
    // Every step's state, as narrated while it happened.
    for (const step of [
      "ci: build trunk #101 is completed",
      "release: build v2.0 is completed",
      "agg: join the publishers' datasets is unscheduled",
      "hw: flash ci build on rev-c is completed",
      "hw: test ci build on rev-c is completed",
      "hw: test release build on rev-c is completed",
      "ci: merge-gate after hardware tests is completed",
      "release: publish after hardware tests is completed",
      "agg: join the publishers' datasets is completed",
    ]) {
      expect(out).toContain(step);
    }
    // The checklist: one line per outcome.
    for (const outcome of [
      /ok +hw's hook on ci fired/,
      /ok +hw's hook on release fired/,
      /ok +hw tested ci's build: completed/,
      /ok +hw tested release's build: completed/,
      /ok +ci received hw's report on its own firmware \(sha256 [0-9a-f]{12}…\) and its gate completed/,
      /ok +release received hw's report on its own firmware/,
      /ok +the images of one build coalesced into one hardware run/,
      /ok +agg's aggregate completed on 3 inputs whose digests match/,
      /ok +agg relayed \d+ activities of 3 publishers; every proof verifies/,
      /ok +the aggregate lists 3 inputs; 3 verified by their publisher's signed original/,
    ]) {
      expect(out).toMatch(outcome);
    }
    expect(out).not.toMatch(/REFUSED/);
  }, 600_000);
});
