/**
 * What checks share: the target's actor document, the suite's peer, the driver, and the
 * setups several checks rely on (a follow in each direction, a published task, a working
 * observation channel), each done once.
 * @module
 */
import { randomUUID } from "node:crypto";
import {
  buildTaskCompleted,
  type TaskCompletedJson,
  type TaskObjectInit,
} from "../protocol/index.ts";
import type { CreatedTask, Driver, DriverCapability } from "./drivers.ts";
import { NotObservable } from "./model.ts";
import type { Peer, PeerActor } from "./peer.ts";
import { postRfc9421, type HttpAnswer, type ReceivedRequest } from "./signing.ts";

/** Timing knobs. */
export interface Timing {
  /** How long to wait for something the target sends (ms). */
  readonly deliveryTimeoutMs: number;
  /** How long a refused or ignored input is given to have an effect before "nothing changed" (ms). */
  readonly settleMs: number;
}

/** The shared state of a run. */
export class Context {
  private readonly memo = new Map<string, Promise<unknown>>();

  constructor(
    readonly target: string,
    readonly actor: Record<string, unknown>,
    readonly peer: Peer,
    readonly driver: Driver,
    readonly timing: Timing,
  ) {}

  /** The target's inbox URL, from its actor document. */
  get inbox(): string {
    const inbox = this.actor.inbox;
    if (typeof inbox !== "string") throw new NotObservable("the actor document has no inbox");
    return inbox;
  }

  /** Throws NotObservable unless the driver can do all of `needs`. */
  require(needs: readonly DriverCapability[]): void {
    const missing = needs.filter((n) => !this.driver.capabilities.has(n));
    if (missing.length > 0) {
      throw new NotObservable(
        `driver "${this.driver.name}" cannot ${missing.join(", ")} (use --driver taskweb-rest or manual)`,
      );
    }
  }

  /** Runs `setup` once per run under `key`; later callers share its result or its error. */
  once<T>(key: string, setup: () => Promise<T>): Promise<T> {
    let p = this.memo.get(key) as Promise<T> | undefined;
    if (p == null) {
      p = setup();
      this.memo.set(key, p);
    }
    return p;
  }

