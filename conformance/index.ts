/**
 * The taskweb conformance suite as a library: `runConformance` runs every check against a
 * server's actor URL, playing peer clusters itself; the `taskweb-conformance` command uses it.
 * @packageDocumentation
 */
export { ALL_CHECKS, PreflightError, runConformance } from "./run.ts";
export type { ConformanceOptions } from "./run.ts";
export { manualDriver, noDriver, taskwebRestDriver } from "./drivers.ts";
export type {
  CreatedTask,
  Driver,
  DriverCapability,
  InputRef,
  TaskwebRestOptions,
} from "./drivers.ts";
export type { Area, Check, CheckResult, Level, Outcome, Report, Verdict } from "./model.ts";
export type { PeerOptions } from "./peer.ts";
export { exitCodeOf, formatResultLine, formatSummary, toJUnit, toJson } from "./report.ts";
