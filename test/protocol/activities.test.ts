import { describe, expect, expectTypeOf, it } from "vitest";
import {
  CONTEXT,
  PUBLIC_COLLECTION,
  TASK_STATES,
  buildArtifactObject,
  buildArtifactPublished,
  buildTaskCompleted,
  buildTaskFailed,
  buildTaskGroupObject,
  buildTaskGroupResolved,
  buildTaskObject,
  parseActivity,
  parseArtifactObject,
  parseTaskGroupObject,
  parseTaskObject,
  schemaDocuments,
  schemaId,
  validateAgainstSchema,
} from "../../protocol/index.ts";
import type {
  ArtifactObject,
  ArtifactObjectInit,
  ArtifactObjectJson,
  TaskObject,
  TaskObjectInit,
  TaskObjectJson,
  TaskRequires,
  TaskwebActivity,
} from "../../protocol/index.ts";

const A = "https://ci.example/clusters/ci";
const TASK = `${A}/tasks/T1`;
const SHA = "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";

const artifact: ArtifactObjectInit = {
  id: `${TASK}/artifacts/public/build.txt`,
  attributedTo: A,
  name: "public/build.txt",
  task: TASK,
  url: new URL(`${A}/content/T1/public/build.txt`),
  mediaType: "text/plain; charset=utf-8",
  size: 12,
  sha256: SHA,
  expires: new Date("2027-11-23T11:00:00.000Z"),
};

const completedTask = {
  id: TASK,
  attributedTo: A,
  name: "build",
  taskGroup: `${A}/task-groups/G1`,
  taskState: "completed",
  runId: 0,
  reasonResolved: "completed",
  resolved: new Date("2026-11-23T10:59:58.000Z"),
  dependencies: [`${A}/tasks/T0`, "https://hw.example/clusters/hw/tasks/X"],
  requires: "all-completed",
  artifacts: [artifact],
} as const satisfies TaskObjectInit;

const activityFields = {
  id: `${A}/activities/1`,
  actor: A,
  published: new Date("2026-11-23T11:00:00.000Z"),
  to: [`${A}/followers`],
};

function unwrap<T>(result: { ok: true; value: T } | { ok: false; reason: unknown }): T {
  if (!result.ok) throw new Error(`expected success, got ${JSON.stringify(result.reason)}`);
  return result.value;
}

// Required keys of an object type, for comparing TypeScript types with schema `required`.
type RequiredKeys<T> = { [K in keyof T]-?: object extends Pick<T, K> ? never : K }[keyof T];

const TASK_KEYS = [
  "id",
  "attributedTo",
  "name",
  "taskGroup",
  "taskState",
  "runId",
  "reasonResolved",
  "resolved",
  "dependencies",
  "requires",
  "artifacts",
  "tags",
  "inputs",
] as const;
const TASK_REQUIRED_KEYS = [
  "id",
  "attributedTo",
  "name",
  "taskGroup",
  "taskState",
  "requires",
] as const;
const ARTIFACT_KEYS = [
  "id",
  "attributedTo",
  "name",
  "task",
  "url",
  "mediaType",
  "size",
  "sha256",
  "expires",
] as const;
const ARTIFACT_OPTIONAL_KEYS = ["tags"] as const;

interface ObjectSchema {
  required: string[];
  properties: Record<string, { enum?: unknown[] }>;
}
function schemaOf(name: "task" | "artifact"): ObjectSchema {
  return schemaDocuments().get(schemaId(name)) as ObjectSchema;
}

