/**
 * Validation of a submitted task definition: every problem names the field it is about
 * (so a client can point at it), all problems are reported at once, and a valid definition
 * comes back with every default filled.
 */
import { describe, expect, it } from "vitest";
import {
  TASK_LIMITS,
  TASK_PRIORITIES,
  validateTaskDefinition,
  type DefinitionResult,
} from "../../server/domain/task-definition.ts";

const NOW = new Date("2030-06-01T12:00:00.000Z");
const REMOTE = "http://127.0.0.1:7301/clusters/a/tasks/build";

function validate(input: unknown, newId: () => string = () => "generated-id"): DefinitionResult {
  return validateTaskDefinition(input, newId, NOW);
}

/** A definition that is valid on its own, to be broken one field at a time. */
function base(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { taskId: "t1", payload: { command: ["true"] }, ...extra };
}

/** The fields named by the problems of an invalid result (fails the test on a valid one). */
function problemFields(result: DefinitionResult): string[] {
  if (result.ok) throw new Error(`expected problems, got ${JSON.stringify(result.value)}`);
  return result.problems.map((p) => p.field);
}

function valueOf(result: DefinitionResult) {
  if (!result.ok)
    throw new Error(`expected a valid definition: ${JSON.stringify(result.problems)}`);
  return result.value;
}

