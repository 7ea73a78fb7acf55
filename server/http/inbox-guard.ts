/**
 * Checks every POST to an inbox before Fedify or any JSON-LD processor sees it: media
 * type, body size, JSON nesting depth, and a verified HTTP signature (RFC 9421 or
 * draft-cavage) whose key belongs to the activity's actor, on the actor's origin, inside the
 * time window (including an `expires` parameter that has passed). Fedify checks again and also accepts Linked Data signatures and proofs, but
 * those can be replayed without any time bound, so taskweb requires the HTTP signature.
 * @module
 */
import { AsyncResource } from "node:async_hooks";
import { verifyRequestDetailed, type DocumentLoader, type KeyCache } from "@fedify/fedify";
import type { CryptographicKey, Multikey } from "@fedify/vocab";
import { preloadedContexts } from "@fedify/vocab-runtime";
import { getLogger } from "@logtape/logtape";
import type { NextFunction, Request as ERequest, Response as EResponse } from "express";
import { checkJsonLimits, sameOrigin } from "../../protocol/index.ts";
import { withFetchBudget } from "../outbound/checked-fetch.ts";
import { toWebRequest } from "./fedify-adapter.ts";
import type { RateDecision, RateLimiter } from "./rate-limit.ts";

const logger = getLogger(["taskweb", "http", "inbox"]);

/** Limits applied by the inbox guard. */
export const INBOX_LIMITS = {
  /** Largest accepted body. */
  maxBodyBytes: 1024 * 1024,
  /** Deepest accepted JSON nesting. */
  maxJsonDepth: 32,
  /** Largest accepted clock difference of a signature's `created` / `Date`, in seconds. */
  signatureWindowSeconds: 300,
} as const;

const ACTIVITY_MEDIA_TYPES = [
  "application/activity+json",
  "application/ld+json",
  "application/json",
];

/** Why the guard refused a request; also the `reason` counted by metrics. */
export type InboxRefusal =
  | "unsupported-media-type"
  | "too-large"
  | "malformed"
  | "no-signature"
  | "invalid-signature"
  | "key-fetch-failed"
  | "key-not-owned-by-actor"
  | "body-not-covered"
  | "rate-limited"
  | "signature-expired"
  | "blocked-actor";

/** Why the guard answered 202 without passing a verified request on. */
export type InboxIgnoral = "unsupported-context";

/**
 * Components an RFC 9421 signature must cover, and headers a draft-cavage signature must
 * cover, so that the signature binds the method, the target, the time and the body.
 */
const REQUIRED_RFC9421 = ['"@method"', '"@target-uri"', '"content-digest"'];
const REQUIRED_CAVAGE = ["(request-target)", "host", "date", "digest"];

/** True when every signature on the request covers what binds it to this request's body. */
export function signatureCoversBody(headers: {
  signatureInput: string | undefined;
  signature: string | undefined;
}): boolean {
  if (headers.signatureInput != null) {
    // Each signature is `label=("c1" "c2" …);params`; all of them must cover the body.
    const lists = [...headers.signatureInput.matchAll(/=\(([^)]*)\)/g)].map((m) => m[1] ?? "");
    return (
      lists.length > 0 &&
      lists.every((list) => REQUIRED_RFC9421.every((c) => list.split(/\s+/).includes(c)))
    );
  }
  const covered = /(?:^|,)\s*headers="([^"]*)"/.exec(headers.signature ?? "")?.[1];
  if (covered == null) return false;
  const names = covered.toLowerCase().split(/\s+/);
  return REQUIRED_CAVAGE.every((h) => names.includes(h));
}

/**
 * True when a signature on the request has an `expires` parameter at or before `nowSeconds`
 * (RFC 9421 §2.3 and draft-cavage-12 §2.1.5 both define it, in seconds since the epoch).
 * The library that verifies the signature ignores the parameter, so the guard checks it first.
 * Quoted strings (a `keyid`, a base64 signature) are blanked before searching, so they cannot
 * hide or fake a parameter.
 */