describe("TypeScript types and JSON Schemas", () => {
  it("list the same task properties", () => {
    expectTypeOf<keyof TaskObject>().toEqualTypeOf<(typeof TASK_KEYS)[number]>();
    expectTypeOf<keyof TaskObjectInit>().toEqualTypeOf<(typeof TASK_KEYS)[number]>();
    expectTypeOf<Exclude<keyof TaskObjectJson, "type">>().toEqualTypeOf<
      (typeof TASK_KEYS)[number]
    >();
    const properties = Object.keys(schemaOf("task").properties);
    expect(properties.filter((key) => key !== "@context" && key !== "type").sort()).toEqual(
      [...TASK_KEYS].sort(),
    );
  });

  it("require the same task properties", () => {
    expectTypeOf<RequiredKeys<TaskObjectInit>>().toEqualTypeOf<
      (typeof TASK_REQUIRED_KEYS)[number]
    >();
    const required = schemaOf("task").required.filter((key) => key !== "type");
    expect(required.sort()).toEqual([...TASK_REQUIRED_KEYS].sort());
  });

  it("list and require the same artifact properties", () => {
    expectTypeOf<keyof ArtifactObject>().toEqualTypeOf<
      (typeof ARTIFACT_KEYS)[number] | (typeof ARTIFACT_OPTIONAL_KEYS)[number]
    >();
    expectTypeOf<RequiredKeys<ArtifactObjectInit>>().toEqualTypeOf<
      (typeof ARTIFACT_KEYS)[number]
    >();
    expectTypeOf<Exclude<keyof ArtifactObjectJson, "type">>().toEqualTypeOf<
      (typeof ARTIFACT_KEYS)[number] | (typeof ARTIFACT_OPTIONAL_KEYS)[number]
    >();
    const schema = schemaOf("artifact");
    const properties = Object.keys(schema.properties).filter(
      (key) => key !== "@context" && key !== "type",
    );
    expect(properties.sort()).toEqual([...ARTIFACT_KEYS, ...ARTIFACT_OPTIONAL_KEYS].sort());
    expect(schema.required.filter((key) => key !== "type").sort()).toEqual(
      [...ARTIFACT_KEYS].sort(),
    );
  });

  it("agree on task states and requirements", () => {
    const { properties } = schemaOf("task");
    expect(properties["taskState"]?.enum).toEqual([...TASK_STATES]);
    const requires: TaskRequires[] = ["all-completed", "all-resolved"];
    expect(properties["requires"]?.enum).toEqual(requires);
  });
});

describe("builders", () => {
  it("emit the short multi-typed form with the inline context", () => {
    const json = buildTaskCompleted({ ...activityFields, task: completedTask });
    expect(json["@context"]).toEqual(CONTEXT);
    expect(json.type).toEqual(["Activity", "TaskCompleted"]);
    expect(json.object.type).toEqual(["Object", "Task"]);
    expect(json.object.artifacts[0]?.type).toEqual(["Object", "Artifact"]);
    expect(json.object).not.toHaveProperty("@context");
    expect(json.object.artifacts[0]).not.toHaveProperty("@context");
    expect(json.published).toBe("2026-11-23T11:00:00.000Z");
    expect(json.object.artifacts[0]?.url).toBe(`${A}/content/T1/public/build.txt`);
  });

  it("put id first, as the spec's examples do", () => {
    const json = buildArtifactPublished({ ...activityFields, artifact });
    expect(Object.keys(json).slice(0, 3)).toEqual(["@context", "id", "type"]);
    expect(Object.keys(json.object).slice(0, 2)).toEqual(["id", "type"]);
  });

  it("give every document its own copy of the context", () => {
    const first = buildArtifactObject(artifact);
    (first["@context"] as unknown[]).push("https://w3id.org/security/v1");
    expect(buildArtifactObject(artifact)["@context"]).toEqual(CONTEXT);
    expect(Object.isFrozen(CONTEXT)).toBe(true);
  });

  it("omit optional fields that were not given", () => {
    const json = buildTaskObject({
      id: TASK,
      attributedTo: A,
      name: "build",
      taskGroup: `${A}/task-groups/G1`,
      taskState: "pending",
      requires: "all-resolved",
    });
    expect(json).not.toHaveProperty("runId");
    expect(json).not.toHaveProperty("reasonResolved");
    expect(json).not.toHaveProperty("resolved");
    expect(json.dependencies).toEqual([]);
    expect(json.artifacts).toEqual([]);
    const activity = buildTaskCompleted({
      id: `${A}/activities/2`,
      actor: A,
      published: "2026-11-23T11:00:00Z",
      task: completedTask,
    });
    expect(activity).not.toHaveProperty("to");
  });

  it("produce documents that match the JSON Schemas", () => {
    const failedTask = {
      ...completedTask,
      taskState: "exception",
      reasonResolved: "deadline-exceeded",
    } as const;
    expect(validateAgainstSchema("task", buildTaskObject(completedTask)).ok).toBe(true);
    expect(validateAgainstSchema("artifact", buildArtifactObject(artifact)).ok).toBe(true);
    const completed = buildTaskCompleted({ ...activityFields, task: completedTask });
    expect(validateAgainstSchema("task-completed", completed).ok).toBe(true);
    const failed = buildTaskFailed({ ...activityFields, task: failedTask });
    expect(validateAgainstSchema("task-failed", failed).ok).toBe(true);
    const published = buildArtifactPublished({ ...activityFields, artifact });
    expect(validateAgainstSchema("artifact-published", published).ok).toBe(true);
  });

  it("refuse at compile time a TaskCompleted whose task is not completed", () => {
    const running = { ...completedTask, taskState: "running" } as const;
    // @ts-expect-error: a TaskCompleted embeds a completed task.
    buildTaskCompleted({ ...activityFields, task: running });
    const noReason = { ...completedTask, taskState: "failed", reasonResolved: undefined } as const;
    // @ts-expect-error: a TaskFailed needs the reason.
    buildTaskFailed({ ...activityFields, task: noReason });
  });
});

