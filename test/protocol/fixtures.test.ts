/**
 * Runs the language-neutral activity vectors in fixtures/activities/, and the offer and relay
 * vectors in fixtures/offers-and-relays/, through the parsers, the JSON Schemas and the proof
 * verifier, as another implementation would.
 */
import { readdirSync, readFileSync } from "node:fs";
import { Ajv2020 } from "ajv/dist/2020.js";
import { describe, expect, it } from "vitest";
import {
  ed25519FromMultibase,
  PARSE_FAILURE_CODES,
  parseActivity,
  parseTaskGraphOffer,
  sameOrigin,
  validateAgainstSchema,
  verifyProof,
} from "../../protocol/index.ts";
import type { SchemaName, TaskwebActivityKind } from "../../protocol/index.ts";

interface ActivityCase {
  description: string;
  requirement: string;
  valid: boolean;
  kind?: TaskwebActivityKind;
  reason?: string;
  data: unknown;
}

const directory = new URL("../../fixtures/activities/", import.meta.url);
const fixtureSchema = JSON.parse(readFileSync(new URL("schema.json", directory), "utf8")) as {
  properties: { reason: { enum: string[] } };
};
const files = readdirSync(directory)
  .filter((name) => name.endsWith(".json") && name !== "schema.json")
  .sort();
const cases = files.map((file) => ({
  file,
  ...(JSON.parse(readFileSync(new URL(file, directory), "utf8")) as ActivityCase),
}));

const SCHEMA_OF_KIND: Record<TaskwebActivityKind, SchemaName> = {
  TaskCompleted: "task-completed",
  TaskFailed: "task-failed",
  ArtifactPublished: "artifact-published",
  TaskGroupResolved: "task-group-resolved",
};

// Reasons for rules a JSON Schema can express; the context and origin rules it cannot.
const SHAPE_REASONS = new Set([
  "schema",
  "bad-url",
  "bad-digest",
  "unknown-type",
  "missing-base-type",
]);

describe("activity fixtures", () => {
  it("has at least twenty cases, valid and invalid ones", () => {
    expect(cases.length).toBeGreaterThanOrEqual(20);
    expect(cases.some((c) => c.valid)).toBe(true);
    expect(cases.some((c) => !c.valid)).toBe(true);
  });

  it("allows exactly the parser's failure codes as reasons", () => {
    expect(fixtureSchema.properties.reason.enum).toEqual([...PARSE_FAILURE_CODES]);
  });

  const validateFixture = new Ajv2020({ strict: true, strictRequired: false }).compile(
    fixtureSchema,
  );
  it.each(files)("%s matches the fixture schema", (file) => {
    const data: unknown = JSON.parse(readFileSync(new URL(file, directory), "utf8"));
    const valid = validateFixture(data);
    expect(validateFixture.errors ?? []).toEqual([]);
    expect(valid).toBe(true);
  });

  describe.each(cases)("$file", (fixture) => {
    if (fixture.valid) {
      it(`accepts ${fixture.description} (${fixture.requirement})`, () => {
        const result = parseActivity(fixture.data);
        expect(result).toMatchObject({ ok: true, value: { kind: fixture.kind } });
      });
      it(`matches the ${fixture.kind} JSON Schema`, () => {
        const schema = SCHEMA_OF_KIND[fixture.kind ?? "TaskCompleted"];
        expect(validateAgainstSchema(schema, fixture.data)).toMatchObject({ ok: true });
      });
    } else {
      it(`rejects ${fixture.description} as ${fixture.reason} (${fixture.requirement})`, () => {
        const result = parseActivity(fixture.data);
        expect(result.ok).toBe(false);
        if (!result.ok) {
          expect(result.reason.code).toBe(fixture.reason);
          expect(result.reason.message.length).toBeGreaterThan(10);
        }
      });
      if (SHAPE_REASONS.has(fixture.reason ?? "")) {
        it("is refused by every activity JSON Schema too", () => {
          for (const schema of Object.values(SCHEMA_OF_KIND)) {
            expect(validateAgainstSchema(schema, fixture.data).ok).toBe(false);
          }
        });
      }
    }
  });
});

interface OfferRelayCase {
  description: string;
  requirement: string;
  valid: boolean;
  kind: "Offer" | "Accept" | "Reject" | "Announce";
  reason?: string;
  publicKeyMultibase?: string;
  data: unknown;
}

const offerDirectory = new URL("../../fixtures/offers-and-relays/", import.meta.url);
const offerFiles = readdirSync(offerDirectory)
  .filter((name) => name.endsWith(".json") && name !== "schema.json")
  .sort();
const offerCases = offerFiles.map((file) => ({
  file,
  ...(JSON.parse(readFileSync(new URL(file, offerDirectory), "utf8")) as OfferRelayCase),
}));

const SCHEMA_OF_MESSAGE: Record<OfferRelayCase["kind"], SchemaName> = {
  Offer: "offer",
  Accept: "offer-answer",
  Reject: "offer-answer",
  Announce: "announce",
};

/** The first rule an `Announce` breaks, in the order fixtures/offers-and-relays/README.md gives. */
function checkAnnounce(data: unknown, publicKeyMultibase: string): string | undefined {
  if (!validateAgainstSchema("announce", data).ok) return "schema";
  const original = (data as { object: Record<string, unknown> }).object;
  const actor = original.actor as string;
  const method = (original.proof as { verificationMethod: string }).verificationMethod;
  if (!sameOrigin(original.id as string, actor) || !sameOrigin(method, actor))
    return "origin-mismatch";
  return verifyProof(original, ed25519FromMultibase(publicKeyMultibase))
    ? undefined
    : "proof-invalid";
}

describe("offer and relay fixtures", () => {
  it("has valid and invalid cases of every message", () => {
    for (const kind of ["Offer", "Accept", "Reject", "Announce"]) {
      expect(offerCases.some((c) => c.kind === kind && c.valid)).toBe(true);
      expect(offerCases.some((c) => c.kind === kind && !c.valid)).toBe(true);
    }
  });

  const validateFixture = new Ajv2020({ strict: true, strictRequired: false }).compile(
    JSON.parse(readFileSync(new URL("schema.json", offerDirectory), "utf8")) as object,
  );
  it.each(offerFiles)("%s matches the fixture schema", (file) => {
    const data: unknown = JSON.parse(readFileSync(new URL(file, offerDirectory), "utf8"));
    const valid = validateFixture(data);
    expect(validateFixture.errors ?? []).toEqual([]);
    expect(valid).toBe(true);
  });

  describe.each(offerCases)("$file", (fixture) => {
    const verdict = fixture.valid ? "accepts" : `rejects as ${fixture.reason}`;
    it(`${verdict} ${fixture.description} (${fixture.requirement})`, () => {
      const schema = validateAgainstSchema(SCHEMA_OF_MESSAGE[fixture.kind], fixture.data);
      if (fixture.kind === "Offer") {
        const result = parseTaskGraphOffer(fixture.data);
        expect(result.ok).toBe(fixture.valid);
        if (!result.ok) expect(result.reason.code).toBe(fixture.reason);
        // The schema says what it can express; the origin rules it cannot.
        expect(schema.ok).toBe(fixture.valid || fixture.reason === "origin-mismatch");
      } else if (fixture.kind === "Announce") {
        expect(checkAnnounce(fixture.data, fixture.publicKeyMultibase!)).toBe(fixture.reason);
      } else {
        expect(schema.ok).toBe(fixture.valid);
        if (!fixture.valid) expect(fixture.reason).toBe("schema");
      }
    });
  });
});
