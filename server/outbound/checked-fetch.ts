/**
 * The one path every outbound request of a cluster takes: key and actor fetches, remote
 * task and artifact documents, artifact downloads, and the POSTs that deliver activities to
 * peers' inboxes. Each hop is checked before it is sent:
 * http(s) only, never from https down to http, and the address actually connected to must
 * be public or on the cluster's explicit allowlist. The check runs inside the socket's name
 * lookup, so a name that resolves to a private address (DNS rebinding included) is refused
 * at connect time, not only when first looked at. Redirects are followed one hop at a time,
 * each hop checked again, at most {@link OUTBOUND_LIMITS.maxRedirects}; a POST never follows
 * a redirect (its answer is returned as it came). Requests have a
 * total time limit and an idle limit, documents a size limit, and all requests made while
 * handling one inbound activity share a budget ({@link withFetchBudget}).
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { isIP, type LookupFunction } from "node:net";
import { Readable } from "node:stream";
import { isAddressPermitted, unbracket, type PrivateAddressAllowlist } from "./address-policy.ts";

/** Default figures of outbound requests (spec/v1/limits.md, TW-FETCH-*). */
export const OUTBOUND_LIMITS = {
  /** Whole request, connect to last byte, for documents and keys. */
  timeoutMs: 10_000,
  /** Longest silence on a socket (connect included) before it is given up. */
  idleTimeoutMs: 5_000,
  /** Largest fetched document (actor, key, task, artifact metadata). */
  maxDocumentBytes: 1024 * 1024,
  /** Redirects followed per request, each one checked like the first URL. */
  maxRedirects: 3,
  /** Remote requests one inbound activity may cause (keys, actors, documents). */
  fetchBudgetPerActivity: 10,
} as const;

/** Why an outbound request was refused or given up before a usable answer. */
export type OutboundRefusal =
  | "bad-scheme"
  | "downgrade"
  | "private-address"
  | "too-many-redirects"
  | "too-large"
  | "timeout"
  | "budget-exhausted"
  | "network";

/** An outbound request that was refused by policy or failed on the network. */
export class OutboundFetchError extends Error {
  override readonly name = "OutboundFetchError";
  constructor(
    readonly url: string,
    readonly reason: OutboundRefusal,
    message: string,
    options?: ErrorOptions,
  ) {
    super(`${url}: ${message}`, options);
  }
}

/** The remote requests left to the inbound activity being handled. */
interface FetchBudget {
  remaining: number;
  readonly limit: number;
}

const budgets = new AsyncLocalStorage<FetchBudget>();

/**
 * Runs `fn` with a budget of `limit` outbound requests (each redirect hop counts) shared by
 * everything it starts, however deep; past it, requests fail with `budget-exhausted`.
 */
export function withFetchBudget<T>(limit: number, fn: () => T): T {
  return budgets.run({ remaining: limit, limit }, fn);
}

/** Requests left in the current budget, or undefined outside one. */
export function remainingFetchBudget(): number | undefined {
  return budgets.getStore()?.remaining;
}

/** Options of one {@link OutboundFetch} call. */
export interface OutboundRequestInit {
  /** @defaultValue `"GET"` */
  readonly method?: "GET" | "HEAD" | "POST";
  readonly headers?: Record<string, string>;
  /** The body of a POST, sent with its `Content-Length`. */
  readonly body?: string | Uint8Array;
  readonly signal?: AbortSignal;
  /** `manual` returns redirects to the caller (who checks the next hop by calling again). */
  readonly redirect?: "follow" | "manual";
  /** Overrides the total time limit of this request. */
  readonly timeoutMs?: number;
  /** Overrides the idle limit (a peer that answers a POST only once it has handled it). */
  readonly idleTimeoutMs?: number;
  /**
   * Signs each hop (an authenticated fetch). Hops on another origin than the first URL are
   * sent unsigned: a signature is never handed to wherever a redirect points.
   */
  readonly sign?: (request: Request) => Promise<Request>;
}

/**
 * A checked `fetch`: the response body streams; nothing is read unless the caller reads.
 * The response's `url` is the URL that answered, after any redirects.
 */
export type OutboundFetch = (url: string | URL, init?: OutboundRequestInit) => Promise<Response>;

