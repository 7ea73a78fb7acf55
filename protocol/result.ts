/**
 * Results returned at the trust boundary: parsing what another cluster sent never throws, it
 * answers with a machine-readable reason that a server can log, count and map to a status.
 *
 * @module
 */

/**
 * Every reason a taskweb parser gives for refusing input. The set is closed so that servers
 * and conformance suites can switch on it; the same codes appear as `reason` in the fixtures
 * under `fixtures/activities/`.
 */
export const PARSE_FAILURE_CODES = [
  // The body is not JSON text (or not UTF-8).
  "not-json",
  // The body is larger than the receiver accepts.
  "too-large",
  // Arrays and objects are nested deeper than the receiver accepts.
  "too-deep",
  // `@context` is missing, lacks the taskweb terms, or redefines them.
  "bad-context",
  // `type` names no taskweb type, or more than one.
  "unknown-type",
  // A taskweb type is given without the ActivityStreams base type (`Activity`, `Object`).
  "missing-base-type",
  // The document does not match the JSON Schema for its type.
  "schema",
  // A URL is not an absolute http(s) URL without credentials.
  "bad-url",
  // A digest is not a well-formed SHA-256, or does not match the content.
  "bad-digest",
  // An id or reference is not on the actor's origin, or `attributedTo` is not the actor.
  "origin-mismatch",
  // An artifact listed on a task names another task.
  "task-mismatch",
  // Counts that contradict each other, such as more resolved tasks than a group has.
  "bad-count",
] as const;

/** A machine-readable reason for refusing input; one of {@link PARSE_FAILURE_CODES}. */
export type ParseFailureCode = (typeof PARSE_FAILURE_CODES)[number];

/** Why input was refused. */
export interface ParseFailure {
  // What kind of problem it is; stable across versions.
  readonly code: ParseFailureCode;
  // What was wrong and what the sender should do instead, for logs and error responses.
  readonly message: string;
  // JSON Pointer (RFC 6901) to the offending value, when one value is at fault.
  readonly path?: string;
}

/** The outcome of parsing untrusted input: the value, or the reason it was refused. */
export type ParseResult<T> =
  { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: ParseFailure };

/**
 * Wraps a successfully parsed value.
 *
 * @param value - The parsed value.
 * @returns A successful {@link ParseResult}.
 */
export function ok<T>(value: T): ParseResult<T> {
  return { ok: true, value };
}

/**
 * Builds a failed result.
 *
 * @param code - The machine-readable reason.
 * @param message - What was wrong and what to do about it.
 * @param path - JSON Pointer to the offending value, if there is one.
 * @returns A failed {@link ParseResult}.
 */
export function fail<T = never>(
  code: ParseFailureCode,
  message: string,
  path?: string,
): ParseResult<T> {
  return { ok: false, reason: path === undefined ? { code, message } : { code, message, path } };
}
