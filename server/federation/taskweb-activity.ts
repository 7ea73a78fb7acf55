/**
 * Sends taskweb's extension activities through Fedify. Fedify only sends `Activity`
 * objects and knows nothing of taskweb's terms, so this subclass carries the JSON built by
 * `protocol/` and merges it into every compact serialisation. Fedify makes the Object
 * Integrity Proof, the Linked Data signature and the HTTP digest from that serialisation, so
 * all of them cover the taskweb properties; the proof's own `@context` is made the document's.
 * @module
 */
import { Activity } from "@fedify/vocab";
import { TASKWEB_CONTEXT } from "../../protocol/index.ts";

type ActivityValues = ConstructorParameters<typeof Activity>[0];
type CloneValues = Parameters<Activity["clone"]>[0];
type CloneOptions = Parameters<Activity["clone"]>[1];
type ToJsonLdOptions = Parameters<Activity["toJsonLd"]>[0];

/** Properties Fedify serialises itself; the rest of the taskweb JSON is merged in. */
const BASE_KEYS = new Set(["@context", "id", "actor", "published", "to"]);

/** An `Activity` whose compact JSON-LD is a taskweb activity. */
export class TaskwebActivity extends Activity {
  #extension: Record<string, unknown> = {};

  /** Wraps a taskweb activity as built by `protocol/` (with `id`, `actor`, `published`, `to`). */
  static fromJson(json: Record<string, unknown>): TaskwebActivity {
    const values: ActivityValues = {
      id: new URL(String(json.id)),
      actor: new URL(String(json.actor)),
      ...(Array.isArray(json.to) ? { tos: json.to.map((to) => new URL(String(to))) } : {}),
    };
    const activity = new TaskwebActivity(values);
    activity.#extension = Object.fromEntries(
      Object.entries(json).filter(([key]) => !BASE_KEYS.has(key)),
    );
    if (typeof json.published === "string") activity.#extension.published = json.published;
    return activity;
  }

  override clone(values?: CloneValues, options?: CloneOptions): TaskwebActivity {
    const copy = super.clone(values, options) as TaskwebActivity;
    copy.#extension = this.#extension;
    return copy;
  }

  override async toJsonLd(options?: ToJsonLdOptions): Promise<unknown> {
    const json = (await super.toJsonLd(options)) as Record<string, unknown>;
    if (options?.format === "expand") return json;
    const context = [json["@context"]].flat().filter((c) => c != null);
    if (!context.some((c) => typeof c === "object" && c !== null && "tw" in c)) {
      context.push(TASKWEB_CONTEXT);
    }
    const merged: Record<string, unknown> = { ...json, ...this.#extension, "@context": context };
    // Fedify gives the proof its own @context, without the taskweb object. The proof was
    // computed over the document's @context (this method made it), so the proof's own must
    // be the same: a verifier that follows eddsa-jcs-2022 literally uses it ([TW-PROOF-3]).
    const proof = merged.proof;
    if (
      proof != null &&
      typeof proof === "object" &&
      !Array.isArray(proof) &&
      "@context" in proof
    ) {
      merged.proof = { ...proof, "@context": context };
    }
    return merged;
  }
}
