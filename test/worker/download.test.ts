/**
 * The downloader against a real HTTP server on loopback that drops connections mid-body,
 * answers 503, redirects, ignores Range and serves wrong bytes: it ends with the right file
 * or a clear error, and never leaves a partial file. A signed download signs every request
 * to its own origin, resumes included, and none to another origin.
 */
import { createHash, randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFinished } from "vitest";
import {
  DigestMismatchError,
  DownloadError,
  downloadVerified,
  NotAuthorizedError,
  type DownloadProgress,
} from "../../server/worker/download.ts";
import { parseAllowlist } from "../../server/outbound/address-policy.ts";
import { createOutboundFetch } from "../../server/outbound/checked-fetch.ts";

const CONTENT = randomBytes(256 * 1024);
const EXPECTED = {
  sha256: createHash("sha256").update(CONTENT).digest("hex"),
  size: CONTENT.length,
};
const ETAG = `"${EXPECTED.sha256}"`;

interface Seen {
  readonly path: string;
  readonly range: string | undefined;
  readonly ifRange: string | undefined;
  readonly signature: string | undefined;
}

type Handler = (req: IncomingMessage, res: ServerResponse, nth: number) => void;

/** Serves CONTENT whole, or from `bytes=N-` when asked. */
function serveContent(req: IncomingMessage, res: ServerResponse, honourRange = true): void {
  const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
  if (honourRange && range != null && req.headers["if-range"] === ETAG) {
    const start = Number(range[1]);
    res.writeHead(206, {
      etag: ETAG,
      "content-length": CONTENT.length - start,
      "content-range": `bytes ${start}-${CONTENT.length - 1}/${CONTENT.length}`,
    });
    res.end(CONTENT.subarray(start));
    return;
  }
  res.writeHead(200, { etag: ETAG, "content-length": CONTENT.length });
  res.end(CONTENT);
}

/** Sends the headers of the whole file and `bytes` of it, then drops the connection. */
function dropAfter(res: ServerResponse, bytes: number): void {
  res.writeHead(200, { etag: ETAG, "content-length": CONTENT.length });
  res.write(CONTENT.subarray(0, bytes), () => setTimeout(() => res.socket?.destroy(), 20));
}