describe("parseActivity", () => {
  it("round-trips a TaskCompleted built by the builder", () => {
    const json = buildTaskCompleted({ ...activityFields, task: completedTask });
    const activity = unwrap(parseActivity(json));
    expect(activity.kind).toBe("TaskCompleted");
    if (activity.kind !== "TaskCompleted") return;
    expectTypeOf(activity.task.taskState).toEqualTypeOf<"completed">();
    expect(activity).toMatchObject({
      id: `${A}/activities/1`,
      actor: A,
      published: "2026-11-23T11:00:00.000Z",
      to: [`${A}/followers`],
    });
    expect(activity.task).toEqual({
      id: TASK,
      attributedTo: A,
      name: "build",
      taskGroup: `${A}/task-groups/G1`,
      taskState: "completed",
      runId: 0,
      reasonResolved: "completed",
      resolved: "2026-11-23T10:59:58.000Z",
      dependencies: [`${A}/tasks/T0`, "https://hw.example/clusters/hw/tasks/X"],
      requires: "all-completed",
      artifacts: [
        {
          id: `${TASK}/artifacts/public/build.txt`,
          attributedTo: A,
          name: "public/build.txt",
          task: TASK,
          url: `${A}/content/T1/public/build.txt`,
          mediaType: "text/plain; charset=utf-8",
          size: 12,
          sha256: SHA,
          expires: "2027-11-23T11:00:00.000Z",
          tags: {},
        },
      ],
      tags: {},
      inputs: [],
    });
    expect(activity.raw).toBe(json);
  });

  it("carries the inputs a task consumed, and leaves them out when it consumed none", () => {
    const P = "https://north.example/clusters/north";
    const inputs = [
      {
        artifact: `${P}/tasks/D/artifacts/public/data.csv`,
        task: `${P}/tasks/D`,
        attributedTo: P,
        sha256: SHA,
        path: "join/0/public/data.csv",
      },
    ];
    const json = buildTaskCompleted({ ...activityFields, task: { ...completedTask, inputs } });
    expect(json.object.inputs).toEqual(inputs);
    const activity = unwrap(parseActivity(json));
    if (activity.kind !== "TaskCompleted") throw new Error("not a TaskCompleted");
    expect(activity.task.inputs).toEqual(inputs);
    expect(unwrap(parseTaskObject(buildTaskObject({ ...completedTask, inputs }))).inputs).toEqual(
      inputs,
    );
    expect("inputs" in buildTaskCompleted({ ...activityFields, task: completedTask }).object).toBe(
      false,
    );
    // An input is its own cluster's statement: its artifact must be on its cluster's origin.
    const lying = buildTaskObject({
      ...completedTask,
      inputs: [{ ...inputs[0]!, attributedTo: "https://south.example/clusters/south" }],
    });
    const refused = parseTaskObject(lying);
    expect(refused.ok).toBe(false);
    if (!refused.ok) expect(refused.reason.code).toBe("origin-mismatch");
  });

  it("carries a task's tags on the task and its artifacts, and leaves out empty ones", () => {
    const tags = { project: "web", branch: "main" };
    const json = buildTaskCompleted({
      ...activityFields,
      task: {
        ...completedTask,
        tags,
        artifacts: completedTask.artifacts.map((a) => ({ ...a, tags })),
      },
    });
    expect(json.object.tags).toEqual(tags);
    expect(json.object.artifacts[0]?.tags).toEqual(tags);
    const activity = unwrap(parseActivity(json));
    if (activity.kind !== "TaskCompleted") throw new Error(activity.kind);
    expect(activity.task.tags).toEqual(tags);
    expect(activity.task.artifacts[0]?.tags).toEqual(tags);
    const untagged = buildTaskCompleted({ ...activityFields, task: completedTask });
    expect("tags" in untagged.object).toBe(false);
  });

  it("round-trips a TaskFailed and re-embeds the parsed task", () => {
    const failedTask = { ...completedTask, taskState: "failed", reasonResolved: "failed" } as const;
    const activity = unwrap(
      parseActivity(buildTaskFailed({ ...activityFields, task: failedTask })),
    );
    if (activity.kind !== "TaskFailed") throw new Error(activity.kind);
    expectTypeOf(activity.task.reasonResolved).toEqualTypeOf<string>();
    // A parsed task is valid builder input, so a receiver can relay what it got.
    const again = unwrap(
      parseActivity(buildTaskFailed({ ...activityFields, task: activity.task })),
    );
    expect(again).toEqual({ ...activity, raw: again.raw });
  });

  it("round-trips an ArtifactPublished", () => {
    const activity = unwrap(parseActivity(buildArtifactPublished({ ...activityFields, artifact })));
    expect(activity.kind).toBe("ArtifactPublished");
    if (activity.kind === "ArtifactPublished") expect(activity.artifact.size).toBe(12);
  });

  it("gives a discriminated union", () => {
    expectTypeOf<TaskwebActivity["kind"]>().toEqualTypeOf<
      "TaskCompleted" | "TaskFailed" | "ArtifactPublished" | "TaskGroupResolved"
    >();
  });

  it("returns the public collection as its full IRI", () => {
    const json = buildTaskCompleted({ ...activityFields, task: completedTask });
    const activity = unwrap(parseActivity({ ...json, to: "as:Public" }));
    expect(activity.to).toEqual([PUBLIC_COLLECTION]);
  });

  it("accepts TaskwebContext with the Data Integrity context before it", () => {
    const json = buildTaskCompleted({ ...activityFields, task: completedTask });
    const withProof = {
      ...json,
      "@context": [
        "https://www.w3.org/ns/activitystreams",
        "https://w3id.org/security/data-integrity/v1",
        json["@context"][1],
      ],
    };
    expect(parseActivity(withProof).ok).toBe(true);
  });

  it("rejects a document that is not an object", () => {
    for (const value of [null, 42, "TaskCompleted", []]) {
      expect(parseActivity(value)).toMatchObject({ ok: false, reason: { code: "schema" } });
    }
  });

  it("rejects a TaskCompleted whose object id has another origin", () => {
    const json = buildTaskCompleted({
      ...activityFields,
      task: { ...completedTask, id: "https://evil.example/clusters/ci/tasks/T1", artifacts: [] },
    });
    expect(parseActivity(json)).toMatchObject({
      ok: false,
      reason: { code: "origin-mismatch", path: "/object/id" },
    });
  });

  it("treats an explicit default port as the same origin", () => {
    const json = buildTaskCompleted({
      ...activityFields,
      task: { ...completedTask, id: "https://ci.example:443/clusters/ci/tasks/T1", artifacts: [] },
    });
    expect(parseActivity(json).ok).toBe(true);
  });
});