/** Options for {@link createOutboundFetch}. */
export interface OutboundFetchOptions {
  readonly allowlist: PrivateAddressAllowlist;
  /** @defaultValue {@link OUTBOUND_LIMITS.timeoutMs} */
  readonly timeoutMs?: number;
  /** @defaultValue {@link OUTBOUND_LIMITS.idleTimeoutMs} */
  readonly idleTimeoutMs?: number;
  /** @defaultValue {@link OUTBOUND_LIMITS.maxRedirects} */
  readonly maxRedirects?: number;
  /** Sent on every request. */
  readonly userAgent?: string;
  /** Told of every request actually sent (tests count key refetches with it). */
  readonly onRequest?: (url: URL) => void;
}

function checkedLookup(
  url: string,
  port: number,
  allowlist: PrivateAddressAllowlist,
  refused: (address: string) => void,
): LookupFunction {
  return (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (error, addresses: LookupAddress[]) => {
      if (error != null) {
        callback(error, "", 4);
        return;
      }
      // Every address the name has must be permitted: a name that also points inward is
      // refused outright rather than raced.
      const bad = addresses.find((a) => !isAddressPermitted(a.address, port, allowlist));
      if (bad != null || addresses.length === 0) {
        refused(bad?.address ?? "none");
        callback(
          Object.assign(new Error(`${url} resolves to a refused address`), {
            code: "ERR_TASKWEB_PRIVATE_ADDRESS",
          }),
          "",
          4,
        );
        return;
      }
      if (options.all === true) {
        (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, addresses);
      } else {
        const first = addresses[0]!;
        callback(null, first.address, first.family);
      }
    });
  };
}

function headersOf(res: IncomingMessage): Headers {
  const headers = new Headers();
  const raw = res.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    try {
      headers.append(raw[i]!, raw[i + 1]!);
    } catch {
      // A header the Fetch API cannot represent is dropped.
    }
  }
  return headers;
}

/** Builds the checked fetch of a cluster. */
export function createOutboundFetch(options: OutboundFetchOptions): OutboundFetch {
  const maxRedirects = options.maxRedirects ?? OUTBOUND_LIMITS.maxRedirects;
  const idleTimeoutMs = options.idleTimeoutMs ?? OUTBOUND_LIMITS.idleTimeoutMs;

  async function once(
    url: URL,
    init: OutboundRequestInit,
    signal: AbortSignal,
    signHop: boolean,
  ): Promise<Response> {
    // A delivery is this cluster's own send, bounded by its delivery rows, never by the
    // inbound activity whose handling happened to set it off.
    const budget = init.method === "POST" ? undefined : budgets.getStore();
    if (budget != null) {
      if (budget.remaining <= 0) {
        throw new OutboundFetchError(
          url.href,
          "budget-exhausted",
          `the budget of ${budget.limit} remote requests for one inbound activity is spent`,
        );
      }
      budget.remaining--;
    }
    const host = unbracket(url.hostname);
    const port = Number(url.port || (url.protocol === "https:" ? 443 : 80));
    if (isIP(host) !== 0 && !isAddressPermitted(host, port, options.allowlist)) {
      throw new OutboundFetchError(
        url.href,
        "private-address",
        `${host} is a private or special-use address and not on the allowlist`,
      );
    }
    let headers: Record<string, string> = {
      ...(options.userAgent != null ? { "user-agent": options.userAgent } : {}),
      ...init.headers,
    };
    if (init.body != null) headers["content-length"] = String(Buffer.byteLength(init.body));
    const idle = init.idleTimeoutMs ?? idleTimeoutMs;
    if (signHop && init.sign != null) {
      const signed = await init.sign(new Request(url, { method: init.method ?? "GET", headers }));
      headers = Object.fromEntries(signed.headers);
    }
    options.onRequest?.(url);
    let refusedAddress: string | undefined;
    return await new Promise<Response>((resolve, reject) => {
      const request = (url.protocol === "https:" ? httpsRequest : httpRequest)(
        url,
        {
          method: init.method ?? "GET",
          headers,
          signal,
          timeout: idle,
          lookup: checkedLookup(url.href, port, options.allowlist, (a) => (refusedAddress = a)),
          agent: false,
        },
        (res) => {
          const status = res.statusCode ?? 0;
          const nullBody = init.method === "HEAD" || status === 204 || status === 304;
          if (status < 200 || status > 599) {
            res.destroy();
            reject(new OutboundFetchError(url.href, "network", `unexpected status ${status}`));
            return;
          }
          res.setTimeout(idle, () => {
            res.destroy(new OutboundFetchError(url.href, "timeout", "the response stalled"));
          });
          if (nullBody) res.resume();
          resolve(
            new Response(nullBody ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>), {
              status,
              statusText: res.statusMessage ?? "",
              headers: headersOf(res),
            }),
          );
        },
      );
      request.on("timeout", () => {
        request.destroy(new OutboundFetchError(url.href, "timeout", "no answer in time"));
      });
      request.on("error", (error: Error) => {
        if (error instanceof OutboundFetchError) reject(error);
        else if (refusedAddress != null)
          reject(
            new OutboundFetchError(
              url.href,
              "private-address",
              `${url.hostname} resolves to ${refusedAddress}, a private or special-use address not on the allowlist`,
            ),
          );
        else if (signal.aborted)
          reject(new OutboundFetchError(url.href, "timeout", "gave up", { cause: error }));
        else reject(new OutboundFetchError(url.href, "network", error.message, { cause: error }));
      });
      if (init.body != null) request.end(init.body);
      else request.end();
    });
  }

  return async (input, init = {}) => {
    const first = new URL(input);
    const signals = [
      AbortSignal.timeout(init.timeoutMs ?? options.timeoutMs ?? OUTBOUND_LIMITS.timeoutMs),
    ];
    if (init.signal != null) signals.push(init.signal);
    const signal = AbortSignal.any(signals);
    let current = first;
    let previous: URL | undefined;
    for (let hop = 0; ; hop++) {
      if (current.protocol !== "https:" && current.protocol !== "http:") {
        throw new OutboundFetchError(current.href, "bad-scheme", "only http(s) URLs are fetched");
      }
      if (previous?.protocol === "https:" && current.protocol === "http:") {
        throw new OutboundFetchError(
          previous.href,
          "downgrade",
          `refused a redirect from https to ${current.href}`,
        );
      }
      if (current.username !== "" || current.password !== "") {
        throw new OutboundFetchError(
          current.href,
          "bad-scheme",
          "URLs with credentials are refused",
        );
      }
      const response = await once(current, init, signal, current.origin === first.origin);
      const location = response.headers.get("location");
      if (
        init.redirect === "manual" ||
        init.method === "POST" ||
        response.status < 300 ||
        response.status >= 400 ||
        location == null
      ) {
        // Who answered, after redirects: a caller that trusts an origin checks this one.
        Object.defineProperty(response, "url", { value: current.href });
        return response;
      }
      await response.body?.cancel();
      if (hop >= maxRedirects) {
        throw new OutboundFetchError(
          first.href,
          "too-many-redirects",
          `more than ${maxRedirects} redirects`,
        );
      }
      previous = current;
      try {
        current = new URL(location, current);
      } catch {
        throw new OutboundFetchError(previous.href, "network", "malformed Location header");
      }
    }
  };
}

