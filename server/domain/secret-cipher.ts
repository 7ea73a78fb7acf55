/**
 * Encryption of secret values at rest: AES-256-GCM from `node:crypto` with a random 96-bit
 * IV per value and the secret's name as additional authenticated data, so that a value
 * copied onto another name's row does not decrypt. Each sealed value records the id of the
 * key that sealed it, so that a process holding another key says so instead of failing
 * obscurely, and so that keys can be rotated later.
 * @module
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from "node:crypto";

/** Bytes of a secrets key (AES-256). */
export const SECRETS_KEY_BYTES = 32;

const IV_BYTES = 12;
const AUTH_TAG_BYTES = 16;
/** Versions the additional authenticated data, so that its layout can change later. */
const AAD_PREFIX = "taskweb secret v1\n";

/** A value as stored: ciphertext, IV and authentication tag, and the key that sealed it. */
export interface SealedSecret {
  /** {@link SecretCipher.keyId} of the key that sealed the value. */
  readonly keyId: string;
  readonly iv: Uint8Array;
  readonly ciphertext: Uint8Array;
  readonly authTag: Uint8Array;
}

/** The value was sealed with another key, or its stored bytes were altered. */
export class SecretDecryptionError extends Error {
  override readonly name = "SecretDecryptionError";
}

/** Seals and opens secret values with one key. */
export interface SecretCipher {
  /**
   * A fingerprint of the key (an HMAC of a fixed label under it): tells keys apart without
   * revealing anything about them.
   */
  readonly keyId: string;
  /** Encrypts `value`, bound to `name`. */
  seal(name: string, value: string): SealedSecret;
  /**
   * Decrypts a value sealed under `name`.
   * @throws {SecretDecryptionError} when another key sealed it or its bytes were altered.
   */
  open(name: string, sealed: SealedSecret): string;
}

/**
 * Decodes a secrets key written as base64 (standard or URL-safe, padding optional).
 * @returns the key, or a sentence saying what is wrong with `text` (never quoting it).
 */
export function decodeSecretsKey(text: string): Buffer | string {
  const trimmed = text.trim();
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(trimmed)) {
    return "it is not base64";
  }
  const key = Buffer.from(trimmed.replace(/-/g, "+").replace(/_/g, "/"), "base64");
  if (key.length !== SECRETS_KEY_BYTES) {
    return `it decodes to ${key.length} bytes, not ${SECRETS_KEY_BYTES}`;
  }
  return key;
}

/** A new random key, as base64. */
export function generateSecretsKey(): string {
  return randomBytes(SECRETS_KEY_BYTES).toString("base64");
}

function additionalData(name: string): Buffer {
  return Buffer.from(`${AAD_PREFIX}${name}`, "utf8");
}

/** A cipher over a 32-byte key (see {@link decodeSecretsKey}). */
export function createSecretCipher(key: Uint8Array): SecretCipher {
  if (key.length !== SECRETS_KEY_BYTES) {
    throw new RangeError(`A secrets key has ${SECRETS_KEY_BYTES} bytes, got ${key.length}.`);
  }
  const secretKey = Buffer.from(key);
  const keyId = createHmac("sha256", secretKey)
    .update("taskweb secrets key id")
    .digest("hex")
    .slice(0, 16);
  return {
    keyId,
    seal(name, value) {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv("aes-256-gcm", secretKey, iv, {
        authTagLength: AUTH_TAG_BYTES,
      });
      cipher.setAAD(additionalData(name));
      const ciphertext = Buffer.concat([cipher.update(value, "utf8"), cipher.final()]);
      return { keyId, iv, ciphertext, authTag: cipher.getAuthTag() };
    },
    open(name, sealed) {
      if (sealed.keyId !== keyId) {
        throw new SecretDecryptionError(
          `secret ${JSON.stringify(name)} was stored with key ${sealed.keyId}, and this process has key ${keyId}`,
        );
      }
      try {
        const decipher = createDecipheriv("aes-256-gcm", secretKey, sealed.iv, {
          authTagLength: AUTH_TAG_BYTES,
        });
        decipher.setAAD(additionalData(name));
        decipher.setAuthTag(sealed.authTag);
        return Buffer.concat([decipher.update(sealed.ciphertext), decipher.final()]).toString(
          "utf8",
        );
      } catch (error) {
        throw new SecretDecryptionError(
          `secret ${JSON.stringify(name)} does not decrypt with key ${keyId}: its stored bytes were altered`,
          { cause: error },
        );
      }
    },
  };
}
