/**
 * Reports: one line per check for the terminal, JUnit XML for CI, JSON for tools.
 * @module
 */
import type { CheckResult, Report } from "./model.ts";

const MARK: Record<CheckResult["outcome"], string> = {
  pass: "PASS",
  fail: "FAIL",
  "not-observable": "N/O ",
};

/** One terminal line for a result. */
export function formatResultLine(r: CheckResult): string {
  const head = `${MARK[r.outcome]} ${r.id.padEnd(7)} ${r.level.padEnd(6)} ${r.title}`;
  const reqs = ` [${r.requirements.join(", ")}]`;
  return r.outcome === "pass" ? `${head}${reqs}` : `${head}${reqs}\n       ${r.message}`;
}

/** The terminal summary of a run. */
export function formatSummary(report: Report): string {
  const s = report.summary;
  const byLevel = (level: string, outcome: string) =>
    report.results.filter((r) => r.level === level && r.outcome === outcome).length;
  return [
    "",
    `target ${report.target} · driver ${report.driver} · suite peer ${report.peerUrl} · ${(report.durationMs / 1000).toFixed(1)} s`,
    `MUST:   ${byLevel("MUST", "pass")} passed, ${byLevel("MUST", "fail")} failed, ${byLevel("MUST", "not-observable")} not observable`,
    `SHOULD: ${byLevel("SHOULD", "pass")} passed, ${byLevel("SHOULD", "fail")} failed, ${byLevel("SHOULD", "not-observable")} not observable`,
    s.mustFailed > 0
      ? `NOT CONFORMING: ${s.mustFailed} MUST check(s) failed.`
      : s.notObservable > 0
        ? "No MUST check failed; some checks could not be observed (see N/O lines)."
        : "Every check passed.",
  ].join("\n");
}

function xml(s: string): string {
  return (
    s
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;")
      // eslint-disable-next-line no-control-regex
      .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, "")
  );
}

/** JUnit XML: a testsuite per area; a failed SHOULD is a failure too, typed "SHOULD". */
export function toJUnit(report: Report): string {
  const areas = [...new Set(report.results.map((r) => r.area))];
  const suites = areas.map((area) => {
    const rs = report.results.filter((r) => r.area === area);
    const cases = rs.map((r) => {
      const name = xml(`${r.id} [${r.level}] ${r.title} (${r.requirements.join(", ")})`);
      const time = (r.durationMs / 1000).toFixed(3);
      const inner =
        r.outcome === "fail"
          ? `<failure type="${r.level}" message="${xml(r.message)}"/>`
          : r.outcome === "not-observable"
            ? `<skipped message="${xml(`not observable: ${r.message}`)}"/>`
            : "";
      return `    <testcase classname="taskweb-conformance.${area}" name="${name}" time="${time}">${inner}</testcase>`;
    });
    const failures = rs.filter((r) => r.outcome === "fail").length;
    const skipped = rs.filter((r) => r.outcome === "not-observable").length;
    const time = (rs.reduce((t, r) => t + r.durationMs, 0) / 1000).toFixed(3);
    return [
      `  <testsuite name="${area}" tests="${rs.length}" failures="${failures}" errors="0" skipped="${skipped}" time="${time}">`,
      ...cases,
      "  </testsuite>",
    ].join("\n");
  });
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<testsuites name="taskweb-conformance" tests="${report.results.length}" failures="${report.summary.fail}" skipped="${report.summary.notObservable}" time="${(report.durationMs / 1000).toFixed(3)}">`,
    ...suites,
    "</testsuites>",
    "",
  ].join("\n");
}

/** The JSON report. */
export function toJson(report: Report): string {
  return `${JSON.stringify({ format: "taskweb-conformance/1", ...report }, null, 2)}\n`;
}

/** The process exit code for a report: 1 iff a MUST failed. */
export function exitCodeOf(report: Report): number {
  return report.summary.mustFailed > 0 ? 1 : 0;
}
