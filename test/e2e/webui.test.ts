/**
 * The web app in a real browser: Debian's headless Chromium driven by playwright-core,
 * against a cluster on loopback (PostgreSQL + Redis, one worker slot). A graph runs while the
 * page watches it, a breakpoint is resolved from the page, a graph is edited before it is
 * submitted, a running task's log is followed. Screenshots of the main views are saved under
 * test-artifacts/webui/.
 *
 * The browser is installed by `.ci/run` (`apt-get install chromium`), never downloaded here.
 */
import { mkdir } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, expect, it } from "vitest";
import { describeServerBackend } from "../support/backends.ts";
import { launchChromium, signInWith } from "../support/browser.ts";
import {
  follow,
  snapshot,
  startTestCluster,
  TEST_TOKEN,
  waitFor,
  type TestCluster,
} from "../support/clusters.ts";

/** Screenshots, kept by CI as test artifacts (the folder is gitignored). */
const SHOTS = fileURLToPath(new URL("../../test-artifacts/webui/", import.meta.url));

function sleepCommand(seconds: number, text: string): string[] {
  return ["sh", "-c", `echo ${text}; sleep ${seconds}; echo ${text}-done`];
}

/**
 * Runs in the page: sums into `window.shift` the layout shifts not caused by the user's own
 * input, from now on, or from the first paint on when `buffered`.
 */
function sumLayoutShifts(buffered: boolean): void {
  const w = window as unknown as { shift: number };
  w.shift = 0;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries() as unknown as {
      value: number;
      hadRecentInput: boolean;
    }[]) {
      if (!entry.hadRecentInput) w.shift += entry.value;
    }
  }).observe({ type: "layout-shift", buffered });
}

