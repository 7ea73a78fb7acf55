/**
 * The conformance suite against the reference server: every MUST check passes but the
 * SSRF ones its private-address switch makes it fail, and no check is left unobserved
 * when the REST driver is available.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, it } from "vitest";
import {
  formatResultLine,
  runConformance,
  taskwebRestDriver,
  toJUnit,
  type Report,
} from "../../conformance/index.ts";
import { describeEachBackend } from "../support/backends.ts";
import { startTestCluster, TEST_TOKEN, type TestCluster } from "../support/clusters.ts";

const BIN = fileURLToPath(new URL("../../conformance/bin.js", import.meta.url));

function runBin(args: string[]): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ["ignore", "pipe", "inherit"] });
    let stdout = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout }));
  });
}

describeEachBackend("conformance suite against the reference server", (backend) => {
  let cluster: TestCluster;
  let report: Report;

  beforeAll(async () => {
    cluster = await startTestCluster(backend, "sut");
    const sut = cluster.current();
    report = await runConformance({
      target: sut.urls.actor,
      driver: taskwebRestDriver({
        apiUrl: `${new URL(sut.urls.actor).origin}/api/v1`,
        token: TEST_TOKEN,
      }),
      timing: { settleMs: 300, deliveryTimeoutMs: 20_000 },
    });
  }, 240_000);
  afterAll(async () => {
    await cluster?.destroy();
  });

  it("observes every check with the REST driver, but https on loopback", () => {
    if (process.env.CONFORMANCE_PRINT === "1") {
      console.log(report.results.map(formatResultLine).join("\n"));
    }
    const unobserved = report.results.filter((r) => r.outcome === "not-observable");
    expect(unobserved.map((r) => r.id)).toEqual(["DISC-05"]);
  });

  it("passes every MUST check", () => {
    const failed = report.results.filter((r) => r.outcome !== "pass" && r.level === "MUST");
    expect(failed.map((r) => `${r.id}: ${r.message}`)).toEqual([]);
  });

  it("passes every SHOULD check", () => {
    const failed = report.results.filter((r) => r.outcome === "fail" && r.level === "SHOULD");
    expect(failed.map((r) => `${r.id}: ${r.message}`)).toEqual([]);
  });

  it("reports in JUnit with one testcase per check", () => {
    const xml = toJUnit(report);
    expect(xml.match(/<testcase /g)?.length).toBe(report.results.length);
  });

  it("runs from the command with the REST driver and exits 0", async () => {
    const sut = cluster.current();
    const run = await runBin([
      "--target",
      sut.urls.actor,
      "--driver",
      "taskweb-rest",
      "--token",
      TEST_TOKEN,
      "--settle",
      "300",
      "--only",
      "DISC-01",
      "SIG-01",
      "SIG-12",
    ]);
    expect(run.stdout).toMatch(/PASS DISC-01/);
    expect(run.stdout).toMatch(/PASS SIG-01/);
    expect(run.stdout).toMatch(/PASS SIG-12/);
    expect(run.code).toBe(0);
  }, 60_000);
});
