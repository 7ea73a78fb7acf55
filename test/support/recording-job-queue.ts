/** A job queue for state-machine tests: it records what is enqueued and runs nothing. */
import type { EnqueueOptions, JobQueue, JsonValue } from "../../server/queue/job-queue.ts";

/** One recorded enqueue. */
export interface Enqueued {
  readonly queue: string;
  readonly jobId: string;
  readonly data: JsonValue;
  readonly options: EnqueueOptions;
}

/** A queue that only records what is enqueued: nothing here consumes jobs. */
export function createRecordingJobQueue(): JobQueue & { readonly enqueued: Enqueued[] } {
  const enqueued: Enqueued[] = [];
  return {
    kind: "embedded",
    enqueued,
    enqueue(queue, jobId, data, options = {}) {
      enqueued.push({ queue, jobId, data, options });
      return Promise.resolve();
    },
    process() {
      return Promise.reject(new Error("The recording queue runs no consumers."));
    },
    depth(queue) {
      return Promise.resolve(enqueued.filter((e) => e.queue === queue).length);
    },
    ping: () => Promise.resolve(),
    close: () => Promise.resolve(),
  };
}
