/**
 * Signing and verifying HTTP requests as the specification defines them, independently of
 * any taskweb server: RFC 9421 with node:crypto, draft-cavage-12 with the `http-signature`
 * package.
 * @module
 */
import { createHash, createPublicKey, sign, verify, type KeyObject } from "node:crypto";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import httpSignature from "http-signature";

/** An RSA key the suite signs with, and the key id it names. */
export interface RsaSigner {
  readonly keyId: string;
  readonly privateKey: KeyObject;
  readonly privatePem: string;
}

/** How to build (or deliberately break) an RFC 9421 signature. */
export interface Rfc9421Options {
  /** Covered components; default `@method`, `@target-uri`, `@authority`, `content-digest`, `date`. */
  readonly components?: readonly string[];
  /** Seconds added to the signing time (negative: in the past). */
  readonly createdOffsetSeconds?: number;
  /** Leave out the `created` parameter. */
  readonly omitCreated?: boolean;
  /** Add an `expires` parameter this many seconds after the signing time (negative: passed). */
  readonly expiresOffsetSeconds?: number;
  /** Sign as if the request went to this URL. */
  readonly signedTargetUri?: string;
  /** Change the body after signing. */
  readonly tamper?: (body: string) => string;
  readonly contentType?: string;
}

/** An answer to a request the suite sent. */
export interface HttpAnswer {
  readonly status: number;
  readonly text: string;
  readonly headers: Headers;
}

/** `sha-256=:<base64>:` of `body`. */
export function contentDigest(body: string | Uint8Array): string {
  return `sha-256=:${createHash("sha256").update(body).digest("base64")}:`;
}

function componentValue(
  name: string,
  method: string,
  target: URL,
  headers: Record<string, string>,
): string {
  switch (name) {
    case "@method":
      return method.toUpperCase();
    case "@target-uri":
      return target.href;
    case "@authority":
      return target.host.toLowerCase();
    case "@path":
      return target.pathname;
    default: {
      const value = headers[name];
      if (value == null) throw new Error(`cannot cover missing header ${name}`);
      return value.trim();
    }
  }
}

/** The RFC 9421 §2.5 signature base of a request. */
export function signatureBase(
  components: readonly string[],
  params: string,
  method: string,
  target: URL,
  headers: Record<string, string>,
): string {
  const lines = components.map((c) => `"${c}": ${componentValue(c, method, target, headers)}`);
  lines.push(`"@signature-params": ${params}`);
  return lines.join("\n");
}

/** POSTs `body` to `url`, with an RFC 9421 signature made as `options` say. */
export async function postRfc9421(
  url: string,
  body: string,
  signer: RsaSigner | undefined,
  options: Rfc9421Options = {},
): Promise<HttpAnswer> {
  const headers: Record<string, string> = {
    "content-type": options.contentType ?? "application/activity+json",
    accept: "application/activity+json",
    date: new Date().toUTCString(),
    "content-digest": contentDigest(body),
  };
  if (signer != null) {
    const components = options.components ?? [
      "@method",
      "@target-uri",
      "@authority",
      "content-digest",
      "date",
    ];
    const created = Math.floor(Date.now() / 1000) + (options.createdOffsetSeconds ?? 0);
    const params =
      `(${components.map((c) => `"${c}"`).join(" ")})` +
      `;alg="rsa-v1_5-sha256";keyid="${signer.keyId}"` +
      (options.omitCreated === true ? "" : `;created=${created}`) +
      (options.expiresOffsetSeconds == null
        ? ""
        : `;expires=${Math.floor(Date.now() / 1000) + options.expiresOffsetSeconds}`);
    const base = signatureBase(
      components,
      params,
      "POST",
      new URL(options.signedTargetUri ?? url),
      headers,
    );
    const signature = sign("sha256", Buffer.from(base), signer.privateKey).toString("base64");
    headers["signature-input"] = `sig1=${params}`;
    headers["signature"] = `sig1=:${signature}:`;
  }
  const sent = options.tamper != null ? options.tamper(body) : body;
  const response = await fetch(url, { method: "POST", headers, body: sent, redirect: "manual" });
  return { status: response.status, text: await response.text(), headers: response.headers };
}

/** How to build (or break) a draft-cavage-12 signature. */
export interface CavageOptions {
  readonly headers?: readonly string[];
  /** Milliseconds added to the `Date` header. */
  readonly dateOffsetMs?: number;
}

