/**
 * The check catalogue against the specification: every check has a unique id and cites only
 * requirement ids the specification defines, and a MUST check cites a MUST requirement.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ALL_CHECKS } from "../../conformance/index.ts";

const spec = readFileSync(new URL("../../spec/README.md", import.meta.url), "utf8");
const levels = new Map(
  [...spec.matchAll(/^\| (TW-[A-Z]+-\d+) +\| (MUST|SHOULD|MAY) /gm)].map((m) => [m[1], m[2]]),
);

describe("conformance check catalogue", () => {
  it("has unique check ids", () => {
    const ids = ALL_CHECKS.map((c) => c.id);
    expect(ids.filter((id, i) => ids.indexOf(id) !== i)).toEqual([]);
  });

  it("cites only requirements the specification defines", () => {
    expect(levels.size).toBeGreaterThan(100);
    const unknown = ALL_CHECKS.flatMap((c) =>
      c.requirements.filter((r) => !levels.has(r)).map((r) => `${c.id}: ${r}`),
    );
    expect(unknown).toEqual([]);
  });

  it("gives every MUST check at least one MUST requirement", () => {
    const weak = ALL_CHECKS.filter(
      (c) => c.level === "MUST" && !c.requirements.some((r) => levels.get(r) === "MUST"),
    ).map((c) => c.id);
    expect(weak).toEqual([]);
  });
});
