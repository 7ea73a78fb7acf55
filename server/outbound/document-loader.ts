/**
 * JSON-LD document loaders over the checked fetch, for Fedify (documents, contexts, the
 * authenticated loader that fetches keys) and for taskweb's own dereferencing. A document
 * must come back with an ActivityStreams media type (a JSON body served as `text/plain` or
 * `application/json` is refused, as after CVE-2024-25623), within the size limit and the
 * JSON depth limit. Well-known contexts are served from memory and never fetched. A key
 * that was fetched a moment ago is not fetched again: {@link createRefetchLimiter}.
 * @module
 */
import { signRequest } from "@fedify/fedify";
import { preloadedContexts, type DocumentLoader, type RemoteDocument } from "@fedify/vocab-runtime";
import { checkJsonLimits, DEFAULT_MAX_JSON_DEPTH } from "../../protocol/index.ts";
import {
  OUTBOUND_LIMITS,
  OutboundFetchError,
  readLimited,
  type OutboundFetch,
} from "./checked-fetch.ts";
import { createRateLimiter, type RateLimitStore } from "../http/rate-limit.ts";

const ACCEPT =
  'application/activity+json, application/ld+json; profile="https://www.w3.org/ns/activitystreams"';

/** Media types a fetched ActivityStreams document may have. */
const DOCUMENT_TYPES = ["application/activity+json", "application/ld+json"];

/** Options for {@link createCheckedDocumentLoader}. */
export interface CheckedDocumentLoaderOptions {
  /** Also accept `application/json` (context documents). @defaultValue false */
  readonly acceptPlainJson?: boolean;
  /** Signs each same-origin hop (the authenticated loader). */
  readonly sign?: (request: Request) => Promise<Request>;
  /** @defaultValue {@link OUTBOUND_LIMITS.maxDocumentBytes} */
  readonly maxBytes?: number;
}

/** A document loader whose every request goes through `fetch`. */
export function createCheckedDocumentLoader(
  fetch: OutboundFetch,
  options: CheckedDocumentLoaderOptions = {},
): DocumentLoader {
  return async (url, loaderOptions): Promise<RemoteDocument> => {
    if (url in preloadedContexts) {
      return { contextUrl: null, documentUrl: url, document: preloadedContexts[url] };
    }
    const response = await fetch(url, {
      headers: { accept: ACCEPT },
      ...(loaderOptions?.signal != null ? { signal: loaderOptions.signal } : {}),
      ...(options.sign != null ? { sign: options.sign } : {}),
    });
    if (!response.ok) {
      await response.body?.cancel();
      throw new OutboundFetchError(url, "network", `HTTP ${response.status}`);
    }
    const type = (response.headers.get("content-type") ?? "").split(";")[0]?.trim().toLowerCase();
    const accepted =
      options.acceptPlainJson === true ? [...DOCUMENT_TYPES, "application/json"] : DOCUMENT_TYPES;
    if (type == null || !accepted.includes(type)) {
      await response.body?.cancel();
      throw new OutboundFetchError(
        url,
        "network",
        `served as ${JSON.stringify(type ?? "")}, not as an ActivityStreams document`,
      );
    }
    const bytes = await readLimited(response, url, options.maxBytes);
    const parsed = checkJsonLimits(bytes, {
      maxBytes: options.maxBytes ?? OUTBOUND_LIMITS.maxDocumentBytes,
      maxDepth: DEFAULT_MAX_JSON_DEPTH,
    });
    if (!parsed.ok) throw new OutboundFetchError(url, "too-large", parsed.reason.message);
    // The URL that answered, after redirects: catch-up refuses a page served from elsewhere.
    return { contextUrl: null, documentUrl: response.url || url, document: parsed.value };
  };
}

/**
 * Builds the signer of an authenticated fetch for `identity`: draft-cavage (widely read) for
 * the authenticated loader, RFC 9421 where the peer is a taskweb cluster (artifact downloads).
 */
export function signerFor(
  identity: { keyId: URL; privateKey: CryptoKey },
  spec: "draft-cavage-http-signatures-12" | "rfc9421" = "draft-cavage-http-signatures-12",
): (request: Request) => Promise<Request> {
  return (request) => signRequest(request, identity.privateKey, identity.keyId, { spec });
}

/** Options for {@link createRefetchLimiter}. */
export interface RefetchLimiterOptions {
  /** A key document is fetched again at most once per this many ms. @defaultValue 300000 */
  readonly intervalMs?: number;
  /** Key documents remembered; the oldest are forgotten first. @defaultValue 1000 */
  readonly maxEntries?: number;
  /**
   * Where the refetch budget is kept: on Redis, every process of the cluster spends from
   * one budget per key document. @defaultValue `{ kind: "memory" }`
   */
  readonly store?: RateLimitStore;
}

/**
 * Wraps the loader that fetches signing keys so that, after a process's first fetch of it,
 * one key document is fetched again at most once per interval by the whole cluster (the
 * budget is shared through `store`). A signature that fails with a cached key makes the
 * verifier fetch the key again (a peer may have rotated it); a forger sending bad signatures
 * under a real key id would otherwise turn every request into a fetch from that peer. A
 * refetch the budget refuses is answered with the document this process fetched last, so
 * genuine requests that raced a rotation verify with the new key and forged ones still fail.
 */
export function createRefetchLimiter(
  loader: DocumentLoader,
  options: RefetchLimiterOptions = {},
): DocumentLoader {
  const intervalMs = options.intervalMs ?? 300_000;
  const maxEntries = options.maxEntries ?? 1000;
  const budget = createRateLimiter({
    name: "key-refetch",
    burst: 1,
    perSecond: 1000 / intervalMs,
    ...(options.store != null ? { store: options.store } : {}),
  });
  /** Key URL → the document this process fetched last. */
  const entries = new Map<string, Promise<RemoteDocument>>();
  return async (url, loaderOptions) => {
    if (url in preloadedContexts) return await loader(url, loaderOptions);
    const key = url.replace(/#.*$/, "");
    const last = entries.get(key);
    // The first fetch of a key by this process is free; every later one spends the budget.
    if (last != null) {
      const decision = await budget.take(key);
      if (!decision.ok) {
        const document = await last.catch(() => undefined);
        if (document != null) return document;
        throw new OutboundFetchError(
          url,
          "budget-exhausted",
          `fetched again less than ${intervalMs / 1000} s ago; keys are refetched at most once per interval (retry in ${decision.retryAfterSeconds} s)`,
        );
      }
    }
    const document = loader(url, loaderOptions);
    entries.delete(key);
    entries.set(key, document);
    if (entries.size > maxEntries) {
      const oldest = entries.keys().next().value;
      if (oldest != null) entries.delete(oldest);
    }
    return await document;
  };
}
