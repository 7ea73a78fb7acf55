/**
 * The rules of secrets without a cluster: the cipher (AES-256-GCM, a fresh IV per value,
 * the name bound, a clear error for another key or altered bytes), the secrets key as
 * configuration, and the names and values the API accepts, the same in code and in the
 * task graph schema.
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { TASK_GRAPH_SCHEMA } from "../../protocol/index.ts";
import { ConfigError, readConfig } from "../../server/config.ts";
import {
  createSecretCipher,
  decodeSecretsKey,
  generateSecretsKey,
  SecretDecryptionError,
} from "../../server/domain/secret-cipher.ts";
import { isSecretName, SECRET_LIMITS, secretValueProblem } from "../../server/domain/secrets.ts";

describe("the secret cipher", () => {
  const cipher = createSecretCipher(randomBytes(32));

  it("opens what it sealed, under the same name", () => {
    const sealed = cipher.seal("npm/token", "värde-🔑-value");
    expect(sealed.keyId).toBe(cipher.keyId);
    expect(sealed.iv).toHaveLength(12);
    expect(sealed.authTag).toHaveLength(16);
    expect(cipher.open("npm/token", sealed)).toBe("värde-🔑-value");
  });

  it("seals one value twice under different IVs and ciphertexts", () => {
    const a = cipher.seal("x", "same value");
    const b = cipher.seal("x", "same value");
    expect(Buffer.from(a.iv).equals(Buffer.from(b.iv))).toBe(false);
    expect(Buffer.from(a.ciphertext).equals(Buffer.from(b.ciphertext))).toBe(false);
  });

  it("refuses a value moved to another name", () => {
    const sealed = cipher.seal("prod/token", "production value");
    expect(() => cipher.open("test/token", sealed)).toThrow(SecretDecryptionError);
  });

  it("refuses altered ciphertext or tag", () => {
    const sealed = cipher.seal("x", "a value to alter");
    const flipped = Buffer.from(sealed.ciphertext);
    flipped[0] = (flipped[0] ?? 0) ^ 1;
    expect(() => cipher.open("x", { ...sealed, ciphertext: flipped })).toThrow(/altered/);
    const tag = Buffer.from(sealed.authTag);
    tag[3] = (tag[3] ?? 0) ^ 0x80;
    expect(() => cipher.open("x", { ...sealed, authTag: tag })).toThrow(SecretDecryptionError);
  });

  it("names both keys when a value was sealed with another key", () => {
    const other = createSecretCipher(randomBytes(32));
    expect(other.keyId).not.toBe(cipher.keyId);
    const sealed = other.seal("x", "sealed elsewhere");
    expect(() => cipher.open("x", sealed)).toThrow(
      `secret "x" was stored with key ${other.keyId}, and this process has key ${cipher.keyId}`,
    );
    // Even with a forged key id, the other key's value does not open.
    expect(() => cipher.open("x", { ...sealed, keyId: cipher.keyId })).toThrow(/altered/);
  });

  it("derives a stable 16-hex-digit key id from the key", () => {
    const key = randomBytes(32);
    expect(createSecretCipher(key).keyId).toBe(createSecretCipher(key).keyId);
    expect(createSecretCipher(key).keyId).toMatch(/^[0-9a-f]{16}$/);
  });
});

describe("the secrets key", () => {
  it("decodes 32 bytes of base64, standard or URL-safe, with or without padding", () => {
    const key = randomBytes(32);
    for (const text of [
      key.toString("base64"),
      key.toString("base64url"),
      `${key.toString("base64")}\n`,
    ]) {
      expect(Buffer.from(decodeSecretsKey(text) as Buffer).equals(key)).toBe(true);
    }
    expect(decodeSecretsKey(generateSecretsKey())).toBeInstanceOf(Buffer);
  });

  it("says what is wrong with a key that is not 32 bytes of base64", () => {
    expect(decodeSecretsKey(randomBytes(16).toString("base64"))).toBe(
      "it decodes to 16 bytes, not 32",
    );
    expect(decodeSecretsKey("not base64!")).toBe("it is not base64");
  });

  it("is checked when the configuration is read, and the error never shows the key", () => {
    const bad = randomBytes(31).toString("base64");
    expect(() => readConfig({ TASKWEB_SECRETS_KEY: bad })).toThrow(ConfigError);
    try {
      readConfig({ TASKWEB_SECRETS_KEY: bad });
    } catch (error) {
      expect(String(error)).toContain("TASKWEB_SECRETS_KEY must be the base64 of 32 random bytes");
      expect(String(error)).not.toContain(bad);
    }
    const good = generateSecretsKey();
    expect(readConfig({ TASKWEB_SECRETS_KEY: good }).secretsKey).toBe(good);
    expect(readConfig({}).secretsKey).toBeUndefined();
  });
});

describe("secret names and values", () => {
  const names: [string, boolean][] = [
    ["npm/publish-token", true],
    ["A_b.c-d", true],
    ["x", true],
    ["n".repeat(128), true],
    ["a/b/c.d", true],
    ["...", true],
    ["n".repeat(129), false],
    ["", false],
    ["/leading", false],
    ["trailing/", false],
    ["a//b", false],
    ["a/./b", false],
    ["a/../b", false],
    ["..", false],
    [".", false],
    ["with space", false],
    ["ünïcode", false],
    ["semi;colon", false],
  ];

  it("accepts names of [A-Za-z0-9_./-] in segments that are not empty, '.' or '..'", () => {
    for (const [name, valid] of names)
      expect({ name, valid: isSecretName(name) }).toEqual({ name, valid });
  });

  it("has the same rule in the task graph schema", () => {
    const defs = TASK_GRAPH_SCHEMA.$defs as Record<string, { pattern: string }>;
    const pattern = new RegExp(defs.secretName!.pattern, "u");
    for (const [name, valid] of names)
      expect({ name, valid: pattern.test(name) }).toEqual({ name, valid });
  });

  it("accepts string values of 4 characters to 64 KiB, without NUL", () => {
    expect(secretValueProblem("abcd")).toBeUndefined();
    expect(secretValueProblem("🔑🔑🔑🔑")).toBeUndefined();
    expect(secretValueProblem("v".repeat(SECRET_LIMITS.maxValueBytes))).toBeUndefined();
    expect(secretValueProblem("abc")).toMatch(/at least 4 characters/);
    expect(secretValueProblem("🔑🔑🔑")).toMatch(/at least 4 characters/);
    expect(secretValueProblem("v".repeat(SECRET_LIMITS.maxValueBytes + 1))).toMatch(/65536 bytes/);
    expect(secretValueProblem("a\u0000bcd")).toMatch(/NUL/);
    expect(secretValueProblem(1234)).toMatch(/must be a string/);
    expect(secretValueProblem(undefined)).toMatch(/must be a string/);
  });
});
