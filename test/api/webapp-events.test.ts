/**
 * The web app's event stream tells every state a task passed through, in order, from what
 * one poll reads (the task and the stages of its latest run) and what it told before.
 */
import { describe, expect, it } from "vitest";
import { runStages, transitions } from "../../server/http/webapp-routes.ts";

function polled(state: string, inactive: boolean, run?: { runId: number; stages: string[] }) {
  return {
    view: {
      taskId: "t",
      taskGroupId: "g",
      name: "T",
      state,
      inactive,
      breakpoint: false,
      updatedAt: "2026-01-01T00:00:00.000Z",
    },
    run,
  };
}

describe("runStages()", () => {
  it("lists pending, running once started, then the resolution", () => {
    expect(runStages("pending", false)).toEqual(["pending"]);
    expect(runStages("running", true)).toEqual(["pending", "running"]);
    expect(runStages("completed", true)).toEqual(["pending", "running", "completed"]);
    expect(runStages("exception", false)).toEqual(["pending", "exception"]);
  });
});

describe("transitions()", () => {
  it("tells only the current state on first sight", () => {
    expect(
      transitions(undefined, polled("completed", false, { runId: 0, stages: ["pending"] })),
    ).toEqual(["completed"]);
  });

  it("tells every stage of a run that started and resolved between two polls", () => {
    const before = { runId: undefined, stage: 0, key: "unscheduled|false" };
    const now = polled("completed", false, {
      runId: 0,
      stages: runStages("completed", true),
    });
    expect(transitions(before, now)).toEqual(["pending", "running", "completed"]);
  });

  it("tells only the stages not told yet, and nothing when nothing moved", () => {
    const before = { runId: 0, stage: 2, key: "running|false" };
    const done = polled("completed", false, { runId: 0, stages: runStages("completed", true) });
    expect(transitions(before, done)).toEqual(["completed"]);
    const same = polled("running", false, { runId: 0, stages: runStages("running", true) });
    expect(transitions(before, same)).toEqual([]);
  });

  it("tells a rerun from its first stage", () => {
    const before = { runId: 0, stage: 3, key: "completed|false" };
    const rerun = polled("running", false, { runId: 1, stages: runStages("running", true) });
    expect(transitions(before, rerun)).toEqual(["pending", "running"]);
  });

  it("tells an activation and a state reached without a run", () => {
    expect(
      transitions(
        { runId: undefined, stage: 0, key: "unscheduled|true" },
        polled("unscheduled", false),
      ),
    ).toEqual(["unscheduled"]);
    expect(
      transitions(
        { runId: undefined, stage: 0, key: "unscheduled|false" },
        polled("exception", false),
      ),
    ).toEqual(["exception"]);
  });
});
