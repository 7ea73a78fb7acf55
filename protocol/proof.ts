/**
 * FEP-8b32 `eddsa-jcs-2022` Object Integrity Proofs, as signatures.md §3 defines them:
 * JCS (RFC 8785), SHA-256, Ed25519 and base58-btc, with node:crypto. The reference server
 * verifies relayed activities with these, and the conformance suite signs and checks with
 * the same code.
 * @module
 */
import { createHash, createPublicKey, sign, verify, type KeyObject } from "node:crypto";

/** RFC 8785 canonical JSON of a JSON value (keys sorted by UTF-16 code units). */
export function jcs(value: unknown): string {
  if (value === null || typeof value !== "object") {
    if (typeof value === "number" && !Number.isFinite(value)) throw new Error("not JSON");
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(jcs).join(",")}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${jcs(v)}`).join(",")}}`;
}

const sha256 = (s: string) => createHash("sha256").update(s).digest();

/** The bytes an eddsa-jcs-2022 proof signs, with `@context` taken from the document. */
function signedBytes(document: Record<string, unknown>, proof: Record<string, unknown>): Buffer {
  const { proof: _p, signature: _s, ...unsecured } = document;
  const { proofValue: _v, ...config } = proof;
  const proofConfig = { ...config, "@context": document["@context"] };
  return Buffer.concat([sha256(jcs(proofConfig)), sha256(jcs(unsecured))]);
}

const ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/** Encodes bytes as base58-btc (leading zero bytes as `1`s). */
export function base58btc(bytes: Uint8Array): string {
  let n = 0n;
  for (const b of bytes) n = n * 256n + BigInt(b);
  let out = "";
  while (n > 0n) {
    out = (ALPHABET[Number(n % 58n)] ?? "") + out;
    n /= 58n;
  }
  for (const b of bytes) {
    if (b !== 0) break;
    out = `1${out}`;
  }
  return out;
}

/** Decodes base58-btc. */
export function decodeBase58btc(s: string): Uint8Array {
  let n = 0n;
  for (const c of s) {
    const i = ALPHABET.indexOf(c);
    if (i < 0) throw new Error(`not base58: ${c}`);
    n = n * 58n + BigInt(i);
  }
  const bytes: number[] = [];
  while (n > 0n) {
    bytes.unshift(Number(n % 256n));
    n /= 256n;
  }
  for (const c of s) {
    if (c !== "1") break;
    bytes.unshift(0);
  }
  return new Uint8Array(bytes);
}

/** The Ed25519 public key of a Multikey `publicKeyMultibase` (`z` + base58(0xed01 ‖ key)). */
export function ed25519FromMultibase(multibase: string): KeyObject {
  if (!multibase.startsWith("z")) throw new Error("publicKeyMultibase is not base58-btc");
  const bytes = decodeBase58btc(multibase.slice(1));
  if (bytes.length !== 34 || bytes[0] !== 0xed || bytes[1] !== 0x01) {
    throw new Error("not an Ed25519 Multikey");
  }
  return createPublicKey({
    key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(bytes.slice(2)).toString("base64url") },
    format: "jwk",
  });
}

/**
 * The Ed25519 key of the assertion method `methodId` that the actor document `actor` (fetched
 * from `actorId`) publishes; undefined when the document is not that actor's, or names no such
 * Ed25519 Multikey.
 */
export function assertionMethodKey(
  actor: unknown,
  actorId: string,
  methodId: string,
): KeyObject | undefined {
  if (typeof actor !== "object" || actor === null) return undefined;
  const doc = actor as { id?: unknown; assertionMethod?: unknown };
  if (doc.id !== actorId) return undefined;
  const found = [doc.assertionMethod]
    .flat()
    .find(
      (m): m is { publicKeyMultibase: string } =>
        typeof m === "object" &&
        m !== null &&
        (m as { id?: unknown }).id === methodId &&
        typeof (m as { publicKeyMultibase?: unknown }).publicKeyMultibase === "string",
    );
  if (found == null) return undefined;
  try {
    return ed25519FromMultibase(found.publicKeyMultibase);
  } catch {
    return undefined;
  }
}

/** Whether `document.proof` verifies with `key`. */
export function verifyProof(document: Record<string, unknown>, key: KeyObject): boolean {
  const proof = document.proof as Record<string, unknown> | undefined;
  if (proof == null || typeof proof.proofValue !== "string" || !proof.proofValue.startsWith("z")) {
    return false;
  }
  const signature = decodeBase58btc(proof.proofValue.slice(1));
  return verify(null, signedBytes(document, proof), key, signature);
}

/** Options for {@link addProof}. */
export interface AddProofOptions {
  /** The proof's `created`; default now, to the second. */
  readonly created?: string;
  /** Give the proof an `@context` equal to the document's, as FEP-8b32's examples do. */
  readonly withContext?: boolean;
}

/** Adds an eddsa-jcs-2022 proof made with `privateKey` named `verificationMethod`. */
export function addProof(
  document: Record<string, unknown>,
  privateKey: KeyObject,
  verificationMethod: string,
  options: AddProofOptions = {},
): Record<string, unknown> {
  const proof: Record<string, unknown> = {
    ...(options.withContext === true ? { "@context": document["@context"] } : {}),
    type: "DataIntegrityProof",
    cryptosuite: "eddsa-jcs-2022",
    verificationMethod,
    proofPurpose: "assertionMethod",
    created: options.created ?? new Date().toISOString().replace(/\.\d{3}Z$/, "Z"),
  };
  const value = sign(null, signedBytes(document, proof), privateKey);
  return { ...document, proof: { ...proof, proofValue: `z${base58btc(value)}` } };
}
