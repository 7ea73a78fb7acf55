/**
 * Token buckets keyed by a peer (an origin, or a client address): `burst` requests at once,
 * refilled at `perSecond`. The state per peer is a few numbers, and the map is capped: when
 * full, the buckets that have refilled completely (they hold no information) go first, then
 * the least recently used, so a flood of new peers cannot grow memory without bound.
 * @module
 */
import type { RateLimit } from "../config.ts";

/** What {@link RateLimiter.take} decided. */
export type RateDecision =
  | { readonly ok: true }
  | {
      readonly ok: false;
      /** Whole seconds until one request is allowed again. */ readonly retryAfterSeconds: number;
    };

/** A set of token buckets, one per key. */
export interface RateLimiter {
  /** Spends one token of `key`'s bucket, or says how long to wait for one. */
  take(key: string): RateDecision;
  /** Says whether `key` has a token, without spending it. */
  peek(key: string): RateDecision;
  /** Buckets kept (tests, metrics). */
  readonly size: number;
}

/** Options for {@link createRateLimiter}. */
export interface RateLimiterOptions extends RateLimit {
  /** Buckets kept at most. @defaultValue 10000 */
  readonly maxKeys?: number;
  /** The clock, in ms (tests). @defaultValue Date.now */
  readonly now?: () => number;
}

/** Creates a {@link RateLimiter}. */
export function createRateLimiter(options: RateLimiterOptions): RateLimiter {
  const { burst, perSecond } = options;
  const maxKeys = options.maxKeys ?? 10_000;
  const now = options.now ?? Date.now;
  const buckets = new Map<string, { tokens: number; at: number }>();

  function current(key: string): { tokens: number; at: number } {
    const t = now();
    const bucket = buckets.get(key);
    if (bucket == null) return { tokens: burst, at: t };
    const tokens = Math.min(burst, bucket.tokens + ((t - bucket.at) / 1000) * perSecond);
    return { tokens, at: t };
  }

  function decide(tokens: number): RateDecision {
    return tokens >= 1
      ? { ok: true }
      : { ok: false, retryAfterSeconds: Math.max(1, Math.ceil((1 - tokens) / perSecond)) };
  }

  function evict(): void {
    if (buckets.size < maxKeys) return;
    for (const [key] of buckets) {
      if (current(key).tokens >= burst) buckets.delete(key);
    }
    while (buckets.size >= maxKeys) {
      const oldest = buckets.keys().next().value;
      if (oldest == null) break;
      buckets.delete(oldest);
    }
  }

  return {
    take(key) {
      const bucket = current(key);
      const decision = decide(bucket.tokens);
      if (decision.ok) bucket.tokens -= 1;
      buckets.delete(key);
      evict();
      buckets.set(key, bucket);
      return decision;
    },
    peek(key) {
      return decide(current(key).tokens);
    },
    get size() {
      return buckets.size;
    },
  };
}
