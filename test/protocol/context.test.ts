import { preloadedContexts } from "@fedify/vocab-runtime";
import jsonldModule from "@fedify/vocab-runtime/jsonld";
import { describe, expect, it } from "vitest";
import {
  CONTEXT,
  PROTOCOL_VERSION,
  TASKWEB_CONTEXT,
  TASKWEB_NAMESPACE,
  buildArtifactPublished,
  buildTaskCompleted,
  buildTaskFailed,
  buildTaskGroupResolved,
  buildTaskGraphOffer,
  checkTaskwebContext,
  parseActivity,
} from "../../protocol/index.ts";

// jsonld ships no type declarations; this is the part of its API the tests use.
interface JsonLdOptions {
  documentLoader: (url: string) => Promise<unknown>;
  format?: "application/n-quads";
}
interface JsonLd {
  expand(input: unknown, options: JsonLdOptions): Promise<unknown>;
  compact(input: unknown, context: unknown, options: JsonLdOptions): Promise<unknown>;
  toRDF(input: unknown, options: JsonLdOptions): Promise<unknown>;
}
const jsonld = jsonldModule as unknown as JsonLd;

const A = "https://ci.example/clusters/ci";
const TASK = `${A}/tasks/T1`;
const artifact = {
  id: `${TASK}/artifacts/public/build.txt`,
  attributedTo: A,
  name: "public/build.txt",
  task: TASK,
  url: `${A}/content/T1/public/build.txt`,
  mediaType: "text/plain",
  size: 12,
  sha256: "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447",
  expires: "2027-11-23T11:00:00.000Z",
};
const task = {
  id: TASK,
  attributedTo: A,
  name: "build",
  taskGroup: `${A}/task-groups/G1`,
  taskState: "completed",
  runId: 0,
  reasonResolved: "completed",
  resolved: "2026-11-23T10:59:58.000Z",
  dependencies: ["https://hw.example/clusters/hw/tasks/X"],
  requires: "all-completed",
  artifacts: [artifact],
} as const;
const fields = { id: `${A}/activities/1`, actor: A, published: "2026-11-23T11:00:00.000Z" };

// The contexts ActivityPub servers preload; nothing is fetched from the network.
async function documentLoader(url: string) {
  const document = preloadedContexts[url];
  if (document === undefined) throw new Error(`test loader has no context ${url}`);
  return { contextUrl: null, documentUrl: url, document: structuredClone(document) };
}

const TERMS = [
  "tw",
  "TaskCompleted",
  "TaskFailed",
  "ArtifactPublished",
  "Task",
  "Artifact",
  "taskState",
  "taskGroup",
  "runId",
  "reasonResolved",
  "resolved",
  "artifacts",
  "sha256",
  "size",
  "expires",
  "task",
  "dependencies",
  "requires",
  "protocolVersion",
  "TaskGroupResolved",
  "TaskGroup",
  "taskCount",
  "completedCount",
  "failedCount",
  "exceptionCount",
  "TaskGraph",
  "taskGraph",
  "tags",
  "inputs",
];

