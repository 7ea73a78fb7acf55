/**
 * A running task's log is readable over HTTP while it runs, from any web process, and
 * the stream ends with the run.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { describeEachBackend } from "../support/backends.ts";
import { startTestCluster, TEST_TOKEN, waitFor, type TestCluster } from "../support/clusters.ts";

describeEachBackend("live task logs", (backend) => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await startTestCluster(backend, "logs");
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it("streams a running task's log as it grows and ends when the run resolves", async () => {
    const cluster = c.current();
    await cluster.tasks.createTask({
      taskId: "chatty",
      payload: { command: ["sh", "-c", "echo first line; sleep 1.5; echo second line"] },
    });
    await waitFor("the run to start", async () =>
      (await cluster.tasks.getTask("chatty"))?.task.state === "running" ? true : undefined,
    );
    const response = await fetch(`${cluster.urls.origin}/api/v1/tasks/chatty/runs/0/log?follow=1`, {
      headers: { authorization: `Bearer ${TEST_TOKEN}` },
    });
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let text = "";
    let stateWhenFirstSeen: string | undefined;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      if (stateWhenFirstSeen == null && text.includes("first line")) {
        stateWhenFirstSeen = (await cluster.tasks.getTask("chatty"))?.task.state;
      }
    }
    expect(stateWhenFirstSeen).toBe("running");
    expect(text).toContain("second line");
    expect((await cluster.tasks.getTask("chatty"))?.task.state).toBe("completed");
  });

  it("answers a follow request for a finished run with the whole log at once", async () => {
    const cluster = c.current();
    const response = await fetch(`${cluster.urls.origin}/api/v1/tasks/chatty/runs/0/log?follow=1`, {
      headers: { authorization: `Bearer ${TEST_TOKEN}` },
    });
    expect(await response.text()).toBe("first line\nsecond line\n");
  });

  it("answers 404 for a run that does not exist", async () => {
    const response = await fetch(
      `${c.current().urls.origin}/api/v1/tasks/chatty/runs/7/log?follow=1`,
      {
        headers: { authorization: `Bearer ${TEST_TOKEN}` },
      },
    );
    expect(response.status).toBe(404);
  });
});
