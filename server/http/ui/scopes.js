/**
 * The scopes each thing the web app shows or does needs, in one place. They are the scopes
 * the REST routes behind each action declare; a button is shown only when the signed-in
 * client satisfies its check, and the cluster checks again when the request arrives.
 * @module
 */

/** Listing task groups (and following every task's changes). */
export const LIST_GROUPS = ["taskweb:task-group:list", "taskweb:task:list"];

/** Reading one task group, its graph and its changes. */
export function readGroup(taskGroupId) {
  return [`taskweb:task-group:read:${taskGroupId}`];
}

/** Reading one task: definition, runs, log, artifacts, activities. */
export function readTask(taskId) {
  return [`taskweb:task:read:${taskId}`];
}

/** Submitting a task graph. */
export const CREATE_GROUP = ["taskweb:task-group:create"];

/** Reading the clusters this one follows. */
export const READ_FOLLOWING = ["taskweb:follow:read"];

/** Reading this cluster's followers and their follow requests. */
export const READ_FOLLOWERS = ["taskweb:follower:read"];

/** Delivery health per peer. */
export const READ_FEDERATION = ["taskweb:federation:read"];

/** Listing hooks (each hook's fires need `taskweb:hook:get:<hookId>`). */
export const LIST_HOOKS = ["taskweb:hook:list"];

/** Approving or rejecting a follow request. */
export const MANAGE_FOLLOWS = ["taskweb:follower:manage"];

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
