/**
 * Scopes with Taskcluster's semantics, plus deny rules. Pure: no database, no HTTP.
 *
 * - A scope is a string. A granted scope ending in `*` satisfies every scope that starts
 *   with what precedes the `*` (`taskweb:task:*` satisfies `taskweb:task:rerun:abc`); `*`
 *   alone satisfies everything. Any other granted scope satisfies only itself.
 * - A role is a named set of scopes. Holding `assume:<roleId>` grants the role's scopes,
 *   recursively (a role may hold `assume:` scopes of other roles; cycles are harmless).
 * - A role id ending in `*` is parameterized: `assume:repo:abc` matches role `repo:*`, and
 *   every `<..>` in that role's scopes is replaced by the matched suffix (`abc`). When the
 *   suffix itself ends in `*` (`assume:repo:ab*`, or `assume:*`), the substituted scope is
 *   cut after that `*`, since nothing after a `*` means anything.
 * - A granted `assume:` scope ending in `*` grants every role it covers
 *   (`assume:repo:*` grants roles `repo:a`, `repo:b` and `repo:*` with `<..>` as `*`).
 * - A deny pattern overrides every grant: a required scope that a deny pattern overlaps is
 *   never satisfied, whatever the grants.
 *
 * {@link missingScopes} and {@link satisfies} do not expand the whole closure of the grants
 * up front: they walk it breadth first and stop as soon as every required scope is covered,
 * and they only consult the roles an `assume:` scope actually reaches.
 * @module
 */

/** A role: `assume:<roleId>` grants its scopes. */
export interface Role {
  readonly roleId: string;
  readonly scopes: readonly string[];
}

/** Finds the roles a granted `assume:` scope reaches; see {@link createRoleSet}. */
export interface RoleLookup {
  /**
   * The roles that `assume:<pattern>` reaches, with the `<..>` parameter for each
   * parameterized role (undefined for a plain role).
   */
  rolesFor(pattern: string): readonly { readonly role: Role; readonly parameter?: string }[];
}

/** Options for {@link missingScopes} and {@link satisfies}. */
export interface ScopeCheckOptions {
  /** The roles `assume:` scopes refer to. @defaultValue no roles */
  readonly roles?: RoleLookup;
  /** Deny patterns that override every grant. @defaultValue none */
  readonly deny?: readonly string[];
  /**
   * How many distinct scopes the walk may visit before it gives up (a parameterized role
   * that assumes a longer parameter of itself has an infinite closure). Scopes still missing
   * then stay missing: the check fails closed. @defaultValue 10000
   */
  readonly maxScopes?: number;
}

const ASSUME = "assume:";
const PARAMETER = "<..>";
const DEFAULT_MAX_SCOPES = 10_000;

/** A scope is a non-empty string of printable ASCII, at most 500 characters. */
export const SCOPE_PATTERN = /^[\x20-\x7e]{1,500}$/;

/** Whether `scope` is well formed (see {@link SCOPE_PATTERN}). */
export function isValidScope(scope: unknown): scope is string {
  return typeof scope === "string" && SCOPE_PATTERN.test(scope);
}

/** Whether the granted scope `granted` satisfies the scope `required`. */
export function scopeCovers(granted: string, required: string): boolean {
  if (granted === required) return true;
  return granted.endsWith("*") && required.startsWith(granted.slice(0, -1));
}

/**
 * Whether two scope patterns share at least one concrete scope: the test a deny pattern
 * applies, so that denying `secret:set:prod` also refuses a request that needs
 * `secret:set:*` (which would include it).
 */
export function scopesOverlap(a: string, b: string): boolean {
  return scopeCovers(a, b) || scopeCovers(b, a);
}

/**
 * Substitutes a parameterized role's parameter into one of its scopes. With a parameter
 * ending in `*`, the scope is cut after the substituted `*`.
 */
export function substituteParameter(scope: string, parameter: string): string {
  const at = scope.indexOf(PARAMETER);
  if (at < 0) return scope;
  if (parameter.endsWith("*")) return scope.slice(0, at) + parameter;
  return scope.split(PARAMETER).join(parameter);
}

