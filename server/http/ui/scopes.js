/**
 * The scopes each thing the web app shows or does needs, in one place. They are the scopes
 * the REST routes behind each action declare; a button is shown only when the signed-in
 * client satisfies its check, and the cluster checks again when the request arrives.
 * @module
 */

/** Reading tasks, task groups, runs, logs, artifacts and the event stream. */
export const READ_TASKS = ["taskweb:task:read"];

/** Submitting a task graph. */
export const CREATE_TASKS = ["taskweb:task:create"];

/** Reading followers, following and pending follow requests. */
export const READ_FOLLOWS = ["taskweb:follow:read"];

/** Approving or rejecting a follow request. */
export const MANAGE_FOLLOWS = ["taskweb:follow:manage"];

/** The scopes of one action on one task. */
export function taskAction(action, taskId) {
  return [`taskweb:task:${action}:${taskId}`];
}

/** The actions on a task, with the states in which each applies. */
export const TASK_ACTIONS = [
  {
    action: "activate",
    label: "Activate",
    applies: (t) => t.inactive && t.state === "unscheduled",
  },
  {
    action: "resolve",
    label: "Resolve: completed",
    body: { state: "completed" },
    applies: (t) => t.breakpoint && t.state === "running",
  },
  {
    action: "resolve",
    label: "Resolve: failed",
    body: { state: "failed" },
    applies: (t) => t.breakpoint && t.state === "running",
  },
  {
    action: "cancel",
    label: "Cancel",
    applies: (t) => ["unscheduled", "pending", "running"].includes(t.state),
  },
  {
    action: "rerun",
    label: "Rerun",
    applies: (t) => ["completed", "failed", "exception"].includes(t.state),
  },
];
