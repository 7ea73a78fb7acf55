/**
 * A weakened reference server: its inbox guard (checks 1 to 6 of the inbox, before the
 * ActivityPub library) is replaced by a pass-through, so only the library's own checks are
 * left. The suite must notice exactly the rules the guard adds, and still pass the rest.
 */
import { afterAll, beforeAll, expect, it, vi } from "vitest";
import {
  formatResultLine,
  runConformance,
  taskwebRestDriver,
  type Report,
} from "../../conformance/index.ts";
import type * as InboxGuardModule from "../../server/http/inbox-guard.ts";
import { describeEachBackend } from "../support/backends.ts";
import { startTestCluster, TEST_TOKEN, type TestCluster } from "../support/clusters.ts";

vi.mock("../../server/http/inbox-guard.ts", async (importOriginal) => {
  const original = await importOriginal<typeof InboxGuardModule>();
  return {
    ...original,
    // Buffers the body for the ActivityPub library, as the real guard does, and checks nothing.
    inboxGuard:
      () =>
      (req: NodeJS.ReadableStream & { rawBody?: Uint8Array }, _res: unknown, next: () => void) => {
        const chunks: Buffer[] = [];
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("end", () => {
          req.rawBody = Buffer.concat(chunks);
          next();
        });
      },
  };
});

describeEachBackend("conformance suite against a server without its inbox guard", (backend) => {
  let cluster: TestCluster;
  let report: Report;

  beforeAll(async () => {
    cluster = await startTestCluster(backend, "noguard");
    const sut = cluster.current();
    report = await runConformance({
      target: sut.urls.actor,
      driver: taskwebRestDriver({
        apiUrl: `${new URL(sut.urls.actor).origin}/api/v1`,
        token: TEST_TOKEN,
      }),
      // Not REL-04 and REL-05: they are about delivery, which the guard has no part in.
      only: ["SIG", "ORI", "LIM", "REL-01", "REL-02", "REL-03"],
      timing: { settleMs: 300, deliveryTimeoutMs: 20_000 },
    });
  }, 180_000);
  afterAll(async () => {
    await cluster?.destroy();
  });

  it("fails exactly the checks the guard is responsible for", () => {
    if (process.env.CONFORMANCE_PRINT === "1") {
      console.log(report.results.map(formatResultLine).join("\n"));
    }
    const failed = report.results.filter((r) => r.outcome === "fail").map((r) => r.id);
    // The ActivityPub library alone allows a ±1 h window, ignores an RFC 9421 expires
    // parameter, accepts signatures that do not cover the
    // digest, and applies no media type, size or depth limit. (ORI-03 passes even here: the
    // library loads documents through the cluster's checked loaders, and an activity whose
    // remote context cannot be loaded is not acted on.)
    expect(failed).toEqual([
      "SIG-04",
      "SIG-06",
      "SIG-07",
      "SIG-10",
      "SIG-16",
      "ORI-07",
      "ORI-09",
      "LIM-01",
      "LIM-02",
    ]);
  });

  it("sees the forged activities acted on, not only a wrong status", () => {
    for (const id of ["SIG-04", "SIG-06", "SIG-07", "SIG-10", "SIG-16"]) {
      const result = report.results.find((r) => r.id === id);
      expect(result?.message).toMatch(/the input was acted on/);
    }
  });

  it("still observes every check", () => {
    expect(report.results.filter((r) => r.outcome === "not-observable")).toEqual([]);
  });
});
