/**
 * The matching rules hooks and joins share: globs on names, and tag filters.
 * @module
 */

/** A glob as a regular expression: `*` is any characters, `?` one character. */
export function globToRegExp(glob: string): RegExp {
  let source = "";
  for (const ch of glob) {
    if (ch === "*") source += ".*";
    else if (ch === "?") source += ".";
    else source += ch.replace(/[\\^$.|+()[\]{}]/g, "\\$&");
  }
  return new RegExp(`^${source}$`, "s");
}

/**
 * Whether `tags` has every tag of `wanted` with the same value; other tags may be present,
 * and no `wanted` matches anything.
 */
export function hasTags(
  tags: Readonly<Record<string, string>> | undefined,
  wanted: Readonly<Record<string, string>> | undefined,
): boolean {
  if (wanted == null) return true;
  return Object.entries(wanted).every(
    ([name, value]) => tags != null && Object.hasOwn(tags, name) && tags[name] === value,
  );
}