  /** Polls `probe` until it returns a value, or returns undefined after `timeoutMs`. */
  async poll<T>(
    probe: () => Promise<T | undefined> | T | undefined,
    timeoutMs = this.timing.deliveryTimeoutMs,
  ): Promise<T | undefined> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const value = await probe();
      if (value !== undefined) return value;
      if (Date.now() > until) return undefined;
      await sleep(50);
    }
  }

  /** A fresh URL of a task of a suite actor (the peer answers 404 for it). */
  taskUrl(actor: PeerActor): string {
    return `${actor.id}/tasks/${randomUUID()}`;
  }

  /** A TaskCompleted as `actor` reports it about `taskUrl`. */
  taskCompleted(
    actor: PeerActor,
    taskUrl: string,
    overrides: { actorId?: string; id?: string } = {},
  ): Record<string, unknown> {
    const actorId = overrides.actorId ?? actor.id;
    const json: TaskCompletedJson = buildTaskCompleted({
      id: overrides.id ?? `${actorId}/activities/${randomUUID()}`,
      actor: actorId,
      published: new Date(),
      task: completedTaskInit(taskUrl, actorId),
    });
    return json as unknown as Record<string, unknown>;
  }

  /**
   * The target follows the suite's `upstream` actor (through the driver), and a valid
   * TaskCompleted from upstream demonstrably unblocks a waiting task: the channel through
   * which "nothing changed" is observed. Throws NotObservable when it cannot be set up.
   */
  observation(): Promise<void> {
    return this.once("observation", async () => {
      this.require(["follow", "create-waiting-task", "task-state"]);
      const upstream = this.peer.actors.upstream;
      const seen = this.peer.inbox("upstream").length;
      await this.driver.follow(upstream.id);
      const followReq = await this.poll(() =>
        this.peer
          .inbox("upstream")
          .slice(seen)
          .find((r) => jsonOf(r)?.type === "Follow"),
      );
      if (followReq == null) {
        throw new NotObservable(
          "the target did not send a Follow to the suite's upstream actor after the driver's follow",
        );
      }
      // The peer answers with an Accept; give the target a moment to record it.
      await sleep(300);
      const url = this.taskUrl(upstream);
      const waiting = await this.driver.createWaitingTask([url]);
      for (let attempt = 0; attempt < 3; attempt += 1) {
        await this.send(upstream, this.taskCompleted(upstream, url));
        // A loaded server may take seconds to act: a slow positive control costs only time.
        const moved = await this.poll(
          async () => {
            const state = await this.driver.taskState(waiting.taskId);
            return state !== "unscheduled" ? state : undefined;
          },
          Math.max(3000, this.timing.deliveryTimeoutMs / 4),
        );
        if (moved != null) return;
      }
      throw new NotObservable(
        "positive control failed: a valid, signed TaskCompleted from a followed actor did not unblock the waiting task, so 'nothing changed' cannot be told apart",
      );
    });
  }

  /** Signs `activity` as `actor` (RFC 9421) and POSTs it to the target's inbox. */
  async send(actor: PeerActor, activity: unknown): Promise<HttpAnswer> {
    return await postRfc9421(this.inbox, JSON.stringify(activity), actor.signer);
  }

  /**
   * Creates a task waiting on a fresh upstream task, sends what `attack` builds about that
   * task URL, waits, and reports whether the waiting task stayed unscheduled.
   */
  async expectNoEffect(
    attack: (taskUrl: string) => Promise<HttpAnswer>,
    taskUrl = this.taskUrl(this.peer.actors.upstream),
  ): Promise<{ answer: HttpAnswer; unchanged: boolean; state: string }> {
    await this.observation();
    const waiting = await this.driver.createWaitingTask([taskUrl]);
    const answer = await attack(taskUrl);
    await sleep(this.timing.settleMs);
    const state = await this.driver.taskState(waiting.taskId);
    return { answer, unchanged: state === "unscheduled", state };
  }

  /**
   * The suite's `follower` follows the target; resolves to the Follow's id and the Accept
   * (or Reject) the target delivered, if any.
   */
  followerFollows(): Promise<{
    followId: string;
    answer: HttpAnswer;
    reply: ReceivedRequest | undefined;
  }> {
    return this.once("follower-follows", async () => {
      const follower = this.peer.actors.follower;
      const followId = `${follower.id}/follows/${randomUUID()}`;
      const follow = {
        "@context": "https://www.w3.org/ns/activitystreams",
        id: followId,
        type: "Follow",
        actor: follower.id,
        object: this.actorId,
      };
      const answer = await this.send(follower, follow);
      const reply = await this.poll(() =>
        this.peer.inbox("follower").find((r) => {
          const json = jsonOf(r);
          return (json?.type === "Accept" || json?.type === "Reject") && refersTo(json, followId)
            ? r
            : undefined;
        }),
      );
      return { followId, answer, reply };
    });
  }

  /** The target's actor id. */
  get actorId(): string {
    return typeof this.actor.id === "string" ? this.actor.id : this.target;
  }

  /**
   * After the follower's follow, the driver creates a task that completes with an artifact;
   * resolves to the requests delivered to the follower about it.
   */
  published(): Promise<DeliveredTask> {
    return this.deliveredTask("published", ["complete-task"], () =>
      this.driver.createCompletingTask(),
    );
  }

  /**
   * After the follower's follow, `create` makes the driver create a task; resolves to the
   * `TaskCompleted` or `TaskFailed` about it delivered to the follower, if one came, and what
   * was delivered since. Once per run for each `key`; throws NotObservable without `needs`.
   */
  deliveredTask(
    key: string,
    needs: readonly DriverCapability[],
    create: () => Promise<CreatedTask>,
  ): Promise<DeliveredTask> {
    return this.once(key, async () => {
      const seen = await this.followerReady(needs);
      return await this.resolution(await create(), seen);
    });
  }

  /**
   * Checks `needs` and that the target accepted the suite's follower; resolves to the number
   * of requests the follower received so far (for {@link Context.resolution}).
   */
  async followerReady(needs: readonly DriverCapability[]): Promise<number> {
    this.require(needs);
    const { reply } = await this.followerFollows();
    if (reply == null || jsonOf(reply)?.type !== "Accept") {
      throw new NotObservable("the target did not accept the suite's follower");
    }
    return this.peer.inbox("follower").length;
  }

  /** Waits for the TaskCompleted or TaskFailed about `task` among deliveries after `seen`. */
  async resolution(task: CreatedTask, seen: number): Promise<DeliveredTask> {
    const matches = (r: ReceivedRequest) => {
      const json = jsonOf(r);
      if (!hasType(json, "TaskCompleted") && !hasType(json, "TaskFailed")) return false;
      const object = json?.object as Record<string, unknown> | undefined;
      return task.url == null || object?.id === task.url;
    };
    const completed = await this.poll(
      () => this.peer.inbox("follower").slice(seen).find(matches),
      Math.max(this.timing.deliveryTimeoutMs, 60_000),
    );
    return {
      taskUrl: task.url,
      completed,
      since: () => this.peer.inbox("follower").slice(seen),
    };
  }
}

/** A task the driver created, as the follower saw it published. */
export interface DeliveredTask {
  readonly taskUrl: string | undefined;
  /** The `TaskCompleted` or `TaskFailed` about it, if one was delivered in time. */
  readonly completed: ReceivedRequest | undefined;
  /** Everything delivered to the follower since the task was created (grows). */
  readonly since: () => ReceivedRequest[];
}

/** A completed task of the suite's peers, as TaskCompleted activities and task documents carry it. */
export function completedTaskInit(
  id: string,
  attributedTo: string,
): TaskObjectInit & { taskState: "completed" } {
  return {
    id,
    attributedTo,
    name: "conformance",
    taskGroup: `${new URL(id).origin}/task-groups/${randomUUID()}`,
    taskState: "completed",
    runId: 0,
    reasonResolved: "completed",
    resolved: new Date(),
    requires: "all-completed",
    dependencies: [],
    artifacts: [],
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The JSON object of a received body, or undefined. */
export function jsonOf(r: ReceivedRequest): Record<string, unknown> | undefined {
  try {
    const json = JSON.parse(r.body) as unknown;
    return json != null && typeof json === "object" && !Array.isArray(json)
      ? (json as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

/** Whether `json.type` is or lists `type` (as a term or any IRI ending in `#type`/`/type`). */
export function hasType(json: Record<string, unknown> | undefined, type: string): boolean {
  const t = json?.type;
  const list = Array.isArray(t) ? t : [t];
  return list.some(
    (x) =>
      typeof x === "string" && (x === type || x.endsWith(`#${type}`) || x.endsWith(`:${type}`)),
  );
}

/** Whether an Accept/Reject's `object` is, or has the id, `id`. */
export function refersTo(json: Record<string, unknown>, id: string): boolean {
  const o = json.object;
  return o === id || (o != null && typeof o === "object" && (o as { id?: unknown }).id === id);
}
