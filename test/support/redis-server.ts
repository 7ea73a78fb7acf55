/**
 * A redis-server of the test's own on a free loopback port, so that FLUSHALL or killing it
 * touches no other test.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { Redis } from "ioredis";
import { waitFor } from "./clusters.ts";
import { freePort } from "./ports.ts";

/** A running {@link startRedisServer}. */
export interface RedisServer {
  readonly url: string;
  /** Kills the server (SIGKILL); its data is gone. */
  kill(): Promise<void>;
  /** Starts it again, empty, on the same port. */
  start(): Promise<void>;
}

/** Starts redis-server (no persistence) and waits until it answers. */
export async function startRedisServer(): Promise<RedisServer> {
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  const start = async () => {
    child = spawn(
      "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      { stdio: "ignore" },
    );
    const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0 });
    // Refused connections while the server starts are expected; the loop below retries.
    probe.on("error", () => {});
    try {
      await waitFor("the test's Redis server", async () => {
        try {
          if (probe.status !== "ready") await probe.connect();
          return (await probe.ping()) === "PONG" ? true : undefined;
        } catch {
          return undefined;
        }
      });
    } finally {
      probe.disconnect();
    }
  };
  await start();
  return {
    url,
    async kill() {
      const c = child;
      child = undefined;
      if (c == null || c.exitCode != null || c.signalCode != null) return;
      c.kill("SIGKILL");
      await new Promise((r) => c.on("exit", r));
    },
    start,
  };
}