/** POSTs `body` to `url` with a draft-cavage-12 `rsa-sha256` signature (`http-signature`). */
export async function postCavage(
  url: string,
  body: string,
  signer: RsaSigner,
  options: CavageOptions = {},
): Promise<HttpAnswer> {
  const target = new URL(url);
  const send = target.protocol === "https:" ? httpsRequest : httpRequest;
  return await new Promise((resolve, reject) => {
    const req = send(
      {
        host: target.hostname,
        port: target.port,
        path: `${target.pathname}${target.search}`,
        method: "POST",
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const headers = new Headers();
          for (const [k, v] of Object.entries(res.headers)) {
            if (typeof v === "string") headers.set(k, v);
          }
          resolve({
            status: res.statusCode ?? 0,
            text: Buffer.concat(chunks).toString(),
            headers,
          });
        });
      },
    );
    req.on("error", reject);
    req.setHeader("Host", target.host);
    req.setHeader("Date", new Date(Date.now() + (options.dateOffsetMs ?? 0)).toUTCString());
    req.setHeader("Content-Type", "application/activity+json");
    req.setHeader("Digest", `SHA-256=${createHash("sha256").update(body).digest("base64")}`);
    req.setHeader("Content-Digest", contentDigest(body));
    httpSignature.sign(req, {
      key: signer.privatePem,
      keyId: signer.keyId,
      headers: [...(options.headers ?? ["(request-target)", "host", "date", "digest"])],
      authorizationHeaderName: "Signature",
    });
    req.end(body);
  });
}

/** A request the suite received, as recorded. */
export interface ReceivedRequest {
  readonly method: string;
  /** The URL the request was sent to, as the suite's public URL names it. */
  readonly url: string;
  readonly headers: Record<string, string>;
  readonly body: string;
  readonly receivedAt: number;
}

/** Parsed `Signature-Input` member. */
export interface SignatureInput {
  readonly label: string;
  readonly components: string[];
  readonly params: Record<string, string | number>;
  /** The serialised inner list with parameters, as signed. */
  readonly raw: string;
}

/** Parses an RFC 9421 `Signature-Input` header (the subset senders use). */
export function parseSignatureInput(header: string): SignatureInput[] {
  const result: SignatureInput[] = [];
  const re = /([a-z0-9_*.-]+)=(\(([^)]*)\)((?:;[a-z0-9_*.-]+=(?:"[^"]*"|[0-9]+))*))/g;
  for (const m of header.matchAll(re)) {
    const components = [...(m[3] ?? "").matchAll(/"([^"]*)"/g)].map((c) => c[1] ?? "");
    const params: Record<string, string | number> = {};
    for (const p of (m[4] ?? "").matchAll(/;([a-z0-9_*.-]+)=(?:"([^"]*)"|([0-9]+))/g)) {
      params[p[1] ?? ""] = p[2] ?? Number(p[3]);
    }
    result.push({ label: m[1] ?? "", components, params, raw: m[2] ?? "" });
  }
  return result;
}

/** Outcome of verifying a received request's HTTP signature. */
export type VerifyOutcome =
  | { ok: true; scheme: "rfc9421" | "draft-cavage"; keyId: string; covered: string[] }
  | { ok: false; reason: string };

/** Verifies the HTTP signature of a received request with `publicKeyPem` for `keyId`. */
export function verifyReceived(
  req: ReceivedRequest,
  resolveKey: (keyId: string) => string | undefined,
): VerifyOutcome {
  const input = req.headers["signature-input"];
  if (input != null) {
    const sigs = req.headers["signature"] ?? "";
    for (const si of parseSignatureInput(input)) {
      const keyId = typeof si.params.keyid === "string" ? si.params.keyid : undefined;
      if (keyId == null) continue;
      const pem = resolveKey(keyId);
      if (pem == null) return { ok: false, reason: `key ${keyId} is not the sender's` };
      const value = new RegExp(`${si.label}=:([^:]*):`).exec(sigs)?.[1];
      if (value == null) return { ok: false, reason: `no Signature member ${si.label}` };
      let base: string;
      try {
        base = signatureBase(si.components, si.raw, req.method, new URL(req.url), req.headers);
      } catch (error) {
        return { ok: false, reason: String(error) };
      }
      const good = verify(
        "sha256",
        Buffer.from(base),
        createPublicKey(pem),
        Buffer.from(value, "base64"),
      );
      if (good) return { ok: true, scheme: "rfc9421", keyId, covered: si.components };
      return { ok: false, reason: `RFC 9421 signature ${si.label} does not verify` };
    }
    return { ok: false, reason: "no usable RFC 9421 signature" };
  }
  const header = req.headers["signature"];
  if (header == null) return { ok: false, reason: "no Signature-Input or Signature header" };
  const fields: Record<string, string> = {};
  for (const m of header.matchAll(/([a-zA-Z]+)="([^"]*)"/g)) fields[m[1] ?? ""] = m[2] ?? "";
  const keyId = fields.keyId;
  const sig = fields.signature;
  if (keyId == null || sig == null) return { ok: false, reason: "cavage header lacks keyId" };
  const pem = resolveKey(keyId);
  if (pem == null) return { ok: false, reason: `key ${keyId} is not the sender's` };
  const covered = (fields.headers ?? "date").split(" ");
  const target = new URL(req.url);
  const lines = covered.map((h) =>
    h === "(request-target)"
      ? `(request-target): ${req.method.toLowerCase()} ${target.pathname}${target.search}`
      : `${h}: ${req.headers[h] ?? ""}`,
  );
  const good = verify(
    "sha256",
    Buffer.from(lines.join("\n")),
    createPublicKey(pem),
    Buffer.from(sig, "base64"),
  );
  return good
    ? { ok: true, scheme: "draft-cavage", keyId, covered }
    : { ok: false, reason: "draft-cavage signature does not verify" };
}