/**
 * Reads a response body of at most `maxBytes` (a larger `Content-Length` is refused before
 * reading; a body that grows past the limit is cut off).
 */
export async function readLimited(
  response: Response,
  url: string,
  maxBytes: number = OUTBOUND_LIMITS.maxDocumentBytes,
): Promise<Uint8Array> {
  const declared = Number(response.headers.get("content-length") ?? "0");
  if (declared > maxBytes) {
    await response.body?.cancel();
    throw new OutboundFetchError(url, "too-large", `${declared} bytes is over ${maxBytes}`);
  }
  if (response.body == null) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = response.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.length;
      if (size > maxBytes) {
        await reader.cancel();
        throw new OutboundFetchError(url, "too-large", `the body passed ${maxBytes} bytes`);
      }
      chunks.push(value);
    }
  } catch (error) {
    if (error instanceof OutboundFetchError) throw error;
    throw new OutboundFetchError(url, "network", `reading the body failed: ${String(error)}`, {
      cause: error,
    });
  }
  return Buffer.concat(chunks);
}

/**
 * True when `url` is http(s) and every address its host resolves to is permitted: a check
 * when a URL is stored (a follower's inbox), so that a follow that could never be delivered
 * is refused at once. Deliveries still go through the checked fetch, which checks again the
 * address actually connected to.
 */
export async function isPermittedUrl(
  url: string,
  allowlist: PrivateAddressAllowlist,
): Promise<boolean> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  if (parsed.protocol !== "https:" && parsed.protocol !== "http:") return false;
  const host = unbracket(parsed.hostname);
  const port = Number(parsed.port || (parsed.protocol === "https:" ? 443 : 80));
  if (isIP(host) !== 0) return isAddressPermitted(host, port, allowlist);
  const addresses = await new Promise<LookupAddress[]>((resolve) =>
    dnsLookup(host, { all: true }, (error, found) => resolve(error == null ? found : [])),
  );
  return (
    addresses.length > 0 && addresses.every((a) => isAddressPermitted(a.address, port, allowlist))
  );
}
