/**
 * A weakened reference server whose dereferencing applies a fetched task document without
 * comparing its id with the URL it fetched (the check TW-DEREF-5 requires). The suite must
 * fail exactly DEREF-02, and still pass the other dereference checks.
 */
import { afterAll, beforeAll, expect, it, vi } from "vitest";
import { parseTaskObject } from "../../protocol/index.ts";
import {
  formatResultLine,
  runConformance,
  taskwebRestDriver,
  type Report,
} from "../../conformance/index.ts";
import type * as DereferenceModule from "../../server/federation/dereference.ts";
import { compactWithTaskwebContext, taskReport } from "../../server/federation/inbox.ts";
import { describeEachBackend } from "../support/backends.ts";
import { startTestCluster, TEST_TOKEN, type TestCluster } from "../support/clusters.ts";

vi.mock("../../server/federation/dereference.ts", async (importOriginal) => {
  const original = await importOriginal<typeof DereferenceModule>();
  const weakened: typeof original.dereferenceRemoteTask = async (url, loaders, tasks) => {
    const { document } = await loaders.documentLoader(url);
    const compacted = await compactWithTaskwebContext(document, loaders.contextLoader);
    const parsed = parseTaskObject(compacted);
    if (!parsed.ok) return { ok: false, reason: "invalid", detail: parsed.reason.message };
    // No comparison of parsed.value.id with url: the document is taken for the URL fetched.
    await tasks.applyRemoteTask(
      taskReport(parsed.value.attributedTo, { ...parsed.value, id: url }, "dereference"),
    );
    return { ok: true, state: parsed.value.taskState };
  };
  return { ...original, dereferenceRemoteTask: weakened };
});

describeEachBackend(
  "conformance suite against a server without the fetched-id check",
  (backend) => {
    let cluster: TestCluster;
    let report: Report;

    beforeAll(async () => {
      cluster = await startTestCluster(backend, "noidcheck");
      const sut = cluster.current();
      report = await runConformance({
        target: sut.urls.actor,
        driver: taskwebRestDriver({
          apiUrl: `${new URL(sut.urls.actor).origin}/api/v1`,
          token: TEST_TOKEN,
        }),
        only: ["DEREF"],
        timing: { settleMs: 300, deliveryTimeoutMs: 20_000 },
      });
    }, 120_000);
    afterAll(async () => {
      await cluster?.destroy();
    });

    it("fails DEREF-02 only", () => {
      if (process.env.CONFORMANCE_PRINT === "1") {
        console.log(report.results.map(formatResultLine).join("\n"));
      }
      expect(report.results.map((r) => `${r.id} ${r.outcome}`)).toEqual([
        "DEREF-01 pass",
        "DEREF-02 fail",
        "DEREF-03 pass",
      ]);
    });
  },
);
