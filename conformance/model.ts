/**
 * What a check is and what it reports.
 * @module
 */
import type { DriverCapability } from "./drivers.ts";
import type { Context } from "./context.ts";

/** A check's level, as the specification's key words. */
export type Level = "MUST" | "SHOULD";

/** A check's result. */
export type Outcome = "pass" | "fail" | "not-observable";

/** The areas checks are grouped in. */
export type Area =
  | "discovery"
  | "follow"
  | "publishing"
  | "inbox-auth"
  | "origin-shape"
  | "dereference"
  | "limits"
  | "ssrf"
  | "outbox"
  | "tags"
  | "provenance"
  | "reliability";

/** What a check's run decided. */
export interface Verdict {
  readonly outcome: Outcome;
  /** For a failure: what was expected and what was seen. For not-observable: why. */
  readonly message?: string;
}

/** One conformance check. */
export interface Check {
  readonly id: string;
  readonly area: Area;
  readonly level: Level;
  /** Requirement ids of the specification (`TW-SIG-7`, …). */
  readonly requirements: readonly string[];
  readonly title: string;
  /** Driver capabilities the check needs; without them it is not observable. */
  readonly needs?: readonly DriverCapability[];
  run(ctx: Context): Promise<Verdict>;
}

/** A check's result in a report. */
export interface CheckResult {
  readonly id: string;
  readonly area: Area;
  readonly level: Level;
  readonly requirements: readonly string[];
  readonly title: string;
  readonly outcome: Outcome;
  readonly message: string;
  readonly durationMs: number;
}

/** A whole run. */
export interface Report {
  readonly target: string;
  readonly driver: string;
  readonly peerUrl: string;
  readonly startedAt: string;
  readonly durationMs: number;
  readonly results: readonly CheckResult[];
  readonly summary: {
    readonly pass: number;
    readonly fail: number;
    readonly notObservable: number;
    readonly mustFailed: number;
  };
}

export const pass = (message?: string): Verdict =>
  message != null ? { outcome: "pass", message } : { outcome: "pass" };
export const fail = (message: string): Verdict => ({ outcome: "fail", message });
/** Whether `v` is a verdict (and not the value a step returns when it has one). */
export const isVerdict = (v: unknown): v is Verdict =>
  v != null && typeof v === "object" && "outcome" in v;
export const notObservable = (message: string): Verdict => ({
  outcome: "not-observable",
  message,
});

/** Thrown inside a check to report it not observable. */
export class NotObservable extends Error {}