describeServerBackend("web app", (backend) => {
  let cluster: TestCluster;
  let upstream: TestCluster;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let origin: string;

  beforeAll(async () => {
    await mkdir(SHOTS, { recursive: true });
    [cluster, upstream, browser] = await Promise.all([
      startTestCluster(backend, "webui", {
        config: { workerConcurrency: 1, followerAcceptance: "approval" },
      }),
      startTestCluster(backend, "upstream"),
      launchChromium(),
    ]);
    await follow(cluster.current(), upstream.current());
    origin = cluster.current().urls.origin;
    context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    page = await context.newPage();
    await signInWith(page, origin, TEST_TOKEN);
  });
  afterAll(async () => {
    await browser?.close();
    await Promise.all([cluster?.destroy(), upstream?.destroy()]);
  });

  const db = () => cluster.current().database.db;

  async function submit(graph: object, at = origin): Promise<void> {
    const res = await fetch(`${at}/api/v1/task-groups`, {
      method: "POST",
      headers: { Authorization: `Bearer ${TEST_TOKEN}`, "Content-Type": "application/json" },
      body: JSON.stringify(graph),
    });
    expect(res.status).toBe(201);
  }

  async function taskStates(taskGroupId: string): Promise<Record<string, string>> {
    const rows = await db()
      .selectFrom("tasks")
      .select(["task_id", "state"])
      .where("task_group_id", "=", taskGroupId)
      .execute();
    return Object.fromEntries(rows.map((r) => [r.task_id, r.state]));
  }

  /** Opens a task group and starts recording every state its graph nodes show. */
  async function watchGroup(taskGroupId: string, count: number): Promise<void> {
    await page.goto(`${origin}/#/groups/${taskGroupId}`);
    await page
      .locator("svg.graph a.node")
      .nth(count - 1)
      .waitFor();
    await page.locator('.live[data-live="live"]').waitFor();
    await page.evaluate(() => {
      const w = window as unknown as {
        seen: Record<string, string[]>;
        marker: string;
        shift: number;
      };
      w.marker = "the same page";
      w.seen = {};
      // Layout shifts not caused by the user's own input (Chromium's layout instability API).
      w.shift = 0;
      new PerformanceObserver((list) => {
        for (const entry of list.getEntries() as unknown as {
          value: number;
          hadRecentInput: boolean;
        }[]) {
          if (!entry.hadRecentInput) w.shift += entry.value;
        }
      }).observe({ type: "layout-shift" });
      const record = (node: Element) => {
        const id = node.getAttribute("data-task-id") ?? "";
        const state = node.getAttribute("data-state") ?? "";
        const list = (w.seen[id] ??= []);
        if (list.at(-1) !== state) list.push(state);
      };
      document.querySelectorAll("svg.graph a.node").forEach(record);
      // Every value the attribute took, even two set before the observer ran.
      new MutationObserver((changes) => {
        for (const change of changes) {
          const id = (change.target as Element).getAttribute("data-task-id") ?? "";
          const list = (w.seen[id] ??= []);
          if (change.oldValue != null && list.at(-1) !== change.oldValue)
            list.push(change.oldValue);
        }
        for (const change of changes) record(change.target as Element);
      }).observe(document.querySelector("svg.graph")!, {
        subtree: true,
        attributes: true,
        attributeOldValue: true,
        attributeFilter: ["data-state"],
      });
    });
  }

  /** Controls on the page without an accessible name (aria-label, text, or a label). */
  async function unnamedControls(on: Page = page): Promise<string[]> {
    return await on.evaluate(() =>
      [...document.querySelectorAll("a, button, input, textarea, select")]
        .filter((el) => {
          const label = el.getAttribute("aria-label")?.trim();
          const text = el.textContent?.trim();
          const labelled =
            el.id !== "" && document.querySelector(`label[for="${CSS.escape(el.id)}"]`) != null;
          return !label && !text && !labelled;
        })
        .map((el) => el.outerHTML.slice(0, 80)),
    );
  }

  /**
   * Controls Playwright's accessibility queries find without a name: for each role, every
   * element `getByRole` finds minus those whose accessible name is not empty. `{}` when
   * every control is named.
   */
  async function unnamedByRole(on: Page = page): Promise<Record<string, number>> {
    const unnamed: Record<string, number> = {};
    for (const role of ["button", "link", "checkbox", "textbox", "combobox", "radio"] as const) {
      const all = await on.getByRole(role).count();
      const named = await on.getByRole(role, { name: /\S/ }).count();
      if (all !== named) unnamed[role] = all - named;
    }
    return unnamed;
  }

  /** Graph nodes whose fill is not the legend's color for their state, and the colors seen. */
  async function nodeColors(on: Page = page): Promise<{
    mismatches: string[];
    byState: Record<string, string>;
  }> {
    return await on.evaluate(() => {
      const mismatches: string[] = [];
      const byState: Record<string, string> = {};
      for (const node of document.querySelectorAll("svg.graph a.node")) {
        const state = [...node.classList].find((c) => c.startsWith("state-")) ?? "";
        const swatch = document.querySelector(`.legend .swatch.${state}`);
        const fill = getComputedStyle(node.querySelector("rect.node-box")!).fill;
        byState[state.slice("state-".length)] = fill;
        if (swatch == null || getComputedStyle(swatch).backgroundColor !== fill) {
          mismatches.push(`${node.getAttribute("data-task-id")}: ${state} ${fill}`);
        }
      }
      return { mismatches, byState };
    });
  }

  /** A node's box in the page. */
  async function nodeBox(taskId: string) {
    const box = await page
      .locator(`svg.graph a.node[data-task-id="${taskId}"] rect.node-box`)
      .boundingBox();
    expect(box).not.toBeNull();
    return box!;
  }

  /**
   * How many pixels the page is wider than the window (sideways scrolling; 0 when none), and
   * the outermost elements that stick out, to say what to fix.
   */
  async function sidewaysOverflow(on: Page): Promise<{ overflow: number; outside: string[] }> {
    return await on.evaluate(() => {
      const width = document.documentElement.clientWidth;
      const outside = [...document.querySelectorAll("main *")]
        .filter((el) => el.closest(".scroll, .graph-box") == null)
        .filter((el) => el.getBoundingClientRect().right > width + 1)
        .filter((el) => (el.parentElement?.getBoundingClientRect().right ?? 0) <= width + 1)
        .map((el) => el.outerHTML.slice(0, 100));
      return {
        overflow: document.documentElement.scrollWidth - width,
        outside: outside.slice(0, 5),
      };
    });
  }

  /** Starts summing layout shifts not caused by the user's own input. */
  async function measureShifts(on: Page = page): Promise<void> {
    await on.evaluate(sumLayoutShifts, false);
  }

  async function shifted(on: Page = page): Promise<number> {
    return await on.evaluate(() => (window as unknown as { shift: number }).shift);
  }

  async function seenStates(): Promise<{
    seen: Record<string, string[]>;
    marker: string;
    shift: number;
  }> {
    return await page.evaluate(() => {
      const w = window as unknown as {
        seen: Record<string, string[]>;
        marker: string;
        shift: number;
      };
      return { seen: w.seen, marker: w.marker, shift: w.shift };
    });
  }

  it("shows every state change of a running graph without a reload", async () => {
    await submit({
      taskGroupId: "ui-live",
      tasks: [
        {
          taskId: "ui-live-build",
          name: "Build",
          inactive: true,
          payload: {
            command: [
              "sh",
              "-c",
              'sleep 1; mkdir -p "$TASKWEB_ARTIFACTS/public"; printf "app 1.0\\n" > "$TASKWEB_ARTIFACTS/public/app.txt"',
            ],
            maxRunTime: 60,
          },
        },
        {
          taskId: "ui-live-test",
          name: "Test",
          dependencies: ["ui-live-build"],
          payload: { command: sleepCommand(1, "testing"), maxRunTime: 60 },
        },
        {
          taskId: "ui-live-lint",
          name: "Lint",
          dependencies: ["ui-live-build"],
          payload: { command: sleepCommand(1, "linting"), maxRunTime: 60 },
        },
      ],
    });
    await watchGroup("ui-live", 3);
    const inactive = page.locator('svg.graph a.node[data-task-id="ui-live-build"]');
    expect(await inactive.getAttribute("aria-label")).toBe("Build, inactive");
    // Laid out by rank: Build above the two tasks that depend on it, which sit side by side.
    const [build, test, lint] = [
      await nodeBox("ui-live-build"),
      await nodeBox("ui-live-test"),
      await nodeBox("ui-live-lint"),
    ];
    expect(test.y).toBeGreaterThan(build.y + build.height);
    expect(lint.y).toBe(test.y);
    expect(Math.abs(lint.x - test.x)).toBeGreaterThanOrEqual(test.width);
    // Colored by state, in the legend's colors.
    const before = await nodeColors();
    expect(before.mismatches).toEqual([]);
    expect(before.byState.inactive).not.toBe(before.byState.unscheduled);
    await page.screenshot({ path: `${SHOTS}graph-inactive.png` });

    // Backfill from the page: the inactive task is activated and everything runs.
    await page.getByRole("button", { name: "Activate Build" }).click();
    await page.waitForFunction(
      () => document.querySelectorAll('svg.graph a.node[data-state="completed"]').length === 3,
      undefined,
      { timeout: 45_000 },
    );
    const { seen, marker, shift } = await seenStates();
    expect(marker).toBe("the same page");
    // Nothing on the page moved while the graph ran (a tenth of what Chromium's own
    // guidance calls a good cumulative layout shift; this run measures 0).
    expect(shift).toBeLessThan(0.01);
    const lifecycle = ["unscheduled", "pending", "running", "completed"];
    expect(seen).toEqual({
      "ui-live-build": lifecycle,
      "ui-live-test": lifecycle,
      "ui-live-lint": lifecycle,
    });
    expect(await taskStates("ui-live")).toEqual({
      "ui-live-build": "completed",
      "ui-live-test": "completed",
      "ui-live-lint": "completed",
    });
    // The table beside the graph followed too, and now offers a rerun.
    await page.getByRole("button", { name: "Rerun Build" }).waitFor();
    const after = await nodeColors();
    expect(after.mismatches).toEqual([]);
    expect(Object.keys(after.byState)).toEqual(["completed"]);
    expect(after.byState.completed).not.toBe(before.byState.unscheduled);
    await page.screenshot({ path: `${SHOTS}graph-completed.png` });
    expect(await unnamedControls()).toEqual([]);
    expect(await unnamedByRole()).toEqual({});

    // Task detail: the artifact with its size, digest and a working download link.
    await page.getByRole("link", { name: "Build", exact: true }).first().click();
    await page.locator("table.artifacts").waitFor();
    const artifact = await db()
      .selectFrom("artifacts")
      .select(["sha256", "size"])
      .where("task_id", "=", "ui-live-build")
      .executeTakeFirstOrThrow();
    await expect.poll(() => page.locator("table.artifacts").innerText()).toContain(artifact.sha256);
    expect(await page.locator("table.artifacts").innerText()).toContain(
      `${Number(artifact.size)} B`,
    );
    const href = await page.getByRole("link", { name: "public/app.txt" }).getAttribute("href");
    const download = await fetch(href!);
    expect(await download.text()).toBe("app 1.0\n");
    // Its definition and its one run.
    expect(await page.locator("pre.definition").innerText()).toContain("$TASKWEB_ARTIFACTS/public");
    expect(await page.locator("table.runs tbody tr").allInnerTexts()).toEqual([
      expect.stringMatching(/^0\s+completed\s+/),
    ]);
    // The activities this cluster sent about the task: its artifact and its completion,
    // not the completions of the tasks that depend on it.
    const sent = await page.locator("ul.activities-sent > li").allInnerTexts();
    expect(sent.map((line) => line.split(" ")[0]).sort()).toEqual([
      "ArtifactPublished",
      "TaskCompleted",
    ]);
    await page.screenshot({ path: `${SHOTS}task-detail.png`, fullPage: true });
    expect(await unnamedControls()).toEqual([]);
    expect(await unnamedByRole()).toEqual({});

    // The same graph on a phone: the page fits its width, the graph scrolls inside its box.
    const phone = await context.newPage();
    await phone.setViewportSize({ width: 390, height: 844 });
    // The token is kept per tab: a new tab signs in again.
    await signInWith(phone, origin, TEST_TOKEN);
    await phone.goto(`${origin}/#/groups/ui-live`);
    await phone.locator("svg.graph a.node").nth(2).waitFor();
    const overflow = await phone.evaluate(
      () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
    );
    expect(overflow).toBeLessThanOrEqual(0);
    await phone.screenshot({ path: `${SHOTS}graph-phone.png`, fullPage: true });
    await phone.close();
  });

  it("resolves a breakpoint from the page and the graph continues", async () => {
    await submit({
      taskGroupId: "ui-gate",
      tasks: [
        { taskId: "ui-gate-approve", name: "Approve", breakpoint: true },
        {
          taskId: "ui-gate-publish",
          name: "Publish",
          dependencies: ["ui-gate-approve"],
          payload: { command: ["sh", "-c", "echo published"], maxRunTime: 60 },
        },
      ],
    });
    await watchGroup("ui-gate", 2);
    const resolve = page.getByRole("button", { name: "Resolve: completed Approve" });
    await resolve.waitFor();
    expect(await taskStates("ui-gate")).toEqual({
      "ui-gate-approve": "running",
      "ui-gate-publish": "unscheduled",
    });
    await page.screenshot({ path: `${SHOTS}breakpoint-waiting.png` });
    await resolve.click();
    await page.waitForFunction(
      () =>
        document
          .querySelector('svg.graph a.node[data-task-id="ui-gate-publish"]')
          ?.getAttribute("data-state") === "completed",
      undefined,
      { timeout: 30_000 },
    );
    const { seen, marker } = await seenStates();
    expect(marker).toBe("the same page");
    expect(seen["ui-gate-approve"]).toEqual(["running", "completed"]);
    expect(seen["ui-gate-publish"]).toEqual(["unscheduled", "pending", "running", "completed"]);
    expect(await taskStates("ui-gate")).toEqual({
      "ui-gate-approve": "completed",
      "ui-gate-publish": "completed",
    });
    await page.screenshot({ path: `${SHOTS}breakpoint-resolved.png` });
  });

  it("submits an edited graph: a task toggled off is created inactive", async () => {
    await page.goto(`${origin}/#/submit`);
    const graph = [
      "taskGroupId: ui-edit",
      "tasks:",
      "  - taskId: ui-edit-one",
      "    name: One",
      "    payload: { command: [sh, -c, 'echo one'], maxRunTime: 60 }",
      "  - taskId: ui-edit-two",
      "    name: Two",
      "    dependencies: [ui-edit-one]",
      "    payload: { command: [sh, -c, 'echo two'], maxRunTime: 60 }",
    ].join("\n");
    await page.getByLabel("Task graph (YAML or JSON)").fill(graph);
    await page.getByRole("button", { name: "Read graph" }).click();
    await page.getByRole("checkbox", { name: "Schedule ui-edit-two when submitted" }).uncheck();
    await page.locator("svg.graph a.node").nth(1).waitFor();
    await page.screenshot({ path: `${SHOTS}submit-edit.png`, fullPage: true });
    expect(await unnamedControls()).toEqual([]);
    await page.getByRole("button", { name: "Submit" }).click();
    await page.locator('main[data-route="groups"][data-ready]').waitFor();
    const rows = await db()
      .selectFrom("tasks")
      .select(["task_id", "inactive"])
      .where("task_group_id", "=", "ui-edit")
      .orderBy("task_id")
      .execute();
    expect(rows).toEqual([
      { task_id: "ui-edit-one", inactive: false },
      { task_id: "ui-edit-two", inactive: true },
    ]);
    await waitFor("ui-edit-one to complete", async () =>
      (await taskStates("ui-edit"))["ui-edit-one"] === "completed" ? true : undefined,
    );
    expect((await taskStates("ui-edit"))["ui-edit-two"]).toBe("unscheduled");
  });

  it("follows a running task's log, then reruns it and cancels the rerun from its page", async () => {
    await submit({
      taskGroupId: "ui-log",
      tasks: [
        {
          taskId: "ui-log-slow",
          name: "Slow",
          payload: {
            command: ["sh", "-c", "echo first-line; sleep 2; echo second-line"],
            maxRunTime: 60,
          },
        },
      ],
    });
    await waitFor("ui-log-slow to run", async () =>
      (await taskStates("ui-log"))["ui-log-slow"] === "running" ? true : undefined,
    );
    await page.goto(`${origin}/#/tasks/ui-log-slow`);
    await page.locator('main[data-route="tasks"][data-ready]').waitFor();
    await measureShifts();
    await page.evaluate(() => {
      (window as unknown as { marker: string }).marker = "the same page";
    });
    const log = page.locator("pre.log");
    await expect.poll(() => log.innerText(), { timeout: 10_000 }).toContain("first-line");
    // Seen while the run was still running, and the rest arrives without a reload.
    const stateWhenSeen = (await taskStates("ui-log"))["ui-log-slow"];
    await expect.poll(() => log.innerText(), { timeout: 15_000 }).toContain("second-line");
    expect(stateWhenSeen).toBe("running");
    await page.screenshot({ path: `${SHOTS}task-log.png`, fullPage: true });

    // Rerun from the page once it completed, then cancel the new run while it runs.
    const rerun = page.getByRole("button", { name: "Rerun Slow" });
    await rerun.waitFor({ timeout: 15_000 });
    // The log and the sections below it kept their places while the run ended.
    expect(await shifted()).toBeLessThan(0.01);
    await rerun.click();
    const cancel = page.getByRole("button", { name: "Cancel Slow" });
    await cancel.waitFor({ timeout: 15_000 });
    await cancel.click();
    await expect
      .poll(() => page.locator("h1 .badge").getAttribute("data-state"), { timeout: 15_000 })
      .toBe("exception");
    const runs = await db()
      .selectFrom("runs")
      .select(["run_id", "state", "reason_created", "reason_resolved"])
      .where("task_id", "=", "ui-log-slow")
      .orderBy("run_id")
      .execute();
    expect(runs).toMatchObject([
      { run_id: 0, state: "completed" },
      { run_id: 1, state: "exception", reason_created: "rerun", reason_resolved: "canceled" },
    ]);
    await page.locator("table.runs tbody tr").nth(1).waitFor();
    expect(await page.evaluate(() => (window as unknown as { marker: string }).marker)).toBe(
      "the same page",
    );
    await page.screenshot({ path: `${SHOTS}task-canceled.png`, fullPage: true });
  });

  it("draws a remote dependency as a node of the other cluster with its last known state", async () => {
    const up = upstream.current();
    const remoteUrl = up.urls.task("up-build");
    await submit({
      taskGroupId: "ui-remote",
      tasks: [
        {
          taskId: "ui-remote-deploy",
          name: "Deploy",
          dependencies: [remoteUrl],
          payload: { command: ["sh", "-c", "echo deploy"], maxRunTime: 60 },
        },
      ],
    });
    await watchGroup("ui-remote", 2);
    const remote = page.locator("svg.graph a.node-remote");
    expect(await remote.getAttribute("href")).toBe(`${up.urls.origin}/#/tasks/up-build`);
    expect(await remote.getAttribute("aria-label")).toBe(
      `Remote task on ${up.urls.origin}: up-build, state unknown`,
    );
    await submit(
      {
        taskGroupId: "up",
        tasks: [
          {
            taskId: "up-build",
            name: "Upstream build",
            payload: { command: ["sh", "-c", "sleep 1; echo built"], maxRunTime: 60 },
          },
        ],
      },
      up.urls.origin,
    );
    await page.waitForFunction(
      () =>
        document
          .querySelector('svg.graph a.node[data-task-id="ui-remote-deploy"]')
          ?.getAttribute("data-state") === "completed",
      undefined,
      { timeout: 30_000 },
    );
    await expect
      .poll(() => remote.getAttribute("data-state"), { timeout: 10_000 })
      .toBe("completed");
    expect(await remote.getAttribute("aria-label")).toBe(
      `Remote task on ${up.urls.origin}: up-build, completed`,
    );
    expect(await remote.locator("text.node-state").textContent()).toBe(
      `${new URL(up.urls.origin).host} · completed`,
    );
    const { seen, marker } = await seenStates();
    expect(marker).toBe("the same page");
    expect(seen["ui-remote-deploy"]).toEqual(["unscheduled", "pending", "running", "completed"]);
    await page.screenshot({ path: `${SHOTS}graph-remote.png` });

    // What the page drew from: the graph route and the group's states as JSON.
    const get = async (path: string) =>
      (await (
        await fetch(`${origin}/api/v1${path}`, {
          headers: { Authorization: `Bearer ${TEST_TOKEN}` },
        })
      ).json()) as Record<string, unknown>;
    const graph = await get("/task-groups/ui-remote/graph");
    expect(graph.edges).toEqual([{ from: remoteUrl, to: "ui-remote-deploy" }]);
    expect(graph.remote).toMatchObject([
      { url: remoteUrl, origin: up.urls.origin, label: "up-build", state: "completed" },
    ]);
    expect(await get("/task-groups/ui-remote/events")).toMatchObject({
      tasks: [{ taskId: "ui-remote-deploy", state: "completed" }],
    });

    // The task's page lists the activity it received from the other cluster, by its id.
    const upstreamSent = await up.database.db
      .selectFrom("outbox")
      .select(["activity_id", "types", "activity"])
      .orderBy("seq")
      .execute();
    const completion = upstreamSent.find(
      (a) => a.types.includes("TaskCompleted") && JSON.stringify(a.activity).includes(remoteUrl),
    );
    expect(completion).toBeDefined();
    await page.getByRole("link", { name: "Deploy", exact: true }).first().click();
    await page.locator('main[data-route="tasks"][data-ready]').waitFor();
    const received = page.locator(
      `ul.activities-received > li[data-activity-id="${completion!.activity_id}"]`,
    );
    await received.waitFor();
    expect(await page.locator("ul.activities-received > li").count()).toBe(1);
    const line = await received.innerText();
    expect(line).toContain(`TaskCompleted ${completion!.activity_id} from ${up.urls.actor}`);
    expect(line).toContain(`about its remote dependency ${remoteUrl}`);
    expect(
      await received.getByRole("link", { name: up.urls.actor, exact: true }).getAttribute("href"),
    ).toBe(up.urls.actor);
    // Its dependency links to the task in the other cluster's web app.
    expect(
      await page
        .locator("dl.summary")
        .getByRole("link", { name: remoteUrl, exact: true })
        .getAttribute("href"),
    ).toBe(`${up.urls.origin}/#/tasks/up-build`);
    expect(await page.locator("ul.remote-states").innerText()).toContain(
      `State completed (by activity) of ${remoteUrl}`,
    );
    await page.screenshot({ path: `${SHOTS}task-received.png`, fullPage: true });
    expect(await unnamedByRole()).toEqual({});
  });

  it("shows a hook on the other cluster's artifact and the task group it fired", async () => {
    const up = upstream.current();
    const created = await fetch(`${origin}/api/v1/hooks/ui-on-report`, {
      method: "PUT",
      headers: { Authorization: `Bearer ${TEST_TOKEN}`, "Content-Type": "application/json" },
      body: JSON.stringify({
        description: "checks every report of the upstream",
        filter: { cluster: up.urls.actor, artifactName: "reports/*" },
        template: {
          tasks: [
            {
              taskId: "check",
              name: "Check report",
              inputs: [
                { task: "{{event.task}}", artifact: "{{event.artifact.name}}", path: "r.txt" },
              ],
              payload: { command: ["sh", "-c", 'cat "$TASKWEB_INPUTS/r.txt"'], maxRunTime: 60 },
            },
          ],
        },
      }),
    });
    expect(created.status).toBe(201);
    await page.goto(`${origin}/#/federation`);
    await page.locator('main[data-route="federation"][data-ready]').waitFor();
    const hook = page.locator('ul.hooks > li[data-hook-id="ui-on-report"]');
    expect(await hook.innerText()).toContain("Not fired yet.");
    expect(await hook.locator("p.filter").innerText()).toBe(
      `On: cluster ${up.urls.actor}, activity ArtifactPublished, artifactName reports/*`,
    );

    // The upstream publishes a matching artifact: the follower's hook fires.
    await submit(
      {
        taskGroupId: "up-report",
        tasks: [
          {
            taskId: "up-report",
            name: "Report",
            payload: {
              command: [
                "sh",
                "-c",
                'mkdir -p "$TASKWEB_ARTIFACTS/reports"; echo all-good > "$TASKWEB_ARTIFACTS/reports/day.txt"',
              ],
              maxRunTime: 60,
            },
          },
        ],
      },
      up.urls.origin,
    );
    const fire = await waitFor("the hook to fire", async () => {
      const row = await db()
        .selectFrom("hook_fires")
        .selectAll()
        .where("hook_id", "=", "ui-on-report")
        .executeTakeFirst();
      return row?.state === "fired" && row.task_group_id != null ? row : undefined;
    });
    const groupId = fire.task_group_id!;
    await page.reload();
    await page.locator('main[data-route="federation"][data-ready]').waitFor();
    const fired = hook.locator(`ul.fires > li[data-fire-id="${fire.fire_id}"]`);
    await fired.waitFor();
    expect(await hook.locator("ul.fires > li").count()).toBe(1);
    expect(await fired.getAttribute("data-state")).toBe("fired");
    expect(await fired.innerText()).toContain(`on ${up.urls.actor}'s ArtifactPublished`);
    expect(await fired.getByRole("link", { name: "ArtifactPublished" }).getAttribute("href")).toBe(
      fire.activity_id,
    );
    const groupLink = fired.getByRole("link", { name: groupId, exact: true });
    expect(await groupLink.getAttribute("href")).toBe(`#/groups/${encodeURIComponent(groupId)}`);
    await hook.scrollIntoViewIfNeeded();
    await page.screenshot({ path: `${SHOTS}federation-hooks.png`, fullPage: true });
    expect(await unnamedByRole()).toEqual({});

    // The link opens the fired group; its task ran on the upstream's artifact.
    await groupLink.click();
    await page.locator('main[data-route="groups"][data-ready]').waitFor();
    const node = page.locator(`svg.graph a.node[data-task-id="${groupId}-check"]`);
    await node.waitFor();
    await expect.poll(() => node.getAttribute("data-state"), { timeout: 30_000 }).toBe("completed");
    // Its page names the activity that fired the hook, received from the upstream.
    await page.getByRole("link", { name: "Check report", exact: true }).click();
    await page.locator('main[data-route="tasks"][data-ready]').waitFor();
    const why = page.locator(
      `ul.activities-received > li[data-activity-id="${fire.activity_id}"][data-about="hook"]`,
    );
    await why.waitFor();
    expect(await why.innerText()).toContain(
      `ArtifactPublished ${fire.activity_id} from ${up.urls.actor}`,
    );
    await expect.poll(() => page.locator("pre.log").innerText()).toContain("all-good");
  });

  it("shows the task groups; rejects and approves follow requests, and shows followers, following and delivery health", async () => {
    await page.goto(`${origin}/#/`);
    await page.locator('main[data-route=""][data-ready]').waitFor();
    for (const id of ["ui-live", "ui-gate", "ui-edit", "ui-log", "ui-remote"]) {
      await page.getByRole("link", { name: id, exact: true }).waitFor();
    }
    // A group submitted meanwhile appears without a reload.
    await page.evaluate(() => {
      (window as unknown as { marker: string }).marker = "the list";
    });
    await submit({
      taskGroupId: "ui-appears",
      tasks: [{ taskId: "ui-appears", payload: { command: ["true"], maxRunTime: 60 } }],
    });
    await page.getByRole("link", { name: "ui-appears", exact: true }).waitFor({ timeout: 15_000 });
    expect(await page.evaluate(() => (window as unknown as { marker: string }).marker)).toBe(
      "the list",
    );
    await page.screenshot({ path: `${SHOTS}task-groups.png`, fullPage: true });
    expect(await unnamedControls()).toEqual([]);
    expect(await unnamedByRole()).toEqual({});

    // The upstream asks to follow this cluster, which approves followers by hand.
    const up = upstream.current();
    await up.federation.follow(cluster.current().urls.actor);
    const followerState = async () =>
      (
        await db()
          .selectFrom("followers")
          .select("state")
          .where("actor_id", "=", up.urls.actor)
          .executeTakeFirst()
      )?.state;
    await waitFor("the follow request", async () =>
      (await followerState()) === "pending" ? true : undefined,
    );
    const upstreamFollowing = async () =>
      (
        await up.database.db
          .selectFrom("following")
          .select("state")
          .where("actor_id", "=", cluster.current().urls.actor)
          .executeTakeFirst()
      )?.state;
    await page.goto(`${origin}/#/federation`);
    await page.locator('main[data-route="federation"][data-ready]').waitFor();
    await page.getByRole("heading", { name: "Delivery health per peer" }).waitFor();
    // The first request is rejected from the page, the second approved.
    const reject = page.getByRole("button", { name: `Reject ${up.urls.actor}` });
    await reject.waitFor();
    await page.screenshot({ path: `${SHOTS}federation.png`, fullPage: true });
    expect(await unnamedControls()).toEqual([]);
    expect(await unnamedByRole()).toEqual({});
    await reject.click();
    await waitFor("the upstream to be rejected", async () =>
      (await upstreamFollowing()) === "rejected" ? true : undefined,
    );
    // A rejected request leaves no follower behind.
    expect(await followerState()).toBeUndefined();
    await reject.waitFor({ state: "detached" });
    await up.federation.follow(cluster.current().urls.actor);
    await waitFor("the second follow request", async () =>
      (await followerState()) === "pending" ? true : undefined,
    );
    await page.reload();
    await page.locator('main[data-route="federation"][data-ready]').waitFor();
    const approve = page.getByRole("button", { name: `Approve ${up.urls.actor}` });
    await approve.click();
    await waitFor("the upstream to be accepted", async () =>
      (await upstreamFollowing()) === "accepted" ? true : undefined,
    );
    expect(await followerState()).toBe("accepted");
    await page.getByRole("button", { name: `Approve ${up.urls.actor}` }).waitFor({
      state: "detached",
    });
    const section = (name: string) => page.locator(`[data-section="${name}"]`);
    await expect
      .poll(() => section("followers").innerText())
      .toContain(`${up.urls.actor} (accepted)`);
    expect(await section("following").innerText()).toContain(`${up.urls.actor} (accepted)`);
    expect(await section("pending").innerText()).toBe("None.");

    // A completion this cluster sends its new follower shows in the delivery health.
    await submit({
      taskGroupId: "ui-deliver",
      tasks: [{ taskId: "ui-deliver", payload: { command: ["true"], maxRunTime: 60 } }],
    });
    const delivered = await waitFor("a delivery to the upstream", async () => {
      const row = await db()
        .selectFrom("deliveries")
        .select(["inbox", "delivered_at"])
        .where("delivered_at", "is not", null)
        .executeTakeFirst();
      return row ?? undefined;
    });
    expect(new URL(delivered.inbox).origin).toBe(up.urls.origin);
    await page.reload();
    await page.locator('main[data-route="federation"][data-ready]').waitFor();
    const peer = section("deliveries").locator("table.peers tbody tr", {
      hasText: delivered.inbox,
    });
    const cells = await peer.locator("td").allInnerTexts();
    expect(cells[0]).toBe(delivered.inbox);
    expect(cells[1]).not.toBe("—");
    expect(cells.slice(3, 5)).toEqual(["0", "closed"]);
    await page.screenshot({ path: `${SHOTS}federation-followed.png`, fullPage: true });
  });

  it("fits a phone's width on every view, without layout shifts, with every control named", async () => {
    const phone = await context.newPage();
    await phone.setViewportSize({ width: 390, height: 844 });
    // Layout shifts from the first paint on, summed per view.
    await phone.addInitScript(sumLayoutShifts, true);
    await signInWith(phone, origin, TEST_TOKEN);
    // A slow mobile link: every API call waits before it is sent, so a view that drew
    // before its data arrived would be seen moving.
    await phone.route("**/api/v1/**", async (route) => {
      await new Promise((r) => setTimeout(r, 120));
      await route.continue();
    });
    const views = [
      ["task-groups", "#/", ""],
      ["graph", "#/groups/ui-live", "groups"],
      ["task", "#/tasks/ui-live-build", "tasks"],
      ["task-received", "#/tasks/ui-remote-deploy", "tasks"],
      ["federation", "#/federation", "federation"],
      ["submit", "#/submit", "submit"],
    ] as const;
    const problems: Record<string, unknown> = {};
    for (const [name, hash, route] of views) {
      await phone.evaluate(() => {
        (window as unknown as { shift: number }).shift = 0;
      });
      await phone.goto(`${origin}/${hash}`);
      await phone.locator(`main[data-route="${route}"][data-ready]`).waitFor();
      if (route === "groups") await phone.locator("svg.graph a.node").nth(2).waitFor();
      if (route === "tasks")
        await phone.locator("ul.activities-sent, ul.activities-received").first().waitFor();
      // A view is ready once everything it loads is in; nothing it added moved anything.
      const shift = await shifted(phone);
      const { overflow, outside } = await sidewaysOverflow(phone);
      const unnamed = await unnamedByRole(phone);
      if (overflow > 0 || shift >= 0.001 || Object.keys(unnamed).length > 0) {
        problems[name] = { overflow, outside, shift, unnamed };
      }
      await phone.screenshot({ path: `${SHOTS}phone-${name}.png`, fullPage: true });
    }
    expect(problems).toEqual({});
    await phone.close();
  });

  it("shows a client only what its scopes allow, and the cluster refuses a forged request", async () => {
    await submit({
      taskGroupId: "ui-scoped",
      tasks: [
        { taskId: "ui-scoped-approve", name: "Approve", breakpoint: true },
        {
          taskId: "ui-scoped-ship",
          name: "Ship",
          dependencies: ["ui-scoped-approve"],
          payload: { command: ["sh", "-c", "echo ship"], maxRunTime: 60 },
        },
      ],
    });
    await waitFor("the breakpoint to wait", async () =>
      (await taskStates("ui-scoped"))["ui-scoped-approve"] === "running" ? true : undefined,
    );
    // Clients as an administrator creates them, through the API.
    const createClient = async (clientId: string, scopes: string[]) => {
      const res = await fetch(`${origin}/api/v1/clients/${clientId}`, {
        method: "PUT",
        headers: { Authorization: `Bearer ${TEST_TOKEN}`, "Content-Type": "application/json" },
        body: JSON.stringify({ scopes }),
      });
      expect(res.status).toBe(201);
      return (await res.json()) as { token: string };
    };
    const viewer = await createClient("viewer", [
      "taskweb:task-group:list",
      "taskweb:task:list",
      "taskweb:task-group:read:*",
      "taskweb:task:read:*",
    ]);
    const approver = await createClient("approver", [
      "taskweb:task-group:read:ui-scoped",
      "taskweb:task:resolve:ui-scoped-approve",
    ]);
    const nobody = await createClient("nobody", []);

    // A fresh browser context: nothing of the admin's session is shared.
    const other = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const tab = await other.newPage();

    // A token the cluster does not know signs nobody in.
    await tab.goto(`${origin}/#/signin`);
    await tab.getByLabel("API token").fill("not-a-token-of-this-cluster");
    await tab.getByRole("button", { name: "Sign in" }).click();
    await expect.poll(() => tab.getByRole("alert").innerText()).toContain("That token was refused");
    expect(await tab.evaluate(() => sessionStorage.getItem("taskweb.token"))).toBeNull();
    expect(await tab.getByRole("heading", { name: "Sign in" }).isVisible()).toBe(true);

    // Read-only: everything visible, not one action.
    await signInWith(tab, origin, viewer.token);
    await tab.getByRole("link", { name: "ui-scoped", exact: true }).waitFor();
    expect(await tab.getByRole("link", { name: "Submit a graph" }).count()).toBe(0);
    expect(await tab.locator('nav a[href="#/submit"]').isHidden()).toBe(true);
    await tab.goto(`${origin}/#/groups/ui-scoped`);
    await tab.locator('.live[data-live="live"]').waitFor();
    await tab.locator('table.tasks tr[data-task-id="ui-scoped-ship"]').waitFor();
    expect(await tab.locator("main button").count()).toBe(0);
    await tab.screenshot({ path: `${SHOTS}read-only.png` });
    await tab.goto(`${origin}/#/tasks/ui-scoped-approve`);
    await tab.locator('main[data-route="tasks"][data-ready]').waitFor();
    await tab.getByRole("heading", { name: /Approve/ }).waitFor();
    expect(await tab.locator("main button").count()).toBe(0);

    // A forged request from the read-only client's page changes nothing.
    const before = await snapshot(cluster.current());
    const forged = await tab.evaluate(async () => {
      const token = sessionStorage.getItem("taskweb.token");
      const answers = [];
      for (const action of ["resolve", "cancel"]) {
        const res = await fetch(`/api/v1/tasks/ui-scoped-approve/${action}`, {
          method: "POST",
          headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
          body: JSON.stringify({ state: "completed" }),
        });
        answers.push({ status: res.status, code: ((await res.json()) as { code: string }).code });
      }
      return answers;
    });
    expect(forged).toEqual([
      { status: 403, code: "InsufficientScopes" },
      { status: 403, code: "InsufficientScopes" },
    ]);
    // Nor may a client without the group's read scope follow its changes.
    const stream = await fetch(`${origin}/api/v1/task-groups/ui-scoped/events`, {
      headers: { Authorization: `Bearer ${nobody.token}`, Accept: "text/event-stream" },
    });
    expect(stream.status).toBe(403);
    await stream.body?.cancel();
    await new Promise((r) => setTimeout(r, 500));
    expect(await snapshot(cluster.current())).toEqual(before);

    // One scope for one action on one task: exactly those buttons.
    await signInWith(tab, origin, approver.token);
    await tab.goto(`${origin}/#/groups/ui-scoped`);
    await tab.locator('.live[data-live="live"]').waitFor();
    await tab.getByRole("button", { name: "Resolve: completed Approve" }).waitFor();
    expect((await tab.locator("main button").allInnerTexts()).map((t) => t.trim()).sort()).toEqual([
      "Resolve: completed",
      "Resolve: failed",
    ]);

    // No scopes: nothing to see and nothing to press.
    await signInWith(tab, origin, nobody.token);
    await tab.getByRole("heading", { name: "Nothing to show" }).waitFor();
    expect(await tab.locator("main button").count()).toBe(0);
    await tab.goto(`${origin}/#/groups/ui-scoped`);
    await tab.locator('main[data-route="groups"][data-ready]').waitFor();
    expect(await tab.locator("svg.graph").count()).toBe(0);
    expect(await tab.locator("main button").count()).toBe(0);
    await tab.screenshot({ path: `${SHOTS}no-scopes.png` });
    // Nor anything of the federation: no follower, no request to approve, no hook.
    await tab.goto(`${origin}/#/federation`);
    await tab.locator('main[data-route="federation"][data-ready]').waitFor();
    expect(await tab.locator("main button").count()).toBe(0);
    expect(await tab.locator("main [data-section]").allInnerTexts()).toEqual([
      "Your token may not read follow requests.",
      "Your token may not read this cluster's followers.",
      "Your token may not read the clusters this one follows.",
      "Your token may not read delivery health.",
      "Your token may not read hooks.",
    ]);
    await tab.screenshot({ path: `${SHOTS}no-scopes-federation.png` });
    await other.close();
    expect(await taskStates("ui-scoped")).toEqual({
      "ui-scoped-approve": "running",
      "ui-scoped-ship": "unscheduled",
    });
  });
});