export function signatureExpired(
  headers: { signatureInput: string | undefined; signature: string | undefined },
  nowSeconds: number = Date.now() / 1000,
): boolean {
  const expiries: number[] = [];
  if (headers.signatureInput != null) {
    const unquoted = headers.signatureInput.replace(/"(?:[^"\\]|\\.)*"/g, '""');
    for (const m of unquoted.matchAll(/;\s*expires=(-?\d+(?:\.\d+)?)/g))
      expiries.push(Number(m[1]));
  } else if (headers.signature != null) {
    // name=value pairs in order, each quoted value consumed whole.
    for (const m of headers.signature.matchAll(/\s*([A-Za-z]+)=(?:"([^"]*)"|([^,]*))\s*(?:,|$)/g)) {
      if (m[1] === "expires") expiries.push(Number(m[2] ?? m[3]));
    }
  }
  // An unreadable expiry is treated as passed: the sender asked for a bound we cannot honour.
  return expiries.some((e) => !Number.isFinite(e) || e <= nowSeconds);
}

/**
 * True when every remote context the document names is one every receiver has built in:
 * any other would make the receiver fetch it (and fail, or be steered) before it can
 * even read the activity.
 */
export function usesOnlyKnownContexts(json: unknown): boolean {
  if (typeof json !== "object" || json === null || Array.isArray(json)) return true;
  const context = (json as Record<string, unknown>)["@context"];
  return [context].flat().every((c) => typeof c !== "string" || c in preloadedContexts);
}

/** A small in-memory cache of verified public keys (refetched when a signature fails). */
export function createMemoryKeyCache(maxEntries = 1000): KeyCache {
  const entries = new Map<string, { key: CryptographicKey | Multikey | null; at: number }>();
  const ttlMs = 3600_000;
  const negativeTtlMs = 300_000;
  return {
    get(keyId) {
      const hit = entries.get(keyId.href);
      // A key that could not be fetched is remembered for less time than one that could.
      const ttl = hit?.key == null ? negativeTtlMs : ttlMs;
      if (hit == null || Date.now() - hit.at > ttl) return Promise.resolve(undefined);
      return Promise.resolve(hit.key);
    },
    set(keyId, key) {
      // A failed refetch (refused by the refetch limit, or the peer briefly down) must not
      // replace a key that verified: a forger could otherwise evict a peer's key.
      if (key == null && entries.get(keyId.href)?.key != null) return Promise.resolve();
      if (entries.size >= maxEntries) {
        const oldest = entries.keys().next().value;
        if (oldest != null) entries.delete(oldest);
      }
      entries.set(keyId.href, { key, at: Date.now() });
      return Promise.resolve();
    },
  };
}

/** Options for {@link inboxGuard}. */
export interface InboxGuardOptions {
  /**
   * Told the body of every request that passed the checks, as sent (before any JSON-LD
   * processing): relays embed originals byte for byte as their proofs cover them.
   */
  readonly onAdmitted?: (json: Record<string, unknown>) => void;
  readonly origin: string;
  /** Loads keys (an authenticated loader, for peers that require signed fetches). */
  readonly documentLoader: () => DocumentLoader;
  readonly contextLoader: DocumentLoader;
  readonly keyCache: KeyCache;
  /** Told of every refusal (metrics, tests). */
  readonly onRefused?: (reason: InboxRefusal) => void;
  /**
   * Whether the activity's actor is blocked by the federation policy; its requests are
   * refused with 403 before the signature is even checked, except a Follow, which the
   * federation answers with a Reject. @defaultValue nobody is blocked
   */
  readonly isBlocked?: (actorId: string) => Promise<boolean>;
  /** Told of every verified request answered 202 without being acted on. */
  readonly onIgnored?: (reason: InboxIgnoral) => void;
  /** Verified requests, per origin of the signing actor. */
  readonly originLimiter?: RateLimiter;
  /** Refused requests, per client address; an address out of tokens gets 429 at once. */
  readonly refusedLimiter?: RateLimiter;
  /**
   * Remote requests (keys, actors, documents) one inbound request may cause, its handling
   * by Fedify and taskweb included. @defaultValue 10
   */
  readonly fetchBudget?: number;
  /** Told of every request whose signature verified with a key its actor owns. */
  readonly onVerified?: () => void;
}

