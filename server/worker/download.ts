/**
 * The downloader: fetches a file and proves it is the one that was published. Size and
 * sha256 must match, or no file is left behind. Network errors, 5xx and 429 answers are
 * retried with exponential backoff and jitter (honouring `Retry-After`); an interrupted
 * download resumes where it stopped with a `Range` request (`If-Range` on the validator
 * the server gave), and starts over when the server cannot resume. Redirects are followed
 * one hop at a time, each hop checked like the first URL (http(s) only, never from https to
 * http, and through the cluster's checked fetch: public addresses or allowlisted ones). The bytes are written to `<dest>.partial` and
 * renamed to `dest` only once verified. With `sign`, every request to the first URL's origin
 * (Range resumes included) carries the cluster's HTTP signature, so that a private artifact
 * is served; a hop to another origin is sent unsigned. A 401 or 403 answer is not retried
 * ({@link NotAuthorizedError}). The worker fetches its inputs with it, and
 * `taskweb artifact get` exposes it to users.
 * @module
 */
import { createHash, type Hash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { Readable, Transform } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { pipeline } from "node:stream/promises";
import { parseAllowlist } from "../outbound/address-policy.ts";
import {
  createOutboundFetch,
  OutboundFetchError,
  type OutboundFetch,
} from "../outbound/checked-fetch.ts";

/** The bytes did not match the published digest or size. */
export class DigestMismatchError extends Error {
  override readonly name = "DigestMismatchError";
  constructor(
    readonly url: string,
    readonly expected: { sha256: string; size: number },
    readonly actual: { sha256: string; size: number },
  ) {
    super(
      `${url}: expected sha256 ${expected.sha256} (${expected.size} bytes), got ${actual.sha256} (${actual.size} bytes).`,
    );
  }
}

/** The file could not be fetched. `retryable` is false for answers that retrying cannot change. */
export class DownloadError extends Error {
  override readonly name = "DownloadError";
  constructor(
    readonly url: string,
    message: string,
    readonly retryable = false,
    options?: ErrorOptions,
  ) {
    super(`${url}: ${message}`, options);
  }
}

/** The server refused to serve the file to this cluster (HTTP 401 or 403): a private artifact. */
export class NotAuthorizedError extends Error {
  override readonly name = "NotAuthorizedError";
  constructor(
    readonly url: string,
    readonly status: number,
    detail = "",
  ) {
    super(
      `${url}: not authorized (HTTP ${status}); a private artifact is served only to an accepted follower of its cluster or an actor granted its read scope${detail !== "" ? `: ${detail}` : ""}`,
    );
  }
}

/** How far a download has come, for progress displays. */
export interface DownloadProgress {
  /** Bytes of the file on disk so far, resumed bytes included. */
  readonly received: number;
  /** The expected size, when known. */
  readonly total: number | undefined;
  /** The attempt in progress, from 1. */
  readonly attempt: number;
}

/** Options for {@link downloadVerified}. */
export interface DownloadOptions {
  /** What the bytes must be. */
  readonly expected: { readonly sha256: string; readonly size: number };
  /** @defaultValue 5 */
  readonly attempts?: number;
  /** The first retry's delay; each later one doubles, with jitter. @defaultValue 250 */
  readonly initialDelayMs?: number;
  /** The longest wait between attempts, `Retry-After` included. @defaultValue 30000 */
  readonly maxDelayMs?: number;
  /**
   * The checked fetch every hop goes through (the cluster's, with its allowlist).
   * @defaultValue one with an empty allowlist: public addresses only
   */
  readonly fetch?: OutboundFetch;
  /**
   * Signs each request to the origin of `url` (an authorized fetch); requests to any other
   * origin a redirect points at are sent unsigned.
   */
  readonly sign?: (request: Request) => Promise<Request>;
  /** Time limit of one attempt. @defaultValue 60000 */
  readonly timeoutMs?: number;
  /** Redirects followed in one attempt. @defaultValue 5 */
  readonly maxRedirects?: number;
  /** Called as bytes arrive. */
  readonly onProgress?: (progress: DownloadProgress) => void;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Seconds or an HTTP date in `Retry-After`, as milliseconds from now. */
function retryAfterMs(header: string | null): number | undefined {
  if (header == null) return undefined;
  if (/^\d+$/.test(header.trim())) return Number(header.trim()) * 1000;
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

function checkHop(url: URL, from: URL | undefined): void {
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new DownloadError(url.href, "only http(s) URLs can be downloaded");
  }
  if (from?.protocol === "https:" && url.protocol === "http:") {
    throw new DownloadError(from.href, `refused a redirect from https to ${url.href}`);
  }
}

/** The SHA-256 of what is already in the partial file, to go on hashing from there. */
async function hashOf(path: string): Promise<Hash> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash;
}

async function sizeOf(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

/**
 * Downloads `url` to `dest`, verified against `options.expected`.
 * @throws {DigestMismatchError} when every attempt produced other bytes than published.
 * @throws {DownloadError} when the file could not be fetched; nothing is left at `dest`.
 */
export async function downloadVerified(
  url: string,
  dest: string,
  options: DownloadOptions,
): Promise<void> {
  const attempts = options.attempts ?? 5;
  const maxDelayMs = options.maxDelayMs ?? 30_000;
  const partial = `${dest}.partial`;
  const expected = options.expected;
  const outbound = options.fetch ?? createOutboundFetch({ allowlist: parseAllowlist([]) });
  await mkdir(dirname(dest), { recursive: true });
  await rm(partial, { force: true });
  /** The validator of the bytes in `partial`, for `If-Range`. */
  let validator: string | undefined;
  let lastError: unknown;
  let waitMs = 0;
  try {
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (attempt > 1) {
        const backoff = (options.initialDelayMs ?? 250) * 2 ** (attempt - 2);
        const jittered = backoff / 2 + Math.random() * (backoff / 2);
        await sleep(Math.min(maxDelayMs, Math.max(waitMs, jittered)));
      }
      waitMs = 0;
      try {
        const outcome = await attemptOnce(attempt);
        if (outcome === "done") return;
      } catch (error) {
        lastError = error;
        if (error instanceof DownloadError && !error.retryable) throw error;
        if (error instanceof NotAuthorizedError) throw error;
        if (error instanceof DigestMismatchError) {
          // Start over: resuming would keep the bad bytes.
          await rm(partial, { force: true });
          validator = undefined;
        }
      }
    }
  } catch (error) {
    await rm(partial, { force: true });
    throw error;
  }
  await rm(partial, { force: true });
  if (
    lastError instanceof DigestMismatchError ||
    lastError instanceof DownloadError ||
    lastError instanceof NotAuthorizedError
  ) {
    throw lastError;
  }
  throw new DownloadError(url, `failed after ${attempts} attempts: ${String(lastError)}`, false, {
    cause: lastError,
  });

  async function attemptOnce(attempt: number): Promise<"done"> {
    const have = await sizeOf(partial);
    const resume = have > 0 && have < expected.size && validator != null;
    if (!resume && have > 0) {
      await rm(partial, { force: true });
      validator = undefined;
    }
    const timeoutMs = options.timeoutMs ?? 60_000;
    const signal = AbortSignal.timeout(timeoutMs);
    const origin = new URL(url).origin;
    let current = new URL(url);
    let previous: URL | undefined;
    let response: Response;
    for (let hop = 0; ; hop++) {
      checkHop(current, previous);
      try {
        response = await outbound(current, {
          redirect: "manual",
          signal,
          timeoutMs,
          headers: resume ? { range: `bytes=${have}-`, "if-range": validator ?? "" } : {},
          ...(options.sign != null && current.origin === origin ? { sign: options.sign } : {}),
        });
      } catch (error) {
        if (error instanceof OutboundFetchError && error.reason === "private-address") {
          throw new DownloadError(current.href, `not a public address: ${error.message}`, false, {
            cause: error,
          });
        }
        throw error;
      }
      const location = response.headers.get("location");
      if (response.status >= 300 && response.status < 400 && location != null) {
        await response.body?.cancel();
        if (hop >= (options.maxRedirects ?? 5)) {
          throw new DownloadError(url, `more than ${options.maxRedirects ?? 5} redirects`);
        }
        previous = current;
        current = new URL(location, current);
        continue;
      }
      break;
    }
    if (response.status >= 500 || response.status === 429) {
      await response.body?.cancel();
      waitMs = retryAfterMs(response.headers.get("retry-after")) ?? 0;
      throw new DownloadError(current.href, `HTTP ${response.status}`, true);
    }
    if (response.status === 401 || response.status === 403) {
      const detail = (await response.text().catch(() => "")).slice(0, 300);
      throw new NotAuthorizedError(current.href, response.status, detail);
    }
    if (response.status === 416) {
      // The server cannot give the rest: start over.
      await response.body?.cancel();
      await rm(partial, { force: true });
      validator = undefined;
      throw new DownloadError(current.href, "HTTP 416 on a resumed download", true);
    }
    if (!(response.status === 200 || response.status === 206) || response.body == null) {
      await response.body?.cancel();
      throw new DownloadError(current.href, `HTTP ${response.status}; not retried`);
    }
    const resumed = resume && response.status === 206;
    if (resumed) {
      const range = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(response.headers.get("content-range") ?? "");
      if (range == null || Number(range[1]) !== have) {
        await response.body.cancel();
        await rm(partial, { force: true });
        validator = undefined;
        throw new DownloadError(current.href, "the server resumed at another offset", true);
      }
    }
    validator = response.headers.get("etag") ?? response.headers.get("last-modified") ?? undefined;
    const hash = resumed ? await hashOf(partial) : createHash("sha256");
    let received = resumed ? have : 0;
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        hash.update(chunk);
        received += chunk.length;
        if (received > expected.size) {
          const sha256 = hash.copy().digest("hex");
          done(new DigestMismatchError(url, { ...expected }, { sha256, size: received }));
          return;
        }
        options.onProgress?.({ received, total: expected.size, attempt });
        done(null, chunk);
      },
    });
    try {
      await pipeline(
        Readable.fromWeb(response.body as WebReadableStream),
        counter,
        createWriteStream(partial, { flags: resumed ? "a" : "w" }),
      );
    } catch (error) {
      if (error instanceof DigestMismatchError) throw error;
      // Interrupted: the bytes so far stay in the partial file for the next attempt.
      throw new DownloadError(current.href, `interrupted: ${String(error)}`, true, {
        cause: error,
      });
    }
    if (received < expected.size) {
      // Ended early without an error: resume from here next time.
      throw new DownloadError(
        current.href,
        `ended after ${received} of ${expected.size} bytes`,
        true,
      );
    }
    const actual = { sha256: hash.digest("hex"), size: received };
    if (actual.sha256 !== expected.sha256 || actual.size !== expected.size) {
      throw new DigestMismatchError(url, { ...expected }, actual);
    }
    await rename(partial, dest);
    return "done";
  }
}
