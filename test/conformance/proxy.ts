/**
 * A small HTTP proxy for broken-variant tests: forwards everything to a loopback port,
 * letting a test rewrite answers or request bodies on the way.
 */
import { createServer, request, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/** Rewrites one exchange; return undefined to leave it as it is. */
export interface ProxyRules {
  /** Answer a request without forwarding it. */
  answer?(
    method: string,
    path: string,
    body: string,
  ): { status: number; body: string; type: string } | undefined;
  /** Change a request body before forwarding it. */
  requestBody?(method: string, path: string, body: string): string | undefined;
  /** Change an answer's body. */
  responseBody?(method: string, path: string, body: string): string | undefined;
}

/** A running proxy. */
export interface Proxy {
  readonly url: string;
  readonly port: number;
  /** The port requests are forwarded to (set once the backend is listening). */
  forwardTo: number;
  close(): Promise<void>;
}

/** Starts a proxy on 127.0.0.1; set `forwardTo` before it is used. */
export async function startProxy(rules: ProxyRules): Promise<Proxy> {
  const state = { forwardTo: 0 };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const method = req.method ?? "GET";
      const path = req.url ?? "/";
      const original = Buffer.concat(chunks).toString();
      const canned = rules.answer?.(method, path, original);
      if (canned != null) {
        res.writeHead(canned.status, { "content-type": canned.type }).end(canned.body);
        return;
      }
      const body = rules.requestBody?.(method, path, original) ?? original;
      const headers: IncomingHttpHeaders = { ...req.headers };
      if (body !== original || headers["content-length"] != null) {
        headers["content-length"] = String(Buffer.byteLength(body));
      }
      const upstream = request(
        { host: "127.0.0.1", port: state.forwardTo, method, path, headers },
        (answer) => {
          const parts: Buffer[] = [];
          answer.on("data", (c: Buffer) => parts.push(c));
          answer.on("end", () => {
            const text = Buffer.concat(parts).toString();
            const changed = rules.responseBody?.(method, path, text);
            const out = changed ?? text;
            const outHeaders = { ...answer.headers };
            delete outHeaders["transfer-encoding"];
            outHeaders["content-length"] = String(Buffer.byteLength(out));
            res.writeHead(answer.statusCode ?? 502, outHeaders).end(out);
          });
        },
      );
      upstream.on("error", () => res.writeHead(502).end());
      upstream.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    get forwardTo() {
      return state.forwardTo;
    },
    set forwardTo(value: number) {
      state.forwardTo = value;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A port that was free a moment ago. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
