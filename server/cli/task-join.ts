/**
 * How `taskweb task show` prints a task's join: which clusters delivered, which are missing.
 * @module
 */
import type { JoinProgress } from "../domain/task-joins.ts";

const STATES: Readonly<Record<JoinProgress["state"], string>> = {
  waiting: "waiting",
  complete: "complete",
  closed: "closed at the deadline, ran without the missing clusters",
  failed: "failed at the deadline",
};

/** The lines describing a task's join progress. */
export function describeJoin(join: JoinProgress): string[] {
  const arrived = join.clusters.filter((c) => c.arrived).length;
  const lines = [
    `  join: ${STATES[join.state]}; ${arrived} of ${join.clusters.length} clusters arrived; deadline ${join.deadline} (then ${join.atDeadline})`,
  ];
  if (join.since != null) lines.push(`    counting artifacts recorded since ${join.since}`);
  for (const c of join.clusters) {
    lines.push(
      c.arrived
        ? `    arrived  ${c.cluster}  ${c.path ?? ""}`
        : `    ${join.state === "waiting" ? "waiting" : "missing"}  ${c.cluster}`,
    );
  }
  return lines;
}
