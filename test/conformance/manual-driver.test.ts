/** The manual driver asks the operator and returns what they type. */
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { manualDriver } from "../../conformance/index.ts";

describe("manual driver", () => {
  it("prompts for each action and returns the operator's answers", async () => {
    const input = new PassThrough();
    const output = new PassThrough();
    let prompts = "";
    output.on("data", (c: Buffer) => (prompts += c.toString()));
    /** Types `line` once the prompt count reaches `n` (answers typed early would be lost). */
    const answer = async (n: number, line: string) => {
      for (let i = 0; i < 200 && (prompts.match(/\[operator\]/g)?.length ?? 0) < n; i += 1) {
        await new Promise((r) => setTimeout(r, 10));
      }
      input.write(`${line}\n`);
    };
    const driver = manualDriver(input, output);
    const created = driver.createWaitingTask(["https://up.example/tasks/a"]);
    await answer(1, "waits-1");
    expect(await created).toEqual({ taskId: "waits-1" });
    const state = driver.taskState("waits-1");
    await answer(2, "unscheduled");
    expect(await state).toBe("unscheduled");
    const completing = driver.createCompletingTask();
    await answer(3, "done-1");
    await answer(4, "https://sut.example/tasks/done-1");
    expect(await completing).toEqual({
      taskId: "done-1",
      url: "https://sut.example/tasks/done-1",
    });
    const tagged = driver.createTaggedTask?.({ project: "web" });
    await answer(5, "tagged-1");
    await answer(6, "");
    expect(await tagged).toEqual({ taskId: "tagged-1" });
    const consuming = driver.createConsumingTask?.([
      { task: "https://up.example/tasks/b", artifact: "public/data.csv" },
    ]);
    await answer(7, "consumes-1");
    await answer(8, "https://sut.example/tasks/consumes-1");
    expect(await consuming).toEqual({
      taskId: "consumes-1",
      url: "https://sut.example/tasks/consumes-1",
    });
    await driver.close?.();
    expect(prompts).toMatch(/with the tags \{"project":"web"\}/);
    expect(prompts).toMatch(
      /consumes the artifact\(s\) public\/data\.csv of https:\/\/up\.example\/tasks\/b/,
    );
    expect(prompts).toMatch(/depends on https:\/\/up\.example\/tasks\/a/);
    expect(prompts).toMatch(/state of task waits-1/);
  }, 10_000);
});