describe("downloadVerified", () => {
  let server: Server;
  let base: string;
  let dir: string;
  const handlers = new Map<string, Handler>();
  const seen: Seen[] = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      const path = req.url ?? "/";
      seen.push({
        path,
        range: req.headers.range,
        ifRange: req.headers["if-range"] as string | undefined,
        signature: req.headers.signature as string | undefined,
      });
      const nth = seen.filter((s) => s.path === path).length;
      const handler = handlers.get(path);
      if (handler == null) {
        res.writeHead(404).end();
        return;
      }
      handler(req, res, nth);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    if (typeof address !== "object" || address == null) throw new Error("no address");
    base = `http://127.0.0.1:${address.port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });
  beforeEach(async () => {
    handlers.clear();
    seen.length = 0;
    dir = await mkdtemp(join(tmpdir(), "taskweb-download-"));
    return async () => {
      await rm(dir, { recursive: true, force: true });
    };
  });

  const loopback = createOutboundFetch({ allowlist: parseAllowlist(["127.0.0.1/32"]) });
  const options = { expected: EXPECTED, fetch: loopback, initialDelayMs: 10 };

  async function expectFile(dest: string): Promise<void> {
    expect((await readFile(dest)).equals(CONTENT)).toBe(true);
    expect(await readdir(dir)).toEqual(["out.bin"]);
  }

  async function expectNothingLeft(): Promise<void> {
    expect(await readdir(dir)).toEqual([]);
  }

  it("downloads and verifies a file, reporting progress up to its size", async () => {
    handlers.set("/file", (req, res) => serveContent(req, res));
    const dest = join(dir, "out.bin");
    const progress: DownloadProgress[] = [];
    await downloadVerified(`${base}/file`, dest, {
      ...options,
      onProgress: (p) => progress.push(p),
    });
    await expectFile(dest);
    const received = progress.map((p) => p.received);
    expect(received).toEqual([...received].sort((a, b) => a - b));
    expect(progress.at(-1)).toEqual({
      received: CONTENT.length,
      total: CONTENT.length,
      attempt: 1,
    });
  });

  it("resumes a download dropped mid-body with a Range request on the server's validator", async () => {
    const half = 100_000;
    handlers.set("/dropping", (req, res, nth) => {
      if (nth === 1) dropAfter(res, half);
      else serveContent(req, res);
    });
    const dest = join(dir, "out.bin");
    await downloadVerified(`${base}/dropping`, dest, options);
    await expectFile(dest);
    expect(seen).toHaveLength(2);
    expect(seen[0]?.range).toBeUndefined();
    // It asked for the rest of what it had: at most the bytes sent before the drop.
    const from = Number(/^bytes=(\d+)-$/.exec(seen[1]?.range ?? "")?.[1]);
    expect(from).toBeGreaterThan(0);
    expect(from).toBeLessThanOrEqual(half);
    expect(seen[1]?.ifRange).toBe(ETAG);
  });

  it("starts over when the server answers a resumed request with the whole file", async () => {
    handlers.set("/no-range", (req, res, nth) => {
      if (nth === 1) dropAfter(res, 50_000);
      else serveContent(req, res, false);
    });
    const dest = join(dir, "out.bin");
    await downloadVerified(`${base}/no-range`, dest, options);
    await expectFile(dest);
    expect(seen[1]?.range).toMatch(/^bytes=\d+-$/);
  });

  it("retries 503 answers, waiting as Retry-After says", async () => {
    handlers.set("/busy", (req, res, nth) => {
      if (nth <= 2) res.writeHead(503, { "retry-after": "0" }).end();
      else serveContent(req, res);
    });
    const dest = join(dir, "out.bin");
    await downloadVerified(`${base}/busy`, dest, options);
    await expectFile(dest);
    expect(seen).toHaveLength(3);
  });

  it("follows redirects, and refuses one to another scheme or too many of them", async () => {
    handlers.set("/old", (_req, res) => res.writeHead(302, { location: "/new" }).end());
    handlers.set("/new", (req, res) => serveContent(req, res));
    const dest = join(dir, "out.bin");
    await downloadVerified(`${base}/old`, dest, options);
    await expectFile(dest);
    await rm(dest);

    handlers.set("/ftp", (_req, res) =>
      res.writeHead(302, { location: "ftp://127.0.0.1/file" }).end(),
    );
    await expect(downloadVerified(`${base}/ftp`, dest, options)).rejects.toThrow(
      /only http\(s\) URLs/,
    );
    handlers.set("/loop", (_req, res) => res.writeHead(302, { location: "/loop" }).end());
    await expect(downloadVerified(`${base}/loop`, dest, options)).rejects.toThrow(
      /more than 5 redirects/,
    );
    await expectNothingLeft();
  });

  it("signs every request to the file's origin, resumes included, and none elsewhere", async () => {
    const signedFor: { url: string; range: string | null }[] = [];
    const sign = (request: Request) => {
      signedFor.push({ url: request.url, range: request.headers.get("range") });
      const headers = new Headers(request.headers);
      headers.set("signature", `test ${request.url}`);
      return Promise.resolve(new Request(request.url, { method: request.method, headers }));
    };
    handlers.set("/signed", (req, res, nth) => {
      if (nth === 1) dropAfter(res, 100_000);
      else serveContent(req, res);
    });
    const dest = join(dir, "out.bin");
    await downloadVerified(`${base}/signed`, dest, { ...options, sign });
    await expectFile(dest);
    expect(seen.map((s) => s.signature)).toEqual([`test ${base}/signed`, `test ${base}/signed`]);
    expect(seen[1]?.range).toMatch(/^bytes=\d+-$/);
    expect(signedFor[1]?.range).toBe(seen[1]?.range);
    await rm(dest);

    // A redirect to another origin is followed unsigned; one back to the origin is signed.
    const other = createServer((req, res) => {
      seen.push({
        path: `other${req.url}`,
        range: undefined,
        ifRange: undefined,
        signature: req.headers.signature as string | undefined,
      });
      res.writeHead(302, { location: `${base}/back` }).end();
    });
    await new Promise<void>((resolve) => other.listen(0, "127.0.0.1", resolve));
    onTestFinished(() => new Promise<void>((resolve) => other.close(() => resolve())));
    const port = (other.address() as { port: number }).port;
    handlers.set("/away", (_req, res) =>
      res.writeHead(302, { location: `http://127.0.0.1:${port}/elsewhere` }).end(),
    );
    handlers.set("/back", (req, res) => serveContent(req, res));
    seen.length = 0;
    await downloadVerified(`${base}/away`, dest, { ...options, sign });
    await expectFile(dest);
    expect(seen.map((s) => [s.path, s.signature])).toEqual([
      ["/away", `test ${base}/away`],
      ["other/elsewhere", undefined],
      ["/back", `test ${base}/back`],
    ]);
  });

  it("does not retry a 401 or 403: the file is not served to this cluster", async () => {
    handlers.set("/private", (_req, res) => res.writeHead(403).end("not a follower"));
    const dest = join(dir, "out.bin");
    const refused = downloadVerified(`${base}/private`, dest, options);
    await expect(refused).rejects.toThrow(NotAuthorizedError);
    await expect(refused).rejects.toThrow(/not authorized \(HTTP 403\).*not a follower/);
    expect(seen).toHaveLength(1);
    await expectNothingLeft();
  });

  it("refuses wrong bytes after every attempt, and leaves no file", async () => {
    const wrong = Buffer.from(CONTENT);
    wrong[1000] = (wrong[1000]! + 1) % 256;
    handlers.set("/wrong", (_req, res) => {
      res.writeHead(200, { etag: ETAG, "content-length": wrong.length });
      res.end(wrong);
    });
    const dest = join(dir, "out.bin");
    const failure = downloadVerified(`${base}/wrong`, dest, { ...options, attempts: 3 });
    await expect(failure).rejects.toBeInstanceOf(DigestMismatchError);
    await expect(failure).rejects.toMatchObject({ actual: { size: CONTENT.length } });
    // Each attempt started over instead of resuming the bad bytes.
    expect(seen.map((s) => s.range)).toEqual([undefined, undefined, undefined]);
    await expectNothingLeft();
  });

  it("refuses more bytes than published", async () => {
    handlers.set("/longer", (_req, res) => {
      res.writeHead(200, { etag: ETAG });
      res.end(Buffer.concat([CONTENT, Buffer.from("extra")]));
    });
    const dest = join(dir, "out.bin");
    await expect(
      downloadVerified(`${base}/longer`, dest, { ...options, attempts: 2 }),
    ).rejects.toBeInstanceOf(DigestMismatchError);
    await expectNothingLeft();
  });

  it("does not retry a 404, and refuses a private address not on the allowlist", async () => {
    const dest = join(dir, "out.bin");
    const missing = downloadVerified(`${base}/missing`, dest, options);
    await expect(missing).rejects.toBeInstanceOf(DownloadError);
    await expect(missing).rejects.toThrow(/HTTP 404; not retried/);
    expect(seen).toHaveLength(1);

    handlers.set("/file", (req, res) => serveContent(req, res));
    await expect(
      downloadVerified(`${base}/file`, dest, {
        ...options,
        fetch: createOutboundFetch({ allowlist: parseAllowlist(["127.0.0.2/32"]) }),
      }),
    ).rejects.toThrow(/not a public address/);
    expect(seen).toHaveLength(1);
    await expectNothingLeft();
  });

  it("gives up with a clear error when the server keeps failing", async () => {
    handlers.set("/down", (_req, res) => res.writeHead(500).end());
    const dest = join(dir, "out.bin");
    await expect(
      downloadVerified(`${base}/down`, dest, { ...options, attempts: 3 }),
    ).rejects.toThrow(/HTTP 500/);
    expect(seen).toHaveLength(3);
    await expectNothingLeft();
  });
});
