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

  it("runs the demo: B's task runs on A's artifact with its digest verified, and exits 0", async () => {
    const child = spawn(process.execPath, [TASKWEB_BIN, "demo"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const code = await new Promise((r) => child.on("exit", r));
    expect(code).toBe(0);
    for (const step of ["is unscheduled", "pending", "running", "completed", "digest verified"]) {
      expect(out).toContain(step);
    }
  }, 120_000);
});
