/**
 * Task ids: client-chosen, URL-safe, and random enough that two clusters never pick the same
 * one, so a repeated create with the same id can be treated as a success.
 *
 * @module
 */
import { randomBytes } from "node:crypto";

const TASK_ID = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * A new random id in Taskcluster's "nice" slugid form: a version-4 UUID (16 bytes, 122 of
 * them random) as 22 characters of unpadded URL-safe base64.
 *
 * The first bit is cleared so that the id starts with a letter (`A`–`Z`, `a`–`f`): an id
 * that begins with `-` is mistaken for an option on a command line.
 *
 * @returns A 22-character id matching `^[A-Za-f][A-Za-z0-9_-]{21}$`.
 */
export function newSlugId(): string {
  const bytes = randomBytes(16);
  // Version 4 and the RFC 4122 variant, as Taskcluster sets them.
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x40;
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80;
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return bytes.toString("base64url");
}

/**
 * Whether a value may be used as a task id: 1 to 64 characters from `A–Z a–z 0–9 _ -`, so it
 * can stand in a URL path segment, a file name and a queue key without escaping.
 *
 * @param value - The candidate.
 * @returns `true` for a valid task id.
 */
export function isTaskId(value: unknown): value is string {
  return typeof value === "string" && TASK_ID.test(value);
}