describe("validateTaskDefinition", () => {
  it("fills every default for a definition with only a command", () => {
    const value = valueOf(validate({ payload: { command: ["make", "test"] } }));
    expect(value).toEqual({
      taskId: "generated-id",
      taskGroupId: "generated-id",
      name: "generated-id",
      payload: {
        command: ["make", "test"],
        env: {},
        maxRunTime: TASK_LIMITS.defaultMaxRunTimeSeconds,
      },
      dependencies: [],
      requires: "all-completed",
      inputs: [],
      deadline: new Date(NOW.getTime() + TASK_LIMITS.defaultDeadlineMs).toISOString(),
      retries: TASK_LIMITS.defaultRetries,
      inactive: false,
      priority: "lowest",
      breakpoint: false,
      tags: {},
    });
  });

  it("asks for a new id only when the client gave none", () => {
    let asked = 0;
    const newId = () => {
      asked++;
      return "fresh";
    };
    expect(valueOf(validate(base(), newId)).taskId).toBe("t1");
    expect(asked).toBe(0);
    expect(valueOf(validate({ payload: { command: ["true"] } }, newId)).taskId).toBe("fresh");
    expect(asked).toBe(1);
  });

  it("keeps the values a client gave instead of the defaults", () => {
    const deadline = new Date(NOW.getTime() + 3600_000).toISOString();
    const value = valueOf(
      validate({
        taskId: "build-42",
        taskGroupId: "group-7",
        name: "Build #42",
        payload: { command: ["sh", "-c", "make"], env: { CI: "1" }, maxRunTime: 60 },
        requires: "all-resolved",
        deadline,
        retries: 0,
      }),
    );
    expect(value.taskGroupId).toBe("group-7");
    expect(value.name).toBe("Build #42");
    expect(value.payload).toEqual({
      command: ["sh", "-c", "make"],
      env: { CI: "1" },
      maxRunTime: 60,
    });
    expect(value.requires).toBe("all-resolved");
    expect(value.deadline).toBe(deadline);
    expect(value.retries).toBe(0);
  });

  it("refuses a value that is not a JSON object, naming the whole definition", () => {
    for (const input of [null, "task", 42, [base()]]) {
      expect(problemFields(validate(input))).toEqual([""]);
    }
  });

  it.each([
    ["contains a space", "has space"],
    ["is empty", ""],
    ["is longer than 64 characters", "x".repeat(65)],
    ["contains a slash", "a/b"],
    ["is not a string", 42],
  ])("refuses a taskId that %s", (_why, taskId) => {
    expect(problemFields(validate(base({ taskId })))).toContain("taskId");
  });

  it("accepts a taskId of exactly 64 allowed characters", () => {
    const taskId = "aZ09-_".repeat(10) + "abcd";
    expect(valueOf(validate(base({ taskId }))).taskId).toBe(taskId);
  });

  it("refuses a bad taskGroupId and name under their own fields", () => {
    const fields = problemFields(validate(base({ taskGroupId: "no spaces", name: "" })));
    expect(fields).toEqual(expect.arrayContaining(["taskGroupId", "name"]));
  });

  it("requires a payload", () => {
    expect(problemFields(validate({ taskId: "t1" }))).toEqual(["payload"]);
  });

  it.each([
    ["an empty command", []],
    ["a command that is a string", "make test"],
    ["a command with a non-string", ["echo", 1]],
    ["a command with a NUL byte", ["echo", "a\u0000b"]],
    ["a command longer than the limit", Array(TASK_LIMITS.maxCommandArgs + 1).fill("x")],
  ])("refuses %s under payload.command", (_why, command) => {
    expect(problemFields(validate(base({ payload: { command } })))).toEqual(["payload.command"]);
  });

  it.each([
    ["starts with a digit", { "1BAD": "x" }],
    ["contains a dash", { "MY-VAR": "x" }],
    ["has a non-string value", { GOOD: 1 }],
  ])("refuses an env whose variable %s under payload.env", (_why, env) => {
    expect(problemFields(validate(base({ payload: { command: ["true"], env } })))).toEqual([
      "payload.env",
    ]);
  });

  it.each([0, -1, 1.5, TASK_LIMITS.maxRunTimeSeconds + 1, "60"])(
    "refuses maxRunTime %j under payload.maxRunTime",
    (maxRunTime) => {
      expect(problemFields(validate(base({ payload: { command: ["true"], maxRunTime } })))).toEqual(
        ["payload.maxRunTime"],
      );
    },
  );

  it.each([1, TASK_LIMITS.maxRunTimeSeconds])("accepts maxRunTime %j at the edge", (maxRunTime) => {
    expect(valueOf(validate(base({ payload: { command: ["true"], maxRunTime } }))).payload).toEqual(
      { command: ["true"], env: {}, maxRunTime },
    );
  });

  it("keeps payload.secrets, names only, and leaves it out when empty", () => {
    const secrets = { NPM_TOKEN: "npm/publish-token", DEPLOY_KEY: "deploy.key" };
    expect(
      valueOf(validate(base({ payload: { command: ["true"], env: { CI: "1" }, secrets } })))
        .payload,
    ).toEqual({ command: ["true"], env: { CI: "1" }, secrets, maxRunTime: 3600 });
    const empty = valueOf(validate(base({ payload: { command: ["true"], secrets: {} } })));
    expect(Object.keys(empty.payload ?? {})).toEqual(["command", "env", "maxRunTime"]);
  });

  it.each([
    ["is not an object", ["npm/token"], ["payload.secrets"]],
    ["maps to a non-string", { TOKEN: 1 }, ["payload.secrets.TOKEN"]],
    ["maps to a bad secret name", { TOKEN: "a//b" }, ["payload.secrets.TOKEN"]],
    ["maps to a '..' segment", { TOKEN: "../x" }, ["payload.secrets.TOKEN"]],
    ["has a bad variable name", { "MY-VAR": "x" }, ['payload.secrets["MY-VAR"]']],
    [
      "names more secrets than the limit",
      Object.fromEntries(
        Array.from({ length: TASK_LIMITS.maxSecrets + 1 }, (_, i) => [`V${i}`, "x"]),
      ),
      ["payload.secrets"],
    ],
  ])("refuses payload.secrets that %s", (_why, secrets, fields) => {
    expect(problemFields(validate(base({ payload: { command: ["true"], secrets } })))).toEqual(
      fields,
    );
  });

  it("refuses a variable both in payload.env and payload.secrets, naming it", () => {
    const result = validate(
      base({ payload: { command: ["true"], env: { TOKEN: "x" }, secrets: { TOKEN: "t/x" } } }),
    );
    expect(problemFields(result)).toEqual(["payload.secrets.TOKEN"]);
    expect(result.ok ? "" : result.problems[0]?.message).toMatch(/also set in payload\.env/);
  });

  it("refuses an unknown payload field under its own name", () => {
    expect(problemFields(validate(base({ payload: { command: ["true"], image: "x" } })))).toEqual([
      "payload.image",
    ]);
  });

  it("refuses an unknown top-level field under its own name", () => {
    expect(problemFields(validate(base({ schedulerId: "x" })))).toEqual(["schedulerId"]);
  });

  it("takes Taskcluster's seven priorities, lowest by default, and refuses others", () => {
    for (const priority of TASK_PRIORITIES) {
      expect(valueOf(validate(base({ priority }))).priority).toBe(priority);
    }
    expect(valueOf(validate(base())).priority).toBe("lowest");
    for (const priority of ["normal", "HIGH", 1, false]) {
      expect(problemFields(validate(base({ priority })))).toEqual(["priority"]);
    }
  });

  it("takes a breakpoint task without a payload, and refuses one with a payload or inputs", () => {
    const value = valueOf(validate({ taskId: "gate", breakpoint: true, dependencies: ["a"] }));
    expect(value).toMatchObject({ breakpoint: true, payload: null, dependencies: ["a"] });
    expect(problemFields(validate(base({ breakpoint: true })))).toEqual(["payload"]);
    expect(
      problemFields(
        validate({
          taskId: "gate",
          breakpoint: true,
          inputs: [{ task: "a", artifact: "public/x" }],
        }),
      ),
    ).toEqual(["inputs[0]"]);
    expect(problemFields(validate(base({ breakpoint: "yes" })))).toEqual(["breakpoint"]);
    // Without breakpoint, a payload is still required.
    expect(problemFields(validate({ taskId: "t" }))).toEqual(["payload"]);
  });

  it("refuses an inactive flag that is not a boolean", () => {
    expect(problemFields(validate(base({ inactive: "yes" })))).toEqual(["inactive"]);
    const value = validate(base({ inactive: true }));
    expect(value.ok && value.value.inactive).toBe(true);
  });

  it("refuses a task that depends on itself, naming the entry", () => {
    const result = validate(base({ dependencies: ["other", "t1"] }));
    expect(problemFields(result)).toEqual(["dependencies[1]"]);
    expect(!result.ok && result.problems[0]?.message).toMatch(/itself/);
  });

  it("refuses a task that takes its own artifact as input", () => {
    const result = validate(base({ inputs: [{ task: "t1", artifact: "public/x" }] }));
    expect(problemFields(result)).toEqual(["inputs[0].task"]);
  });

  it.each([
    ["an ftp URL", "ftp://127.0.0.1/clusters/a/tasks/x"],
    ["a URL with a fragment", `${REMOTE}#frag`],
    ["text that is neither id nor URL", "not a url!"],
    ["a non-string", 7],
  ])("refuses a dependency that is %s, naming its index", (_why, dependency) => {
    expect(problemFields(validate(base({ dependencies: ["ok-id", dependency] })))).toEqual([
      "dependencies[1]",
    ]);
  });

  it("refuses dependencies that are not an array", () => {
    expect(problemFields(validate(base({ dependencies: "a" })))).toEqual(["dependencies"]);
  });

  it("refuses more dependencies than the limit", () => {
    const dependencies = Array.from(
      { length: TASK_LIMITS.maxDependencies + 1 },
      (_, i) => `dep-${i}`,
    );
    expect(problemFields(validate(base({ dependencies })))).toEqual(["dependencies"]);
  });

  it("keeps each dependency once and adds every input's task as a dependency", () => {
    const value = valueOf(
      validate(
        base({
          dependencies: ["a", REMOTE, "a"],
          inputs: [
            { task: REMOTE, artifact: "public/app.tar.gz" },
            { task: "b", artifact: "logs/out.txt", path: "b/out.txt" },
          ],
        }),
      ),
    );
    expect(value.dependencies).toEqual(["a", REMOTE, "b"]);
    expect(value.inputs).toEqual([
      { task: REMOTE, artifact: "public/app.tar.gz", path: "app.tar.gz" },
      { task: "b", artifact: "logs/out.txt", path: "b/out.txt" },
    ]);
  });

  it("refuses two inputs saved at the same path, naming the second", () => {
    const result = validate(
      base({
        inputs: [
          { task: "a", artifact: "public/x.bin" },
          { task: "b", artifact: "other/x.bin" },
        ],
      }),
    );
    expect(problemFields(result)).toEqual(["inputs[1].path"]);
  });

  it.each(["../x", "a/../../x", "/etc/passwd", "a//b", "./x", "a\\b"])(
    "refuses the unsafe input path %j",
    (path) => {
      expect(
        problemFields(validate(base({ inputs: [{ task: "a", artifact: "public/x", path }] }))),
      ).toEqual(["inputs[0].path"]);
    },
  );

  it("refuses an unsafe artifact name and an input that is not an object", () => {
    const result = validate(base({ inputs: [{ task: "a", artifact: "../secret" }, "a"] }));
    expect(problemFields(result)).toEqual(["inputs[0].artifact", "inputs[1]"]);
  });

  it("refuses a requires that is neither all-completed nor all-resolved", () => {
    expect(problemFields(validate(base({ requires: "any" })))).toEqual(["requires"]);
  });

  it.each([
    ["in the past", new Date(NOW.getTime() - 1000).toISOString(), /future/],
    ["now", NOW.toISOString(), /future/],
    [
      "more than 5 days ahead",
      new Date(NOW.getTime() + TASK_LIMITS.maxDeadlineMs + 1000).toISOString(),
      /5 days/,
    ],
    ["not a date", "tomorrow", /ISO 8601/],
    ["a number", NOW.getTime() + 3600_000, /ISO 8601/],
  ])("refuses a deadline %s", (_why, deadline, message) => {
    const result = validate(base({ deadline }));
    expect(problemFields(result)).toEqual(["deadline"]);
    expect(!result.ok && result.problems[0]?.message).toMatch(message);
  });

  it("accepts a deadline exactly 5 days ahead", () => {
    const deadline = new Date(NOW.getTime() + TASK_LIMITS.maxDeadlineMs).toISOString();
    expect(valueOf(validate(base({ deadline }))).deadline).toBe(deadline);
  });

  it.each([-1, TASK_LIMITS.maxRetries + 1, 2.5, "3"])("refuses retries %j", (retries) => {
    expect(problemFields(validate(base({ retries })))).toEqual(["retries"]);
  });

  it.each([0, TASK_LIMITS.maxRetries])("accepts retries %j at the edge", (retries) => {
    expect(valueOf(validate(base({ retries }))).retries).toBe(retries);
  });

  it("reports every problem of a definition at once", () => {
    const fields = problemFields(
      validate({
        taskId: "bad id",
        payload: { command: [], maxRunTime: 0 },
        retries: 99,
        requires: "some",
        extra: true,
      }),
    );
    expect(fields).toEqual(
      expect.arrayContaining([
        "extra",
        "taskId",
        "payload.command",
        "payload.maxRunTime",
        "requires",
        "retries",
      ]),
    );
  });

  it("gives every problem a message saying what to do", () => {
    const result = validate({ taskId: "bad id", payload: { command: "x" }, deadline: "soon" });
    expect(result.ok).toBe(false);
    for (const problem of result.ok ? [] : result.problems) {
      expect(problem.message.length).toBeGreaterThan(10);
    }
  });
});

