/**
 * Checking an aggregate's provenance (spec/v1/provenance.md): for every input a task says it
 * consumed, find what the input's own cluster published about that artifact and compare
 * digests. The best evidence is the original `ArtifactPublished` or `TaskCompleted` the
 * aggregating cluster relayed (`Announce`), whose Object Integrity Proof verifies with a key
 * of the original cluster: it needs no trust in the aggregator, and the original cluster need
 * not be reachable beyond its actor document. Without one, the artifact's id is dereferenced
 * on the original cluster's own origin.
 *
 * Nothing here trusts the aggregator: its outbox is only a place to find signed originals.
 * @module
 */
import type { ArtifactObject, TaskInput, TaskObject } from "./activities.ts";
import { parseActivity, parseArtifactObject, parseTaskObject } from "./activities.ts";
import { sameOrigin } from "./origin.ts";
import { assertionMethodKey, verifyProof } from "./proof.ts";

/** Fetches a JSON document (as `application/activity+json`); throws when it cannot. */
export type JsonLoader = (url: string) => Promise<unknown>;

/** Why an input was refused. */
export type ProvenanceRefusal =
  /** What the original cluster published about the artifact has another digest. */
  | "digest-mismatch"
  /** The original names another task (or cluster) for the artifact than the aggregate does. */
  | "task-mismatch"
  /** A relayed original's proof does not verify with a key of its cluster. */
  | "proof-invalid"
  /** No relayed original, and the artifact's own cluster does not serve it. */
  | "not-published"
  /** No relayed original with a proof, and `requireProof` was set. */
  | "no-proof"
  /** The original cluster could not be reached. */
  | "unreachable";

/** How an input was checked. */
export type ProvenanceEvidence =
  /** A relayed original, its proof verified with a key of the input's cluster. */
  | "relayed-proof"
  /** The artifact's document, as the input's cluster serves it on its own origin. */
  | "origin";

/** The outcome for one input. */
export type InputVerification =
  | {
      readonly ok: true;
      readonly input: TaskInput;
      readonly evidence: ProvenanceEvidence;
      /** The id of the verified original activity, or the artifact's id. */
      readonly source: string;
    }
  | {
      readonly ok: false;
      readonly input: TaskInput;
      readonly reason: ProvenanceRefusal;
      readonly detail: string;
    };

/** The outcome of {@link verifyProvenance}. */
export type ProvenanceResult =
  | {
      readonly ok: boolean;
      readonly task: TaskObject;
      /** One entry per input, in the task's order; `ok` is true when every one verified. */
      readonly inputs: readonly InputVerification[];
    }
  | {
      readonly ok: false;
      readonly task?: undefined;
      readonly inputs?: undefined;
      /** The document is not a taskweb task (see `detail`). */
      readonly reason: "bad-task";
      readonly detail: string;
    };

