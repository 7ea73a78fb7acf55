/**
 * Helpers for suites that send an inbox good and bad input and prove what changed: a
 * `TaskCompleted` as a peer would send it, and {@link expectNothingChanges}, which checks
 * the response, the reason the cluster gave, and that its database, its queues and its
 * deliveries are exactly as before.
 */
import { randomUUID } from "node:crypto";
import { expect } from "vitest";
import { buildTaskCompleted } from "../../protocol/index.ts";
import type { RunningCluster } from "../../server/cluster.ts";
import { queueDepths, snapshot, type TestCluster } from "./clusters.ts";

/**
 * A TaskCompleted with id `id` by the actor `actor` (to its followers) about `taskUrl`, whose
 * task group is on the task's origin.
 */
export function completionBy(actor: string, taskUrl: string, id: string) {
  return buildTaskCompleted({
    id,
    actor,
    published: new Date(),
    to: [`${actor}/followers`],
    task: {
      id: taskUrl,
      attributedTo: actor,
      name: "forged",
      taskGroup: `${new URL(taskUrl).origin}/clusters/x/task-groups/g`,
      taskState: "completed",
      runId: 0,
      reasonResolved: "completed",
      resolved: new Date(),
      requires: "all-completed",
      dependencies: [],
      artifacts: [],
    },
  });
}

/** A TaskCompleted as `actor` would send it, about `taskUrl`. */
export function taskCompleted(
  actor: RunningCluster,
  taskUrl: string,
  overrides: { id?: string } = {},
) {
  return completionBy(actor.urls.actor, taskUrl, overrides.id ?? actor.urls.activity(randomUUID()));
}

/** The reasons `cluster` reported since event number `since` (refusals and ignorals). */
export function reasonsSince(cluster: TestCluster, since: number): string[] {
  return cluster.events
    .slice(since)
    .map((e) =>
      e.type === "inbox-refused" || e.type === "inbox-ignored"
        ? e.reason
        : e.type === "inbox" && e.outcome.outcome === "ignored"
          ? e.outcome.reason
          : e.type,
    );
}

/**
 * Sends, then proves that `target` is unchanged: the response status, the reason it gave
 * (the guard's refusal, or the inbox's reason for ignoring a verified activity; `[]` for
 * none; a RegExp for one reason among several), every table an inbox can change, every queue's depth, no job enqueued (so no
 * delivery either), and no outbound request other than those `allowOutbound` admits.
 */
export async function expectNothingChanges(
  target: TestCluster,
  send: () => Promise<{ status: number; text?: string }>,
  status: number,
  because: string | readonly string[] | RegExp,
  options: { allowOutbound?: (url: string) => boolean; settleMs?: number } = {},
): Promise<{ status: number; text?: string }> {
  const cluster = target.current();
  const before = await snapshot(cluster);
  const depths = await queueDepths(cluster);
  const events = target.events.length;
  const jobs = target.enqueued.length;
  const requests = target.outbound.length;
  const response = await send();
  expect(response.status, response.text).toBe(status);
  // Anything the request set off would be done within this time on loopback.
  await new Promise((r) => setTimeout(r, options.settleMs ?? 250));
  expect(await snapshot(cluster)).toEqual(before);
  expect(await queueDepths(cluster)).toEqual(depths);
  expect(target.enqueued.slice(jobs)).toEqual([]);
  const allow = options.allowOutbound ?? (() => false);
  expect(target.outbound.slice(requests).filter((url) => !allow(url))).toEqual([]);
  const reasons = reasonsSince(target, events);
  if (because instanceof RegExp) {
    expect(reasons).toHaveLength(1);
    expect(reasons[0]).toMatch(because);
  } else {
    expect(reasons).toEqual([because].flat());
  }
  return response;
}
