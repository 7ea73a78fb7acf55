/**
 * Drivers make the server under test do things the suite cannot cause over the protocol:
 * create a task, follow an actor, report a task's state. A driver lists what it can do;
 * a check that needs a capability the driver lacks is reported "not observable".
 * @module
 */
import { createInterface } from "node:readline/promises";

/** What a driver can do. */
export type DriverCapability =
  /** Create a task that completes and publishes one artifact. */
  | "complete-task"
  /** Create a task that runs and fails. */
  | "fail-task"
  /** Create a task that waits on remote task URLs. */
  | "create-waiting-task"
  /** Report a task's state. */
  | "task-state"
  /** Make the target follow an actor. */
  | "follow"
  /** Create a task that completes and publishes one artifact, carrying given tags (v1.3). */
  | "tag-task"
  /** Create a task that consumes artifacts of remote tasks, completes and publishes one. */
  | "consume-input";

/** An artifact a task consumes: the producing task's URL and the artifact's name. */
export interface InputRef {
  /** The URL of the task that produced it (its id on the wire). */
  readonly task: string;
  /** The artifact's name, such as `public/data.txt`. */
  readonly artifact: string;
}

/** A task the driver created. */
export interface CreatedTask {
  readonly taskId: string;
  /** The task's URL (its id on the wire), when the driver knows it. */
  readonly url?: string;
}

/** The driver contract. Methods of capabilities a driver lacks may throw. */
export interface Driver {
  readonly name: string;
  readonly capabilities: ReadonlySet<DriverCapability>;
  /** Creates a task that completes and publishes at least one artifact. */
  createCompletingTask(): Promise<CreatedTask>;
  /** Creates a task that runs and resolves `failed` (needed for the `fail-task` capability). */
  createFailingTask?(): Promise<CreatedTask>;
  /**
   * Creates a task like {@link Driver.createCompletingTask} that carries `tags` (needed for the
   * `tag-task` capability).
   */
  createTaggedTask?(tags: Readonly<Record<string, string>>): Promise<CreatedTask>;
  /**
   * Creates a task that consumes `inputs` (so it waits on their tasks), then runs, completes
   * and publishes at least one artifact (needed for the `consume-input` capability).
   */
  createConsumingTask?(inputs: readonly InputRef[]): Promise<CreatedTask>;
  /** Creates a task that waits on `dependencies` (remote task URLs). */
  createWaitingTask(dependencies: readonly string[]): Promise<CreatedTask>;
  /** The task's state (`unscheduled`, `pending`, `running`, `completed`, `failed`, `exception`). */
  taskState(taskId: string): Promise<string>;
  /** Makes the target follow `actor`. */
  follow(actor: string): Promise<void>;
  close?(): Promise<void>;
}

/** A driver that can do nothing: every check that needs one is not observable. */
export function noDriver(): Driver {
  const fail = () => Promise.reject(new Error("no driver"));
  return {
    name: "none",
    capabilities: new Set(),
    createCompletingTask: fail,
    createWaitingTask: fail,
    taskState: fail,
    follow: fail,
  };
}

/** Options of the taskweb REST driver. */
export interface TaskwebRestOptions {
  /** The API root, e.g. `https://ci.example/api/v1`. */
  readonly apiUrl: string;
  /** The cluster's admin Bearer token. */
  readonly token: string;
}

let counter = 0;
function freshId(prefix: string): string {
  counter += 1;
  return `${prefix}-${Date.now().toString(36)}-${counter}-${Math.random().toString(36).slice(2, 8)}`;
}

/** The payload of a task that completes and publishes one artifact. */
const COMPLETING = {
  command: ["sh", "-c", 'printf conformance > "$TASKWEB_ARTIFACTS/result.txt"'],
};

