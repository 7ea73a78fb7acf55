/**
 * Request budgets keyed by a peer (an origin, a client address, a key URL), kept by
 * `rate-limiter-flexible`: `burst` requests per window of `burst / perSecond` seconds, so
 * the long-run rate is `perSecond`. On Redis every process of a cluster spends from the same
 * budget (the keys live under the cluster's Redis prefix); in memory each process has its
 * own, which is what the embedded engine's single process needs. A window that has ended
 * holds no state, so a flood of new peers costs memory (or Redis keys) only for one window.
 * @module
 */
import type { Redis } from "ioredis";
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";
import type { RateLimit } from "../config.ts";

/** What {@link RateLimiter.take} decided. */
export type RateDecision =
  | { readonly ok: true }
  | {
      readonly ok: false;
      /** Whole seconds until one request is allowed again. */ readonly retryAfterSeconds: number;
    };

/** A set of budgets, one per key. */
export interface RateLimiter {
  /** Spends one request of `key`'s budget, or says how long to wait for one. */
  take(key: string): Promise<RateDecision>;
  /** Says whether `key` has a request left, without spending it. */
  peek(key: string): Promise<RateDecision>;
}

/**
 * Where budgets are kept: `memory` (this process), or Redis (every process that uses the
 * same connection target and `prefix`).
 */
export type RateLimitStore =
  | { readonly kind: "memory" }
  | { readonly kind: "redis"; readonly client: Redis; readonly prefix: string };

/** Options for {@link createRateLimiter}. */
export interface RateLimiterOptions extends RateLimit {
  /** Names the budget; budgets of different names never share a key. */
  readonly name: string;
  /** @defaultValue `{ kind: "memory" }` */
  readonly store?: RateLimitStore;
}

/** The window, in whole seconds, in which `burst` requests are allowed. */
export function windowSeconds(limit: RateLimit): number {
  return Math.max(1, Math.ceil(limit.burst / limit.perSecond));
}

/** Creates a {@link RateLimiter}. */
export function createRateLimiter(options: RateLimiterOptions): RateLimiter {
  const points = options.burst;
  const duration = windowSeconds(options);
  const store = options.store ?? { kind: "memory" };
  const memory = new RateLimiterMemory({ keyPrefix: options.name, points, duration });
  const limiter =
    store.kind === "memory"
      ? memory
      : new RateLimiterRedis({
          storeClient: store.client,
          keyPrefix: `${store.prefix}:rate:${options.name}`,
          points,
          duration,
          // A key that spent its budget is refused from memory until its window ends: a
          // flood costs Redis one round trip per process, not one per request.
          inMemoryBlockOnConsumed: points + 1,
          // Redis unreachable: each process keeps its own budget until it is back.
          insuranceLimiter: memory,
          rejectIfRedisNotReady: true,
        });

  const refused = (res: RateLimiterRes): RateDecision => ({
    ok: false,
    retryAfterSeconds: Math.max(1, Math.ceil(res.msBeforeNext / 1000)),
  });

  return {
    async take(key) {
      try {
        await limiter.consume(key);
        return { ok: true };
      } catch (error) {
        if (error instanceof RateLimiterRes) return refused(error);
        throw error;
      }
    },
    async peek(key) {
      const res = await limiter.get(key).catch(() => memory.get(key));
      return res != null && res.consumedPoints >= points ? refused(res) : { ok: true };
    },
  };
}
