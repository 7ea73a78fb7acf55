/**
 * Downloads an artifact to a file and proves it is the one that was published: size and
 * sha256 must match, or the file is removed. Retries network errors and 5xx answers with
 * backoff. The file appears under its final name only once verified.
 * @module
 */
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";
import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { pipeline } from "node:stream/promises";
import { validatePublicUrl } from "@fedify/fedify";

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

/** The artifact could not be fetched after every attempt. */
export class DownloadError extends Error {
  override readonly name = "DownloadError";
  constructor(
    readonly url: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(`${url}: ${message}`, options);
  }
}

/** Options for {@link downloadVerified}. */
export interface DownloadOptions {
  readonly expected: { readonly sha256: string; readonly size: number };
  /** @defaultValue 5 */
  readonly attempts?: number;
  /** @defaultValue 250 */
  readonly initialDelayMs?: number;
  /** Allow loopback and private addresses (clusters on one machine). @defaultValue false */
  readonly allowPrivateAddress?: boolean;
  /** Per-attempt time limit. @defaultValue 60000 */
  readonly timeoutMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Downloads `url` to `dest`, verified. Throws {@link DigestMismatchError} or {@link DownloadError}. */
export async function downloadVerified(
  url: string,
  dest: string,
  options: DownloadOptions,
): Promise<void> {
  const attempts = options.attempts ?? 5;
  const partial = `${dest}.partial`;
  await mkdir(dirname(dest), { recursive: true });
  let lastError: unknown;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    if (attempt > 1) await sleep((options.initialDelayMs ?? 250) * 2 ** (attempt - 2));
    try {
      const parsed = new URL(url);
      if (parsed.protocol !== "https:" && parsed.protocol !== "http:") {
        throw new DownloadError(url, "only http(s) URLs can be downloaded");
      }
      if (options.allowPrivateAddress !== true) await validatePublicUrl(url);
      const response = await fetch(url, {
        redirect: "manual",
        signal: AbortSignal.timeout(options.timeoutMs ?? 60_000),
      });
      if (response.status >= 500 || response.status === 429) {
        lastError = new DownloadError(url, `HTTP ${response.status}`);
        await response.body?.cancel();
        continue;
      }
      if (!response.ok || response.body == null) {
        await response.body?.cancel();
        throw new DownloadError(url, `HTTP ${response.status}; not retried`);
      }
      const hash = createHash("sha256");
      let size = 0;
      const body = Readable.fromWeb(response.body as WebReadableStream);
      body.on("data", (chunk: Buffer) => {
        hash.update(chunk);
        size += chunk.length;
      });
      await pipeline(body, createWriteStream(partial));
      const actual = { sha256: hash.digest("hex"), size };
      if (actual.sha256 !== options.expected.sha256 || actual.size !== options.expected.size) {
        await rm(partial, { force: true });
        lastError = new DigestMismatchError(url, options.expected, actual);
        continue;
      }
      await rename(partial, dest);
      return;
    } catch (error) {
      await rm(partial, { force: true });
      if (error instanceof DownloadError && error.message.endsWith("not retried")) throw error;
      lastError = error;
    }
  }
  if (lastError instanceof DigestMismatchError || lastError instanceof DownloadError)
    throw lastError;
  throw new DownloadError(url, `failed after ${attempts} attempts: ${String(lastError)}`, {
    cause: lastError,
  });
}