describe("TASKWEB_CONTEXT", () => {
  it("defines exactly the taskweb v1 terms, all in the taskweb namespace", () => {
    expect(Object.keys(TASKWEB_CONTEXT).sort()).toEqual([...TERMS].sort());
    expect(TASKWEB_CONTEXT.tw).toBe(TASKWEB_NAMESPACE);
    for (const term of TERMS.filter((name) => name !== "tw")) {
      const definition: unknown = TASKWEB_CONTEXT[term as keyof typeof TASKWEB_CONTEXT];
      const id =
        typeof definition === "string" ? definition : (definition as { "@id": string })["@id"];
      expect(id).toBe(`tw:${term}`);
    }
  });

  it("coerces only URL-valued terms, to @id, and the offered graph and tags to JSON literals", () => {
    const coerced = Object.entries(TASKWEB_CONTEXT)
      .filter(([, definition]) => typeof definition === "object" && "@type" in definition)
      .map(([term, definition]) => [term, (definition as { "@type": string })["@type"]])
      .sort();
    expect(coerced).toEqual([
      ["dependencies", "@id"],
      ["inputs", "@json"],
      ["tags", "@json"],
      ["task", "@id"],
      ["taskGraph", "@json"],
      ["taskGroup", "@id"],
    ]);
  });

  it("is the second entry of CONTEXT, after ActivityStreams", () => {
    expect(CONTEXT).toEqual(["https://www.w3.org/ns/activitystreams", TASKWEB_CONTEXT]);
    expect(PROTOCOL_VERSION).toBe("1");
  });

  it("keeps every taskweb property through JSON-LD expansion, so signatures cover them", async () => {
    const documents = [
      {
        ...buildTaskCompleted({
          ...fields,
          task: {
            ...task,
            tags: { project: "web" },
            inputs: [
              {
                artifact: "https://north.example/clusters/north/tasks/D/artifacts/public/data.csv",
                task: "https://north.example/clusters/north/tasks/D",
                attributedTo: "https://north.example/clusters/north",
                sha256: "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447",
              },
            ],
          },
        }),
        protocolVersion: PROTOCOL_VERSION,
      },
      buildTaskFailed({
        ...fields,
        task: { ...task, taskState: "failed", reasonResolved: "failed" },
      }),
      buildArtifactPublished({ ...fields, artifact }),
      buildTaskGroupResolved({
        ...fields,
        taskGroup: {
          id: task.taskGroup,
          attributedTo: task.attributedTo,
          taskCount: 3,
          completedCount: 1,
          failedCount: 1,
          exceptionCount: 1,
          resolved: "2026-11-23T11:00:00.000Z",
        },
      }),
      buildTaskGraphOffer({
        id: `${A}/offers/1`,
        actor: A,
        target: "https://hw.example/clusters/hw",
        published: fields.published,
        taskGraph: { taskGroupId: "g", tasks: [{ taskId: "t", payload: { command: ["true"] } }] },
      }),
    ];
    const seen = new Set<string>();
    for (const document of documents) {
      const expanded = JSON.stringify(await jsonld.expand(document, { documentLoader }));
      // An undefined term would expand under ActivityStreams' "@vocab": "_:" as a blank node
      // and be dropped from the RDF a signature covers.
      expect(expanded).not.toContain('"_:');
      const nquads = (await jsonld.toRDF(document, {
        documentLoader,
        format: "application/n-quads",
      })) as string;
      for (const match of nquads.matchAll(/<https:\/\/taskweb\.dev\/ns\/v1#(\w+)>/g)) {
        seen.add(match[1] ?? "");
      }
    }
    // Empty sets produce no triples; everything else appears.
    expect([...seen].sort()).toEqual(TERMS.filter((term) => term !== "tw").sort());
  });

  it("survives re-compaction of an expanded activity, which parseActivity then accepts", async () => {
    const original = buildTaskCompleted({ ...fields, task: { ...task, artifacts: [] } });
    const expanded = await jsonld.expand(original, { documentLoader });
    // CONTEXT is frozen; servers pass it to jsonld as it is.
    const compacted = await jsonld.compact(expanded, { "@context": CONTEXT }, { documentLoader });
    const parsed = parseActivity(compacted);
    expect(parsed).toMatchObject({ ok: true, value: { kind: "TaskCompleted" } });
    if (parsed.ok && parsed.value.kind === "TaskCompleted") {
      expect(parsed.value.task.artifacts).toEqual([]);
      expect(parsed.value.task.runId).toBe(0);
    }
  });

  it("keeps a task's inputs through expansion and re-compaction, as a receiver does", async () => {
    const inputs = [
      {
        artifact: "https://north.example/clusters/north/tasks/D/artifacts/public/data.csv",
        task: "https://north.example/clusters/north/tasks/D",
        attributedTo: "https://north.example/clusters/north",
        sha256: "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447",
        path: "join/0/public/data.csv",
      },
    ];
    const original = buildTaskCompleted({ ...fields, task: { ...task, inputs } });
    const expanded = await jsonld.expand(original, { documentLoader });
    const compacted = await jsonld.compact(expanded, { "@context": CONTEXT }, { documentLoader });
    const parsed = parseActivity(compacted);
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.reason));
    if (parsed.value.kind !== "TaskCompleted") throw new Error(parsed.value.kind);
    expect(parsed.value.task.inputs).toEqual(inputs);
  });

  it("is reported missing when a library compacted with ActivityStreams only", async () => {
    const expanded = await jsonld.expand(buildTaskCompleted({ ...fields, task }), {
      documentLoader,
    });
    const asOnly = await jsonld.compact(expanded, "https://www.w3.org/ns/activitystreams", {
      documentLoader,
    });
    expect(parseActivity(asOnly)).toMatchObject({ ok: false, reason: { code: "bad-context" } });
  });
});

describe("checkTaskwebContext", () => {
  const AS = "https://www.w3.org/ns/activitystreams";

  it("accepts equivalent spellings of the term definitions", () => {
    const spelledOut = Object.fromEntries(
      Object.entries(TASKWEB_CONTEXT).map(([term, definition]) => [
        term,
        typeof definition === "string" && term !== "tw"
          ? { "@id": `${TASKWEB_NAMESPACE}${term}` }
          : definition,
      ]),
    );
    expect(checkTaskwebContext([AS, spelledOut])).toBeUndefined();
  });

  it("accepts extra terms beside the taskweb ones", () => {
    expect(
      checkTaskwebContext([AS, { ...TASKWEB_CONTEXT, laterTerm: "tw:laterTerm" }]),
    ).toBeUndefined();
  });

  it("rejects a term coerced differently", () => {
    const coerced = { ...TASKWEB_CONTEXT, size: { "@id": "tw:size", "@type": "xsd:integer" } };
    expect(checkTaskwebContext([AS, coerced])).toMatchObject({ code: "bad-context" });
  });

  it("rejects a null entry that resets the taskweb terms", () => {
    expect(checkTaskwebContext([AS, TASKWEB_CONTEXT, null])).toMatchObject({
      code: "bad-context",
    });
  });

  it("rejects a tw prefix bound to another namespace", () => {
    const moved = { ...TASKWEB_CONTEXT, tw: "https://example.com/other#" };
    expect(checkTaskwebContext([AS, moved])).toMatchObject({ code: "bad-context" });
  });

  it("ignores redefinitions that the taskweb context later overrides", () => {
    expect(checkTaskwebContext([AS, { size: "https://schema.org/size" }, TASKWEB_CONTEXT])).toBe(
      undefined,
    );
  });

  it("rejects entries that are neither IRIs nor objects", () => {
    expect(checkTaskwebContext([AS, 7, TASKWEB_CONTEXT])).toMatchObject({
      code: "bad-context",
      path: "/@context/1",
    });
  });
});
