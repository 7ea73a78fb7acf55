/**
 * Signs requests as a cluster, with keys read from its database, for tests that play a
 * peer (honest or not) against an inbox.
 */
import { createHash } from "node:crypto";
import { request as httpRequest } from "node:http";
import httpSignature from "http-signature";
import { importJwk, signRequest } from "@fedify/fedify";
import { Temporal } from "@js-temporal/polyfill";
import type { RunningCluster } from "../../server/cluster.ts";
import { keyFragment } from "../../server/federation/key-store.ts";

/** A key a test can sign with, and the key id it claims. */
export interface SigningKey {
  readonly keyId: URL;
  readonly privateKey: CryptoKey;
}

/** The RSA key a cluster signs HTTP requests with now, under its id (`<actor>#key-<n>`). */
export async function clusterRsaKey(cluster: RunningCluster): Promise<SigningKey> {
  // Make sure the keys exist (they are created on first use of the actor).
  await fetch(cluster.urls.actor, { headers: { accept: "application/activity+json" } });
  const row = await cluster.database.db
    .selectFrom("cluster_keys")
    .select(["id", "key_fragment", "private_jwk"])
    .where("identifier", "=", cluster.config.name)
    .where("algorithm", "=", "RSASSA-PKCS1-v1_5")
    .where("retired_at", "is", null)
    .executeTakeFirstOrThrow();
  return {
    keyId: new URL(`${cluster.urls.actor}#${keyFragment(row)}`),
    privateKey: await importJwk(row.private_jwk, "private"),
  };
}

/** Options for {@link signedPost}. */
export interface SignedPostOptions {
  readonly key?: SigningKey;
  readonly spec?: "rfc9421" | "draft-cavage-http-signatures-12";
  /** Pretend the signature was made at this time. */
  readonly signedAt?: Date;
  /** Change the body after signing. */
  readonly tamper?: (body: string) => string;
  readonly contentType?: string;
}

/** POSTs `body` to `inbox`, signed as told; returns the response status and text. */
export async function signedPost(
  inbox: string,
  body: unknown,
  options: SignedPostOptions = {},
): Promise<{ status: number; text: string }> {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  let request = new Request(inbox, {
    method: "POST",
    headers: {
      "content-type": options.contentType ?? "application/activity+json",
      accept: "application/activity+json",
    },
    body: text,
  });
  if (options.key != null) {
    request = await signRequest(request, options.key.privateKey, options.key.keyId, {
      spec: options.spec ?? "rfc9421",
      ...(options.signedAt != null
        ? {
            currentTime: Temporal.Instant.fromEpochMilliseconds(
              options.signedAt.getTime(),
            ) as never,
          }
        : {}),
    });
  }
  const finalBody = options.tamper != null ? options.tamper(text) : text;
  const headers = new Headers(request.headers);
  const response = await fetch(inbox, { method: "POST", headers, body: finalBody });
  return { status: response.status, text: await response.text() };
}

/**
 * POSTs `body` with a draft-cavage signature made by the Joyent `http-signature` library
 * (independent of Fedify), covering exactly `headers`.
 */
export async function cavagePost(
  inbox: string,
  body: unknown,
  key: SigningKey,
  headers: readonly string[],
): Promise<{ status: number; text: string }> {
  const text = JSON.stringify(body);
  const pkcs8 = Buffer.from(await crypto.subtle.exportKey("pkcs8", key.privateKey)).toString(
    "base64",
  );
  const pem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.replace(/(.{64})/g, "$1\n")}\n-----END PRIVATE KEY-----\n`;
  const url = new URL(inbox);
  return await new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: url.hostname, port: url.port, path: url.pathname, method: "POST" },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }),
        );
      },
    );
    req.on("error", reject);
    req.setHeader("Host", url.host);
    req.setHeader("Date", new Date().toUTCString());
    req.setHeader("Content-Type", "application/activity+json");
    req.setHeader("Digest", `SHA-256=${createHash("sha256").update(text).digest("base64")}`);
    httpSignature.sign(req, {
      key: pem,
      keyId: key.keyId.href,
      headers: [...headers],
      authorizationHeaderName: "Signature",
    });
    req.end(text);
  });
}