/** Options for {@link verifyProvenance}. */
export interface VerifyProvenanceOptions {
  /** Fetches actors, outbox pages and artifacts. */
  readonly loadDocument: JsonLoader;
  /**
   * The `Announce` activities the aggregating cluster relayed. When absent, they are read
   * from the outbox of the task's cluster with {@link readRelayedActivities}.
   */
  readonly relayed?: readonly unknown[];
  /** Refuse an input that no relayed, signed original vouches for. @defaultValue false */
  readonly requireProof?: boolean;
  /** Called as each input is settled, for progress displays. */
  readonly onInput?: (result: InputVerification, done: number, total: number) => void;
  /** Called as each outbox page is read. */
  readonly onOutboxPage?: (items: number) => void;
  /** Outbox items read at most. @defaultValue 100000 */
  readonly maxOutboxItems?: number;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Every `Announce` in an actor's outbox, following its pages (newest first).
 *
 * @param actorUrl - The actor whose outbox is read; its document names the outbox.
 */
export async function readRelayedActivities(
  actorUrl: string,
  loadDocument: JsonLoader,
  options: Pick<VerifyProvenanceOptions, "onOutboxPage" | "maxOutboxItems"> = {},
): Promise<Record<string, unknown>[]> {
  const actor = await loadDocument(actorUrl);
  const outbox = isRecord(actor) ? actor.outbox : undefined;
  if (typeof outbox !== "string" || !sameOrigin(outbox, actorUrl)) return [];
  const limit = options.maxOutboxItems ?? 100_000;
  const collection = await loadDocument(outbox);
  const announces: Record<string, unknown>[] = [];
  let read = 0;
  let next: unknown = isRecord(collection) ? collection.first : undefined;
  if (isRecord(next)) next = next.id;
  const seen = new Set<string>();
  while (typeof next === "string" && !seen.has(next) && read < limit) {
    seen.add(next);
    if (!sameOrigin(next, actorUrl)) break;
    const page = await loadDocument(next);
    if (!isRecord(page)) break;
    const items = [page.orderedItems ?? page.items ?? []].flat();
    read += items.length;
    for (const item of items) {
      if (isRecord(item) && [item.type].flat().includes("Announce")) announces.push(item);
    }
    options.onOutboxPage?.(read);
    next = page.next;
  }
  return announces;
}

/** The key an original's proof names, fetched from the original's actor; undefined if none. */
async function verifyOriginalProof(
  original: Record<string, unknown>,
  actor: string,
  loadDocument: JsonLoader,
  actors: Map<string, Promise<unknown>>,
): Promise<{ ok: true } | { ok: false; reason: ProvenanceRefusal; detail: string }> {
  const proof = original.proof;
  if (!isRecord(proof)) {
    return { ok: false, reason: "proof-invalid", detail: "the relayed original has no proof" };
  }
  const method = proof.verificationMethod;
  if (typeof method !== "string" || !sameOrigin(method, actor)) {
    return {
      ok: false,
      reason: "proof-invalid",
      detail: `the proof's key ${String(method)} is not on ${actor}'s origin`,
    };
  }
  let document: unknown;
  try {
    let pending = actors.get(actor);
    if (pending == null) {
      pending = loadDocument(actor);
      actors.set(actor, pending);
    }
    document = await pending;
  } catch (error) {
    return { ok: false, reason: "unreachable", detail: `${actor}: ${String(error)}` };
  }
  const key = assertionMethodKey(document, actor, method);
  if (key == null) {
    return {
      ok: false,
      reason: "proof-invalid",
      detail: `${method} is not an Ed25519 assertion method of ${actor}`,
    };
  }
  if (verifyProof(original, key)) return { ok: true };
  return {
    ok: false,
    reason: "proof-invalid",
    detail: `the proof does not verify with ${method}`,
  };
}

/** What an original activity says about `artifactUrl`, or undefined if it says nothing. */
function artifactIn(original: unknown, artifactUrl: string): ArtifactObject | undefined {
  const parsed = parseActivity(original);
  if (!parsed.ok) return undefined;
  const activity = parsed.value;
  if (activity.kind === "ArtifactPublished") {
    return activity.artifact.id === artifactUrl ? activity.artifact : undefined;
  }
  if (activity.kind === "TaskCompleted" || activity.kind === "TaskFailed") {
    return activity.task.artifacts.find((a) => a.id === artifactUrl);
  }
  return undefined;
}

/** Compares what the original cluster said about an artifact with what the input claims. */
function compare(
  input: TaskInput,
  artifact: ArtifactObject,
  where: string,
): { ok: true } | { ok: false; reason: ProvenanceRefusal; detail: string } {
  if (artifact.attributedTo !== input.attributedTo || artifact.task !== input.task) {
    return {
      ok: false,
      reason: "task-mismatch",
      detail: `${where} attributes the artifact to ${artifact.attributedTo}, task ${artifact.task}`,
    };
  }
  if (artifact.sha256 !== input.sha256) {
    return {
      ok: false,
      reason: "digest-mismatch",
      detail: `${where} gives sha256 ${artifact.sha256}, the aggregate claims ${input.sha256}`,
    };
  }
  return { ok: true };
}

/** Refusals by how much they say against the aggregate, strongest first. */
const SEVERITY: readonly ProvenanceRefusal[] = [
  "digest-mismatch",
  "task-mismatch",
  "proof-invalid",
  "not-published",
  "no-proof",
  "unreachable",
];

async function verifyInput(
  input: TaskInput,
  relayed: readonly unknown[],
  options: VerifyProvenanceOptions,
  actors: Map<string, Promise<unknown>>,
): Promise<InputVerification> {
  const refusals: { reason: ProvenanceRefusal; detail: string }[] = [];
  // 1. Relayed originals of the input's cluster that speak about the artifact.
  for (const announce of relayed) {
    const original = isRecord(announce) ? announce.object : undefined;
    if (!isRecord(original) || original.actor !== input.attributedTo) continue;
    const artifact = artifactIn(original, input.artifact);
    if (artifact == null) continue;
    const where = `the relayed ${String(original.id)}`;
    const proof = await verifyOriginalProof(
      original,
      input.attributedTo,
      options.loadDocument,
      actors,
    );
    if (!proof.ok) {
      refusals.push({ reason: proof.reason, detail: `${where}: ${proof.detail}` });
      continue;
    }
    const same = compare(input, artifact, where);
    if (same.ok) {
      return { ok: true, input, evidence: "relayed-proof", source: String(original.id) };
    }
    refusals.push(same);
  }
  // 2. The artifact as its own cluster serves it.
  if (options.requireProof === true) {
    refusals.push({
      reason: "no-proof",
      detail: `no relayed original of ${input.attributedTo} with a valid proof lists ${input.artifact}`,
    });
  } else {
    try {
      const parsed = parseArtifactObject(await options.loadDocument(input.artifact), {
        fetchedFrom: input.artifact,
      });
      if (!parsed.ok || parsed.value.id !== input.artifact) {
        refusals.push({
          reason: "not-published",
          detail: `${input.artifact} does not dereference to that artifact${parsed.ok ? "" : `: ${parsed.reason.message}`}`,
        });
      } else {
        const same = compare(input, parsed.value, `${input.artifact} as its cluster serves it`);
        if (same.ok) return { ok: true, input, evidence: "origin", source: input.artifact };
        refusals.push(same);
      }
    } catch (error) {
      const message = String(error);
      refusals.push(
        /HTTP (404|410)\b/.test(message)
          ? {
              reason: "not-published",
              detail: `no relayed original lists it, and ${input.artifact} is not served by its cluster (${message})`,
            }
          : { reason: "unreachable", detail: `${input.artifact}: ${message}` },
      );
    }
  }
  refusals.sort((a, b) => SEVERITY.indexOf(a.reason) - SEVERITY.indexOf(b.reason));
  const worst = refusals[0]!;
  return { ok: false, input, reason: worst.reason, detail: worst.detail };
}

/**
 * Verifies the provenance of a task document: every entry of its `inputs` against what the
 * input's own cluster published (see spec/v1/provenance.md, TW-PRV-5). Never throws for
 * what a document says; a loader's network errors become `unreachable` refusals.
 *
 * @param taskDocument - The aggregate's task document (or the `object` of its `TaskCompleted`
 *   with the activity's `@context`), as JSON.
 * @param options - See {@link VerifyProvenanceOptions}.
 * @returns Each input's outcome; `ok` only when the task lists inputs and every one verified.
 */
export async function verifyProvenance(
  taskDocument: unknown,
  options: VerifyProvenanceOptions,
): Promise<ProvenanceResult> {
  const parsed = parseTaskObject(taskDocument);
  if (!parsed.ok) return { ok: false, reason: "bad-task", detail: parsed.reason.message };
  const task = parsed.value;
  let relayed = options.relayed;
  if (relayed == null) {
    try {
      relayed = await readRelayedActivities(task.attributedTo, options.loadDocument, options);
    } catch {
      // The aggregator's outbox is only a place to look; the origin check still applies.
      relayed = [];
    }
  }
  const actors = new Map<string, Promise<unknown>>();
  const results: InputVerification[] = [];
  for (const input of task.inputs) {
    const result = await verifyInput(input, relayed, options, actors);
    results.push(result);
    options.onInput?.(result, results.length, task.inputs.length);
  }
  return { ok: results.length > 0 && results.every((r) => r.ok), task, inputs: results };
}