/** Drives the taskweb reference server over its REST API (`/api/v1`). */
export function taskwebRestDriver(options: TaskwebRestOptions): Driver {
  const api = options.apiUrl.replace(/\/+$/, "");
  async function call(method: string, path: string, body?: unknown): Promise<unknown> {
    const response = await fetch(`${api}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${options.token}`,
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await response.text();
    if (!response.ok) {
      throw new Error(`${method} ${api}${path} answered ${response.status}: ${text.slice(0, 300)}`);
    }
    return text === "" ? undefined : (JSON.parse(text) as unknown);
  }
  async function create(body: Record<string, unknown>): Promise<CreatedTask> {
    const answer = (await call("POST", "/tasks", body)) as { taskId?: string; url?: string };
    if (typeof answer.taskId !== "string") throw new Error("POST /tasks returned no taskId");
    return { taskId: answer.taskId, ...(answer.url != null ? { url: answer.url } : {}) };
  }
  return {
    name: "taskweb-rest",
    capabilities: new Set([
      "complete-task",
      "fail-task",
      "create-waiting-task",
      "task-state",
      "follow",
      "tag-task",
      "consume-input",
    ]),
    createCompletingTask: () => create({ taskId: freshId("conformance"), payload: COMPLETING }),
    createTaggedTask: (tags) =>
      create({ taskId: freshId("tagged"), tags: { ...tags }, payload: COMPLETING }),
    createConsumingTask: (inputs) =>
      create({
        taskId: freshId("consumes"),
        inputs: inputs.map((i, n) => ({ task: i.task, artifact: i.artifact, path: `${n}/input` })),
        payload: COMPLETING,
      }),
    createFailingTask: () =>
      create({ taskId: freshId("fails"), payload: { command: ["sh", "-c", "exit 3"] } }),
    createWaitingTask: (dependencies) =>
      create({
        taskId: freshId("waits"),
        dependencies: [...dependencies],
        payload: { command: ["true"] },
      }),
    async taskState(taskId) {
      const answer = (await call("GET", `/tasks/${encodeURIComponent(taskId)}`)) as {
        state?: string;
      };
      if (typeof answer.state !== "string") throw new Error(`no state for ${taskId}`);
      return answer.state;
    },
    async follow(actor) {
      await call("POST", "/following", { actor });
    },
    async close() {},
  };
}

/** A driver that asks an operator at the terminal to do each thing. */
export function manualDriver(
  input: NodeJS.ReadableStream = process.stdin,
  output: NodeJS.WritableStream = process.stderr,
): Driver {
  const rl = createInterface({ input, output });
  const ask = async (q: string) => (await rl.question(`\n[operator] ${q}\n> `)).trim();
  /** Asks for a task to be created (`request` ends by asking its id), then for its URL. */
  const askTask = async (request: string): Promise<CreatedTask> => {
    const taskId = await ask(request);
    const url = await ask("Its URL (empty if unknown):");
    return { taskId, ...(url !== "" ? { url } : {}) };
  };
  return {
    name: "manual",
    capabilities: new Set([
      "complete-task",
      "fail-task",
      "create-waiting-task",
      "task-state",
      "follow",
      "tag-task",
      "consume-input",
    ]),
    async createCompletingTask() {
      return await askTask(
        "Create a task on the server under test that completes and publishes one artifact. " +
          "Enter its task id (then its URL on the next line, or leave empty):",
      );
    },
    async createFailingTask() {
      return await askTask(
        "Create a task on the server under test that runs and fails (its command exits non-zero). " +
          "Enter its task id:",
      );
    },
    async createTaggedTask(tags) {
      return await askTask(
        `Create a task that completes and publishes one artifact, with the tags ${JSON.stringify(tags)}. ` +
          "Enter its task id:",
      );
    },
    async createConsumingTask(inputs) {
      const list = inputs.map((i) => `${i.artifact} of ${i.task}`).join(", ");
      return await askTask(
        `Create a task that consumes the artifact(s) ${list} as inputs, then completes and publishes one artifact. ` +
          "Enter its task id:",
      );
    },
    async createWaitingTask(dependencies) {
      const taskId = await ask(
        `Create a task that depends on ${dependencies.join(", ")} and runs once it may. ` +
          "Enter its task id:",
      );
      return { taskId };
    },
    async taskState(taskId) {
      return await ask(
        `What is the state of task ${taskId} now (unscheduled, pending, running, completed, failed, exception)?`,
      );
    },
    async follow(actor) {
      await ask(`Make the server under test follow ${actor}, then press Enter.`);
    },
    async close() {
      rl.close();
    },
  };
}