describe("parseTaskObject", () => {
  it("round-trips a task document", () => {
    const task = unwrap(parseTaskObject(buildTaskObject(completedTask)));
    expect(task.id).toBe(TASK);
    expect(task.artifacts).toHaveLength(1);
  });

  it("accepts a pending task without run fields", () => {
    const json = buildTaskObject({ ...completedTask, taskState: "pending", artifacts: [] });
    const { runId: _runId, reasonResolved: _reason, resolved: _resolved, ...pending } = json;
    expect(unwrap(parseTaskObject(pending)).taskState).toBe("pending");
  });

  it("rejects a task document without @context", () => {
    const { "@context": _context, ...bare } = buildTaskObject(completedTask);
    expect(parseTaskObject(bare)).toMatchObject({ ok: false, reason: { code: "bad-context" } });
  });

  it("rejects a failed task without reasonResolved", () => {
    const json = buildTaskObject({ ...completedTask, taskState: "failed" });
    const { reasonResolved: _reason, ...withoutReason } = json;
    expect(parseTaskObject(withoutReason)).toMatchObject({
      ok: false,
      reason: { code: "schema", path: "/reasonResolved" },
    });
  });

  it("rejects a task whose task group is on another origin than attributedTo", () => {
    const json = buildTaskObject({ ...completedTask, taskGroup: "https://b.example/g/G1" });
    expect(parseTaskObject(json)).toMatchObject({
      ok: false,
      reason: { code: "origin-mismatch", path: "/taskGroup" },
    });
  });

  it("rejects a task fetched from another origin than its id", () => {
    const json = buildTaskObject(completedTask);
    expect(parseTaskObject(json, { fetchedFrom: TASK }).ok).toBe(true);
    expect(
      parseTaskObject(json, { fetchedFrom: "https://mirror.example/clusters/ci/tasks/T1" }),
    ).toMatchObject({ ok: false, reason: { code: "origin-mismatch", path: "/id" } });
  });

  it("rejects an Artifact where a Task is expected", () => {
    expect(parseTaskObject(buildArtifactObject(artifact))).toMatchObject({
      ok: false,
      reason: { code: "unknown-type" },
    });
  });
});

