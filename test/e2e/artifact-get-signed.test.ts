/**
 * `taskweb artifact get --sign`: an operator downloads a private artifact from an upstream
 * cluster with the request signed by their own cluster's key, read from its database. The
 * upstream serves it once it accepted that cluster as a follower, and not before; unsigned,
 * the command says to sign. Runs on PostgreSQL, where the command can open the database of
 * a running cluster (the embedded one is opened by one process at a time).
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { describeServerBackend } from "../support/backends.ts";
import { runTaskweb } from "../support/cli.ts";
import {
  follow,
  startTestCluster,
  waitForResolution,
  type TestCluster,
} from "../support/clusters.ts";

describeServerBackend("artifact get --sign", (backend) => {
  let a: TestCluster;
  let b: TestCluster;
  let dir: string;
  const REPORT = `report-${randomBytes(16).toString("hex")}`;

  beforeAll(async () => {
    [a, b] = await Promise.all([
      startTestCluster(backend, "upstream"),
      startTestCluster(backend, "downstream"),
    ]);
    dir = await mkdtemp(join(tmpdir(), "taskweb-artifact-get-"));
    const A = a.current();
    await A.tasks.createTask({
      taskId: "report",
      payload: {
        command: [
          "sh",
          "-c",
          `mkdir -p "$TASKWEB_ARTIFACTS/private" && printf '%s' '${REPORT}' > "$TASKWEB_ARTIFACTS/private/report.txt"`,
        ],
      },
    });
    expect(await waitForResolution(A, "report")).toBe("completed");
  }, 60_000);
  afterAll(async () => {
    await Promise.all([a?.destroy(), b?.destroy()]);
    if (dir != null) await rm(dir, { recursive: true, force: true });
  });

  /** The downstream cluster's configuration, as its operator's shell has it. */
  const asDownstream = () => {
    const B = b.current();
    return {
      DATABASE_URL: B.config.databaseUrl ?? "",
      DATABASE_SCHEMA: B.config.databaseSchema ?? "",
      TASKWEB_NAME: B.config.name,
      TASKWEB_PUBLIC_URL: B.urls.origin,
    };
  };

  it("downloads a private artifact signed as a follower, and not unsigned or as a stranger", async () => {
    const url = a.current().urls.artifact("report", "private/report.txt");
    const dest = join(dir, "report.txt");

    const unsigned = await runTaskweb(["artifact", "get", url, "-o", dest], asDownstream());
    expect(unsigned.code).not.toBe(0);
    expect(unsigned.stderr).toMatch(/HTTP 401.*--sign/);

    const stranger = await runTaskweb(
      ["artifact", "get", url, "-o", dest, "--sign"],
      asDownstream(),
    );
    expect(stranger.code).not.toBe(0);
    expect(stranger.stderr).toMatch(/HTTP 403/);
    await expect(readFile(dest)).rejects.toThrow();

    await follow(b.current(), a.current());
    const got = await runTaskweb(
      ["artifact", "get", url, "-o", dest, "--sign", "--json"],
      asDownstream(),
    );
    expect(got.code).toBe(0);
    expect(JSON.parse(got.lines.at(-1) ?? "{}")).toMatchObject({ path: dest });
    expect(await readFile(dest, "utf8")).toBe(REPORT);
  }, 120_000);
});