describe("a join", () => {
  const A = "http://127.0.0.1:7301/clusters/a";
  const B = "http://127.0.0.1:7302/clusters/b";

  it("keeps the deadline as given, fills atDeadline, and normalises cluster URLs", () => {
    const value = valueOf(
      validate(
        base({
          join: {
            clusters: [A, "HTTP://127.0.0.1:7302/clusters/b"],
            artifact: "public/*",
            deadline: "PT30M",
          },
        }),
      ),
    );
    expect(value.join).toEqual({
      clusters: [A, B],
      artifact: "public/*",
      deadline: "PT30M",
      atDeadline: "fail",
    });
  });

  it("takes durations of days, hours, minutes and seconds, and date-times", () => {
    for (const deadline of ["P1D", "PT1H30M", "PT1.5S", "P1DT2H", "2030-06-02T00:00:00Z"]) {
      expect(
        validate(
          base({
            deadline: "2030-06-04T00:00:00Z",
            join: { clusters: [A], tags: { p: "1" }, deadline },
          }),
        ).ok,
        deadline,
      ).toBe(true);
    }
    for (const deadline of ["P", "PT", "P1W", "1h", "2030-06-01", "PT0S", "2030-05-31T00:00:00Z"]) {
      expect(
        problemFields(validate(base({ join: { clusters: [A], tags: { p: "1" }, deadline } }))),
        deadline,
      ).toContain("join.deadline");
    }
  });

  it("refuses a join deadline after the task's own", () => {
    const result = validate(
      base({
        deadline: "2030-06-01T13:00:00Z",
        join: { clusters: [A], artifact: "*", deadline: "PT2H" },
      }),
    );
    expect(problemFields(result)).toEqual(["join.deadline"]);
  });

  it("refuses a join on a breakpoint task and an input saved under join/", () => {
    const join = { clusters: [A], artifact: "*", deadline: "PT1H" };
    expect(problemFields(validate({ taskId: "t", breakpoint: true, join }))).toContain("join");
    expect(
      problemFields(
        validate(base({ join, inputs: [{ task: REMOTE, artifact: "public/x", path: "join/x" }] })),
      ),
    ).toEqual(["inputs[0].path"]);
  });

  it("keeps since as given: a date-time not after creation, or a duration counted back", () => {
    for (const since of ["P7D", "PT0S", "P1DT2H", "2030-06-01T12:00:00Z", "2029-01-01T00:00:00Z"]) {
      const value = valueOf(
        validate(base({ join: { clusters: [A], artifact: "*", deadline: "PT1H", since } })),
      );
      expect(value.join?.since, since).toBe(since);
    }
    expect(
      valueOf(validate(base({ join: { clusters: [A], artifact: "*", deadline: "PT1H" } }))).join,
    ).not.toHaveProperty("since");
  });

  it("refuses a since that does not parse or lies in the future, naming join.since", () => {
    for (const since of ["", "P", "P1W", "7 days", "2030-06-01", "x".repeat(65), 7, null]) {
      const result = validate(
        base({ join: { clusters: [A], artifact: "*", deadline: "PT1H", since } }),
      );
      expect(problemFields(result), String(since)).toEqual(["join.since"]);
      expect(result.ok ? "" : result.problems[0]?.message).toMatch(/ISO 8601 date-time/);
    }
    const future = validate(
      base({
        join: { clusters: [A], artifact: "*", deadline: "PT1H", since: "2030-06-01T12:00:01Z" },
      }),
    );
    expect(problemFields(future)).toEqual(["join.since"]);
    expect(future.ok ? "" : future.problems[0]?.message).toMatch(/future/);
  });

  it("names every problem of a bad join", () => {
    const result = validate(
      base({
        join: { clusters: [A, A, "ftp://x"], tags: { "a b": "x" }, atDeadline: "later", extra: 1 },
      }),
    );
    expect(problemFields(result).sort()).toEqual(
      [
        "join.extra",
        "join.clusters[1]",
        "join.clusters[2]",
        "join.tags.a b",
        "join",
        "join.atDeadline",
        "join.deadline",
      ].sort(),
    );
  });
});