describe("parseArtifactObject", () => {
  it("round-trips an artifact document", () => {
    const parsed = unwrap(parseArtifactObject(buildArtifactObject(artifact)));
    expect(parsed.sha256).toBe(SHA);
    expect(parsed.expires).toBe("2027-11-23T11:00:00.000Z");
  });

  it("accepts content on another origin", () => {
    const json = buildArtifactObject({ ...artifact, url: "https://cdn.example/ci/T1/build.txt" });
    expect(parseArtifactObject(json).ok).toBe(true);
  });

  it("rejects an artifact whose task is on another origin", () => {
    const json = buildArtifactObject({ ...artifact, task: "https://b.example/tasks/T1" });
    expect(parseArtifactObject(json)).toMatchObject({
      ok: false,
      reason: { code: "origin-mismatch", path: "/task" },
    });
  });

  it("rejects an artifact with a malformed digest or size", () => {
    expect(parseArtifactObject(buildArtifactObject({ ...artifact, sha256: "abc" }))).toMatchObject({
      ok: false,
      reason: { code: "bad-digest", path: "/sha256" },
    });
    expect(parseArtifactObject(buildArtifactObject({ ...artifact, size: -1 }))).toMatchObject({
      ok: false,
      reason: { code: "schema", path: "/size" },
    });
  });
});

describe("task groups (v1.1)", () => {
  const group = {
    id: `${A}/task-groups/G1`,
    attributedTo: A,
    taskCount: 4,
    completedCount: 2,
    failedCount: 1,
    exceptionCount: 0,
  };
  const resolved = {
    id: `${A}/activities/G1-resolved`,
    actor: A,
    published: "2026-11-23T11:00:00.000Z",
    to: [`${A}/followers`],
    taskGroup: { ...group, resolved: "2026-11-23T11:00:00.000Z" },
  };

  it("round-trips a TaskGroupResolved and a TaskGroup document through their parsers", () => {
    expect(parseActivity(buildTaskGroupResolved(resolved))).toMatchObject({
      ok: true,
      value: { kind: "TaskGroupResolved", taskGroup: resolved.taskGroup },
    });
    // An open group's document has no `resolved`.
    expect(parseTaskGroupObject(buildTaskGroupObject(group), { fetchedFrom: group.id })).toEqual({
      ok: true,
      value: group,
    });
  });

  it("refuses a group document fetched from another origin, or with a tally that does not add up", () => {
    expect(
      parseTaskGroupObject(buildTaskGroupObject(group), {
        fetchedFrom: "https://evil.example/task-groups/G1",
      }),
    ).toMatchObject({ ok: false, reason: { code: "origin-mismatch" } });
    expect(
      parseTaskGroupObject(buildTaskGroupObject({ ...group, exceptionCount: 2 })),
    ).toMatchObject({ ok: false, reason: { code: "bad-count", path: "/taskCount" } });
  });

  it("still accepts a v1.0 document without the task group terms, but not a redefinition of one", () => {
    const v10 = buildTaskCompleted({ ...activityFields, task: completedTask });
    const context = v10["@context"][1] as Record<string, unknown>;
    for (const term of ["TaskGroupResolved", "TaskGroup", "taskCount", "completedCount"]) {
      delete context[term];
    }
    delete context.failedCount;
    delete context.exceptionCount;
    expect(parseActivity(v10)).toMatchObject({ ok: true, value: { kind: "TaskCompleted" } });
    context.taskCount = "https://elsewhere.example/count";
    expect(parseActivity(v10)).toMatchObject({ ok: false, reason: { code: "bad-context" } });
  });
});