function refuse(
  res: EResponse,
  status: number,
  reason: InboxRefusal,
  message: string,
  onRefused?: (reason: InboxRefusal) => void,
): void {
  onRefused?.(reason);
  logger.info("Inbox refused a request ({reason}): {message}", { reason, message });
  res.status(status).json({ code: reason, message });
}

function tooMany(
  res: EResponse,
  retryAfterSeconds: number,
  message: string,
  onRefused?: (reason: InboxRefusal) => void,
): void {
  onRefused?.("rate-limited");
  res.setHeader("Retry-After", String(retryAfterSeconds));
  res.status(429).json({ code: "rate-limited", message, retryAfterSeconds });
}

/** Express middleware for POSTs to the inbox and the shared inbox. */
export function inboxGuard(options: InboxGuardOptions) {
  return (req: ERequest, res: EResponse, next: NextFunction): void => {
    const client = req.socket.remoteAddress ?? "unknown";
    const refusedLimiter = options.refusedLimiter;
    if (refusedLimiter == null) {
      guard(req, res, next, () => {});
      return;
    }
    refusedLimiter.peek(client).then(
      AsyncResource.bind((blocked: RateDecision) => {
        if (!blocked.ok) {
          tooMany(
            res,
            blocked.retryAfterSeconds,
            "Too many refused requests from this address; wait before sending again.",
            options.onRefused,
          );
          req.resume();
          return;
        }
        // Every refusal spends one request of the client address's budget.
        guard(req, res, next, () => {
          refusedLimiter.take(client).catch((error: unknown) => {
            logger.warn("Refusal not counted: {error}", { error: String(error) });
          });
        });
      }),
      (error: unknown) => {
        logger.error("Inbox guard failed: {error}", { error: String(error) });
        req.resume();
        if (!res.headersSent) {
          res.status(500).json({ code: "InternalServerError", message: "Try again later." });
        }
      },
    );
  };

  function guard(
    req: ERequest,
    res: EResponse,
    next: NextFunction,
    spendRefusal: () => void,
  ): void {
    const onRefused = (reason: InboxRefusal) => {
      spendRefusal();
      options.onRefused?.(reason);
    };
    const type = (req.headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
    if (!ACTIVITY_MEDIA_TYPES.includes(type)) {
      refuse(
        res,
        415,
        "unsupported-media-type",
        "Send activities as application/activity+json.",
        onRefused,
      );
      req.resume();
      return;
    }
    const refuseTooLarge = () => {
      refuse(
        res,
        413,
        "too-large",
        `Bodies are limited to ${INBOX_LIMITS.maxBodyBytes} bytes.`,
        onRefused,
      );
      req.destroy();
    };
    // Refused before reading when the declared length is too large, else once the bytes read
    // exceed the limit.
    const declared = Number(req.headers["content-length"] ?? "0");
    if (declared > INBOX_LIMITS.maxBodyBytes) {
      refuseTooLarge();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let aborted = false;
    // Bound to this request's asynchronous context, so that log lines keep its request id.
    req.on(
      "data",
      AsyncResource.bind((chunk: Buffer) => {
        if (aborted) return;
        size += chunk.length;
        if (size > INBOX_LIMITS.maxBodyBytes) {
          aborted = true;
          refuseTooLarge();
          return;
        }
        chunks.push(chunk);
      }),
    );
    req.on("error", () => {
      aborted = true;
    });
    req.on(
      "end",
      AsyncResource.bind(() => {
        if (aborted) return;
        const body = Buffer.concat(chunks);
        withFetchBudget(options.fetchBudget ?? 10, () => check(body)).catch((error: unknown) => {
          logger.error("Inbox guard failed: {error}", { error: String(error) });
          if (!res.headersSent)
            res.status(500).json({ code: "InternalServerError", message: "Try again later." });
        });
      }),
    );

    async function check(body: Buffer): Promise<void> {
      const limits = checkJsonLimits(body, {
        maxBytes: INBOX_LIMITS.maxBodyBytes,
        maxDepth: INBOX_LIMITS.maxJsonDepth,
      });
      if (!limits.ok) {
        refuse(
          res,
          limits.reason.code === "too-large" ? 413 : 400,
          limits.reason.code === "too-large" ? "too-large" : "malformed",
          limits.reason.message,
          onRefused,
        );
        return;
      }
      const json = limits.value as Record<string, unknown> | null;
      const actor =
        json != null && typeof json === "object" && !Array.isArray(json)
          ? typeof json.actor === "string"
            ? json.actor
            : typeof json.actor === "object" && json.actor != null && "id" in json.actor
              ? String((json.actor as { id: unknown }).id)
              : undefined
          : undefined;
      if (actor == null) {
        refuse(res, 400, "malformed", "The body must be an activity with an actor.", onRefused);
        return;
      }
      // A blocked actor's Follow goes on, to be answered with a Reject once verified.
      if (
        json?.type !== "Follow" &&
        options.isBlocked != null &&
        (await options.isBlocked(actor))
      ) {
        refuse(
          res,
          403,
          "blocked-actor",
          "This cluster does not accept activities from your actor.",
          options.onRefused,
        );
        return;
      }
      if (req.headers.signature == null && req.headers["signature-input"] == null) {
        refuse(
          res,
          401,
          "no-signature",
          "Sign the request with an HTTP signature (RFC 9421 or draft-cavage-12).",
          onRefused,
        );
        return;
      }
      const signatureInput = req.headers["signature-input"];
      const signature = req.headers.signature;
      if (
        !signatureCoversBody({
          signatureInput: typeof signatureInput === "string" ? signatureInput : undefined,
          signature: typeof signature === "string" ? signature : undefined,
        })
      ) {
        refuse(
          res,
          401,
          "body-not-covered",
          'The signature must cover "@method", "@target-uri" and "content-digest" (RFC 9421), or (request-target), host, date and digest (draft-cavage).',
          onRefused,
        );
        return;
      }
      if (
        signatureExpired({
          signatureInput: typeof signatureInput === "string" ? signatureInput : undefined,
          signature: typeof signature === "string" ? signature : undefined,
        })
      ) {
        refuse(
          res,
          401,
          "signature-expired",
          "The HTTP signature has expired (its expires parameter has passed); sign the request again.",
          options.onRefused,
        );
        return;
      }
      const request = toWebRequest(req, options.origin, body);
      const result = await verifyRequestDetailed(request, {
        documentLoader: options.documentLoader(),
        contextLoader: options.contextLoader,
        keyCache: options.keyCache,
        timeWindow: { seconds: INBOX_LIMITS.signatureWindowSeconds },
      });
      if (!result.verified) {
        const reason =
          result.reason.type === "keyFetchError" ? "key-fetch-failed" : "invalid-signature";
        refuse(
          res,
          401,
          reason,
          reason === "key-fetch-failed"
            ? "The signing key could not be fetched."
            : `The HTTP signature does not verify (stale, altered, or not covering the digest; window ±${INBOX_LIMITS.signatureWindowSeconds} s).`,
          onRefused,
        );
        return;
      }
      const key = result.key;
      const owner = key.ownerId?.href;
      if (owner !== actor || key.id == null || !sameOrigin(key.id.href, actor)) {
        refuse(
          res,
          401,
          "key-not-owned-by-actor",
          "The signing key does not belong to the activity's actor.",
          onRefused,
        );
        return;
      }
      if (options.originLimiter != null) {
        const decision = await options.originLimiter.take(new URL(actor).origin);
        if (!decision.ok) {
          tooMany(
            res,
            decision.retryAfterSeconds,
            `Too many activities from ${new URL(actor).origin}; retry after the delay.`,
            options.onRefused,
          );
          return;
        }
      }
      options.onVerified?.();
      if (!usesOnlyKnownContexts(json)) {
        // Signed by its actor, so not an attack on us; but a receiver that had to fetch the
        // context could never process it, and a 4xx/5xx would only make the sender retry.
        options.onIgnored?.("unsupported-context");
        logger.info("Ignored an activity whose @context names a remote document.", {});
        res.status(202).json({
          ignored: "unsupported-context",
          message: "Inline every context except the ActivityStreams and security ones.",
        });
        return;
      }
      (req as ERequest & { rawBody?: Uint8Array }).rawBody = body;
      options.onAdmitted?.(json as Record<string, unknown>);
      next();
    }
  }
}