/** An in-memory {@link RoleLookup} over a list of roles. */
export function createRoleSet(roles: readonly Role[]): RoleLookup {
  const list = [...roles];
  return {
    rolesFor(pattern) {
      const found: { role: Role; parameter?: string }[] = [];
      const starred = pattern.endsWith("*");
      const prefix = starred ? pattern.slice(0, -1) : pattern;
      for (const role of list) {
        const parameterized = role.roleId.endsWith("*");
        const rolePrefix = parameterized ? role.roleId.slice(0, -1) : role.roleId;
        if (!parameterized) {
          if (starred ? role.roleId.startsWith(prefix) : role.roleId === pattern) {
            found.push({ role });
          }
          continue;
        }
        if (starred && rolePrefix.startsWith(prefix)) {
          // `assume:a*` covers every `assume:a-b…`, so the parameter is anything.
          found.push({ role, parameter: "*" });
        } else if (prefix.startsWith(rolePrefix)) {
          found.push({ role, parameter: pattern.slice(rolePrefix.length) });
        }
      }
      return found;
    },
  };
}

/** The `assume:` pattern a granted scope stands for, if it reaches roles at all. */
function assumePattern(scope: string): string | undefined {
  if (scope.startsWith(ASSUME)) return scope.slice(ASSUME.length);
  // `*`, `a*`, `assu*`: covers every `assume:…` scope, so every role.
  if (scope.endsWith("*") && ASSUME.startsWith(scope.slice(0, -1))) return "*";
  return undefined;
}

/**
 * The required scopes that `granted` (through `options.roles`) does not satisfy, or that a
 * deny pattern refuses, in the order given. Empty means satisfied.
 */
export function missingScopes(
  granted: readonly string[],
  required: readonly string[],
  options: ScopeCheckOptions = {},
): string[] {
  const deny = options.deny ?? [];
  const denied = new Set(required.filter((r) => deny.some((d) => scopesOverlap(d, r))));
  let open = [...new Set(required)].filter((r) => !denied.has(r));
  if (open.length > 0) {
    const max = options.maxScopes ?? DEFAULT_MAX_SCOPES;
    const seen = new Set<string>();
    const queue: string[] = [...granted];
    // Roles are expanded only once every scope already at hand has been tried, one
    // `assume:` scope at a time, so a check that plain grants settle reads no role.
    const toExpand: string[] = [];
    let next = 0;
    let expanded = 0;
    while (open.length > 0 && seen.size < max) {
      if (next < queue.length) {
        const scope = queue[next++] as string;
        if (seen.has(scope)) continue;
        seen.add(scope);
        open = open.filter((r) => !scopeCovers(scope, r));
        if (options.roles != null && assumePattern(scope) != null) toExpand.push(scope);
        continue;
      }
      if (expanded >= toExpand.length || options.roles == null) break;
      const pattern = assumePattern(toExpand[expanded++] as string) as string;
      for (const { role, parameter } of options.roles.rolesFor(pattern)) {
        for (const s of role.scopes) {
          const scope = parameter == null ? s : substituteParameter(s, parameter);
          if (!seen.has(scope)) queue.push(scope);
        }
      }
    }
  }
  const stillOpen = new Set(open);
  return required.filter(
    (r, i) => required.indexOf(r) === i && (denied.has(r) || stillOpen.has(r)),
  );
}

/** Whether `granted` satisfies every scope of `required`; see {@link missingScopes}. */
export function satisfies(
  granted: readonly string[],
  required: readonly string[],
  options: ScopeCheckOptions = {},
): boolean {
  return missingScopes(granted, required, options).length === 0;
}

/**
 * The whole closure of `granted` through the roles, without scopes another one covers,
 * sorted. For display (`taskweb client list`); checks use {@link satisfies}.
 */
export function expandScopes(
  granted: readonly string[],
  roles: RoleLookup = createRoleSet([]),
  maxScopes = DEFAULT_MAX_SCOPES,
): string[] {
  const seen = new Set<string>();
  const queue = [...granted];
  for (let i = 0; i < queue.length && seen.size < maxScopes; i++) {
    const scope = queue[i] as string;
    if (seen.has(scope)) continue;
    seen.add(scope);
    const pattern = assumePattern(scope);
    if (pattern == null) continue;
    for (const { role, parameter } of roles.rolesFor(pattern)) {
      for (const s of role.scopes)
        queue.push(parameter == null ? s : substituteParameter(s, parameter));
    }
  }
  return normalizeScopes([...seen]);
}

/** `scopes` without duplicates and without scopes another one of them covers, sorted. */
export function normalizeScopes(scopes: readonly string[]): string[] {
  const unique = [...new Set(scopes)];
  return unique.filter((s) => !unique.some((other) => other !== s && scopeCovers(other, s))).sort();
}
