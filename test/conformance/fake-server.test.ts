/**
 * The suite against a tiny fake server that is no taskweb cluster at all: its actor has the
 * wrong id and type and no keys, it has no WebFinger or NodeInfo, and its inbox answers 202
 * to anything. Without a driver, every check that needs the server to act must be reported
 * not observable (never passed), and the rest must fail where the fake is wrong. The
 * command's exit codes and report files are checked here too.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ALL_CHECKS,
  PreflightError,
  runConformance,
  type Report,
} from "../../conformance/index.ts";

const BIN = fileURLToPath(new URL("../../conformance/bin.js", import.meta.url));

function runBin(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...process.env, TASKWEB_TOKEN: "" },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("conformance suite against a fake server", () => {
  let server: Server;
  let base = "";
  let report: Report;
  let dir = "";

  beforeAll(async () => {
    server = createServer((req, res) => {
      req.resume();
      const json = (status: number, doc: unknown) => {
        res.writeHead(status, { "content-type": "application/activity+json" });
        res.end(JSON.stringify(doc));
      };
      if (req.method === "GET" && req.url === "/actor") {
        return json(200, {
          "@context": "https://www.w3.org/ns/activitystreams",
          id: `${base}/someone-else`,
          type: "Person",
          preferredUsername: "fake",
          inbox: `${base}/inbox`,
        });
      }
      if (req.method === "GET" && req.url === "/not-an-actor") return json(200, { hello: 1 });
      if (req.method === "POST" && req.url === "/inbox") return json(202, {});
      res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    report = await runConformance({
      target: `${base}/actor`,
      timing: { settleMs: 100, deliveryTimeoutMs: 1500 },
    });
    dir = await mkdtemp(join(tmpdir(), "conformance-"));
  }, 60_000);
  afterAll(async () => {
    server?.closeAllConnections();
    await new Promise<void>((resolve) => server?.close(() => resolve()));
    if (dir !== "") await rm(dir, { recursive: true, force: true });
  });

  it("reports every check that needs a driver as not observable, with the reason", () => {
    for (const check of ALL_CHECKS.filter((c) => (c.needs ?? []).length > 0)) {
      const result = report.results.find((r) => r.id === check.id);
      expect(result?.outcome, check.id).toBe("not-observable");
      expect(result?.message).toMatch(/driver "none" cannot/);
    }
  });

  it("fails what the fake gets wrong and passes only what it really does", () => {
    if (process.env.CONFORMANCE_PRINT === "1") {
      console.log(report.results.map((r) => `${r.outcome} ${r.id} ${r.message}`).join("\n"));
    }
    const passed = report.results.filter((r) => r.outcome === "pass").map((r) => r.id);
    // The fake does answer 404 for an unknown account and 202 for an unknown activity type.
    expect(passed).toEqual(["DISC-13", "ORI-08"]);
    const failed = report.results.filter((r) => r.outcome === "fail").map((r) => r.id);
    expect(failed).toEqual(
      expect.arrayContaining(["DISC-01", "DISC-03", "DISC-06", "DISC-07", "DISC-11", "DISC-14"]),
    );
    expect(failed).toEqual(expect.arrayContaining(["FOL-01", "ORI-06", "ORI-07", "LIM-01"]));
    expect(report.summary.mustFailed).toBeGreaterThan(0);
  });

  it("refuses to start without a reachable actor", async () => {
    await expect(runConformance({ target: "http://127.0.0.1:1/actor" })).rejects.toThrow(
      PreflightError,
    );
    await expect(runConformance({ target: `${base}/not-an-actor` })).rejects.toThrow(
      /not an actor/,
    );
  });

  it("exits 2 on usage and preflight errors", async () => {
    const none = await runBin([]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/--target/);
    const noToken = await runBin(["--target", `${base}/actor`, "--driver", "taskweb-rest"]);
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toMatch(/--token/);
    const unreachable = await runBin(["--target", "http://127.0.0.1:1/actor"]);
    expect(unreachable.code).toBe(2);
    expect(unreachable.stderr).toMatch(/unreachable/);
  }, 60_000);

  it("exits 1 when a MUST fails and writes JUnit and JSON reports", async () => {
    const junit = join(dir, "report.xml");
    const jsonFile = join(dir, "report.json");
    const run = await runBin([
      "--target",
      `${base}/actor`,
      "--only",
      "DISC",
      "--junit",
      junit,
      "--json",
      jsonFile,
    ]);
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/FAIL DISC-01/);
    expect(run.stdout).toMatch(/NOT CONFORMING/);
    const xml = await readFile(junit, "utf8");
    expect(xml).toMatch(/<testsuite name="discovery" tests="16"/);
    const json = JSON.parse(await readFile(jsonFile, "utf8")) as Report;
    expect(json.results.map((r) => r.id)).toEqual(
      ALL_CHECKS.filter((c) => c.id.startsWith("DISC")).map((c) => c.id),
    );
  }, 60_000);
});
