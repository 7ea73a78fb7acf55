/**
 * URL parsing and the same-origin rule (FEP-fe34 style): a cluster speaks only for objects on
 * its own origin, so a receiver trusts an embedded object only when its id has the origin
 * of the activity's actor.
 *
 * @module
 */
import { fail, ok } from "./result.ts";
import type { ParseResult } from "./result.ts";

/**
 * Parses an absolute http(s) URL without throwing.
 *
 * Credentials in the URL are refused: origins ignore them, so `https://a@b.example/` and
 * `https://b.example/` would be the same origin while looking different to a person, and
 * they must never travel in activities anyway.
 *
 * @param value - The candidate URL.
 * @param path - JSON Pointer of the value, for the failure.
 * @returns The parsed URL, or a `bad-url` failure.
 */
export function parseHttpUrl(value: unknown, path?: string): ParseResult<URL> {
  if (typeof value !== "string" && !(value instanceof URL)) {
    return fail("bad-url", "expected an absolute http(s) URL string", path);
  }
  const text = String(value);
  const url = URL.parse(text);
  if (url === null) {
    return fail("bad-url", `${JSON.stringify(text)} is not an absolute URL; use https://…`, path);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    return fail(
      "bad-url",
      `${JSON.stringify(text)} uses ${url.protocol}; only http: and https: URLs are allowed`,
      path,
    );
  }
  if (url.username !== "" || url.password !== "") {
    return fail("bad-url", "URLs must not contain credentials (user:password@)", path);
  }
  return ok(url);
}

/**
 * The origin (scheme, host and port) of an http(s) URL, e.g. `https://a.example` or
 * `http://127.0.0.1:3101`; default ports are omitted and hosts are lower-cased, so equal
 * origins compare equal as strings.
 *
 * @param url - The URL.
 * @returns The serialised origin, or a `bad-url` failure.
 */
export function originOf(url: string | URL): ParseResult<string> {
  const parsed = parseHttpUrl(url);
  return parsed.ok ? ok(parsed.value.origin) : parsed;
}

/**
 * Whether two URLs are http(s) URLs on the same origin. A URL that does not parse is on no
 * origin, so the answer is then `false`.
 *
 * @param a - One URL.
 * @param b - The other URL.
 * @returns `true` when both parse and their origins are equal.
 */
export function sameOrigin(a: string | URL, b: string | URL): boolean {
  const originA = originOf(a);
  const originB = originOf(b);
  return originA.ok && originB.ok && originA.value === originB.value;
}
