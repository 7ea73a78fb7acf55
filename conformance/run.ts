/**
 * `runConformance`: preflight, start the suite's peer, run every check, build the report.
 * @module
 */
import { derefChecks } from "./checks/deref.ts";
import { deliveryChecks } from "./checks/delivery.ts";
import { discoveryChecks } from "./checks/discovery.ts";
import { inboxAuthChecks, limitChecks, originChecks, reliabilityChecks } from "./checks/inbox.ts";
import { outboxChecks } from "./checks/outbox.ts";
import { provenanceChecks } from "./checks/provenance.ts";
import { followChecks, publishingChecks } from "./checks/publishing.ts";
import { resolutionChecks } from "./checks/resolution.ts";
import { ssrfChecks } from "./checks/ssrf.ts";
import { tagChecks } from "./checks/tags.ts";
import { Context, type Timing } from "./context.ts";
import { noDriver, type Driver } from "./drivers.ts";
import { NotObservable, type Check, type CheckResult, type Report, type Verdict } from "./model.ts";
import { startPeer, type PeerOptions } from "./peer.ts";

/**
 * PUB-12 ends the follow of the suite's follower: it runs after every check that needs it
 * (the tag and provenance checks watch deliveries to the follower too).
 */
const endsFollow = (c: Check) => c.id === "PUB-12";

/** Every check, in the order they run. */
export const ALL_CHECKS: readonly Check[] = [
  ...discoveryChecks,
  ...followChecks,
  ...publishingChecks.filter((c) => !endsFollow(c)),
  ...resolutionChecks,
  ...outboxChecks,
  ...tagChecks,
  ...provenanceChecks,
  ...publishingChecks.filter(endsFollow),
  ...inboxAuthChecks,
  ...originChecks,
  ...derefChecks,
  ...ssrfChecks,
  ...limitChecks,
  ...reliabilityChecks,
  // Last: they make deliveries fail on purpose, which may slow the target's later deliveries
  // to the suite's host (a circuit breaker).
  ...deliveryChecks,
];

/** Options of {@link runConformance}. */
export interface ConformanceOptions {
  /** The actor URL of the server under test. */
  readonly target: string;
  readonly driver?: Driver;
  readonly peer?: PeerOptions;
  readonly timing?: Partial<Timing>;
  /** Run only checks whose id starts with one of these. */
  readonly only?: readonly string[];
  /** Called after each check (for progress output). */
  readonly onResult?: (result: CheckResult) => void;
}

/** A preflight problem: the run cannot start. */
export class PreflightError extends Error {}

async function preflight(target: string): Promise<Record<string, unknown>> {
  let url: URL;
  try {
    url = new URL(target);
  } catch {
    throw new PreflightError(`--target ${JSON.stringify(target)} is not a URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new PreflightError(`--target must be an http(s) URL, got ${url.protocol}`);
  }
  let response: Response;
  try {
    response = await fetch(url, {
      headers: { accept: "application/activity+json" },
      signal: AbortSignal.timeout(10_000),
    });
  } catch (error) {
    throw new PreflightError(
      `the target ${target} is unreachable: ${String((error as { cause?: unknown }).cause ?? error)}`,
    );
  }
  const text = await response.text();
  if (!response.ok) {
    throw new PreflightError(
      `GET ${target} answered ${response.status}; expected the actor document`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new PreflightError(`GET ${target} did not return JSON; is it the cluster's actor URL?`);
  }
  const doc = json as Record<string, unknown> | null;
  if (doc == null || typeof doc !== "object" || typeof doc.inbox !== "string") {
    throw new PreflightError(
      `${target} is not an actor: its document has no inbox. Pass the cluster's actor URL.`,
    );
  }
  return doc;
}

/** Runs the suite against `options.target`. Throws {@link PreflightError} when it cannot start. */
export async function runConformance(options: ConformanceOptions): Promise<Report> {
  const started = Date.now();
  const actor = await preflight(options.target);
  const driver = options.driver ?? noDriver();
  const actorId = typeof actor.id === "string" ? actor.id : options.target;
  const peer = await startPeer({ acceptFrom: actorId, ...options.peer });
  const timing: Timing = {
    deliveryTimeoutMs: options.timing?.deliveryTimeoutMs ?? 30_000,
    settleMs: options.timing?.settleMs ?? 1000,
  };
  const ctx = new Context(options.target, actor, peer, driver, timing);
  const results: CheckResult[] = [];
  const checks = ALL_CHECKS.filter(
    (c) => options.only == null || options.only.some((p) => c.id.startsWith(p)),
  );
  try {
    for (const check of checks) {
      const t0 = Date.now();
      let verdict: Verdict;
      try {
        ctx.require(check.needs ?? []);
        verdict = await check.run(ctx);
      } catch (error) {
        verdict =
          error instanceof NotObservable
            ? { outcome: "not-observable", message: error.message }
            : { outcome: "fail", message: `the check could not complete: ${String(error)}` };
      }
      const result: CheckResult = {
        id: check.id,
        area: check.area,
        level: check.level,
        requirements: check.requirements,
        title: check.title,
        outcome: verdict.outcome,
        message: verdict.message ?? "",
        durationMs: Date.now() - t0,
      };
      results.push(result);
      options.onResult?.(result);
    }
  } finally {
    await peer.close();
    await driver.close?.();
  }
  const count = (o: CheckResult["outcome"]) => results.filter((r) => r.outcome === o).length;
  return {
    target: options.target,
    driver: driver.name,
    peerUrl: peer.baseUrl,
    startedAt: new Date(started).toISOString(),
    durationMs: Date.now() - started,
    results,
    summary: {
      pass: count("pass"),
      fail: count("fail"),
      notObservable: count("not-observable"),
      mustFailed: results.filter((r) => r.outcome === "fail" && r.level === "MUST").length,
    },
  };
}
