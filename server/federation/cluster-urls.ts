/**
 * Every URL a cluster mints, in one place, so that routes, activities and dereferencing
 * agree. Path segments of ids are URL-encoded; artifact names keep their `/`.
 * @module
 */

/** The URLs of one cluster. */
export interface ClusterUrls {
  readonly origin: string;
  readonly actor: string;
  readonly inbox: string;
  readonly sharedInbox: string;
  readonly outbox: string;
  readonly followers: string;
  readonly following: string;
  task(taskId: string): string;
  taskGroup(taskGroupId: string): string;
  artifact(taskId: string, name: string): string;
  artifactContent(taskId: string, name: string): string;
  activity(activityId: string): string;
  /** The local task id when `url` is a task of this cluster, otherwise undefined. */
  localTaskId(url: string): string | undefined;
}

function encodeName(name: string): string {
  return name.split("/").map(encodeURIComponent).join("/");
}

/** Builds the URLs of the cluster `name` served at `origin` (no trailing slash). */
export function createClusterUrls(origin: string, name: string): ClusterUrls {
  const actor = `${origin}/clusters/${name}`;
  const taskPrefix = `${actor}/tasks/`;
  return {
    origin,
    actor,
    inbox: `${actor}/inbox`,
    sharedInbox: `${origin}/inbox`,
    outbox: `${actor}/outbox`,
    followers: `${actor}/followers`,
    following: `${actor}/following`,
    task: (taskId) => `${taskPrefix}${encodeURIComponent(taskId)}`,
    taskGroup: (id) => `${actor}/task-groups/${encodeURIComponent(id)}`,
    artifact: (taskId, name) =>
      `${taskPrefix}${encodeURIComponent(taskId)}/artifacts/${encodeName(name)}`,
    artifactContent: (taskId, name) =>
      `${actor}/content/${encodeURIComponent(taskId)}/${encodeName(name)}`,
    activity: (id) => `${actor}/activities/${encodeURIComponent(id)}`,
    localTaskId(url) {
      if (!url.startsWith(taskPrefix)) return undefined;
      const rest = url.slice(taskPrefix.length);
      if (rest === "" || rest.includes("/")) return undefined;
      try {
        return decodeURIComponent(rest);
      } catch {
        return undefined;
      }
    },
  };
}
