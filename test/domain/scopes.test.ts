/**
 * Scope satisfaction with Taskcluster's semantics (star suffix, roles, parameterized roles)
 * and deny rules, including the cases that are easy to get wrong.
 */
import { describe, expect, it } from "vitest";
import {
  createRoleSet,
  expandScopes,
  missingScopes,
  normalizeScopes,
  satisfies,
  scopeCovers,
  scopesOverlap,
  substituteParameter,
  type Role,
  type RoleLookup,
} from "../../server/domain/scopes.ts";

describe("scopeCovers", () => {
  it("matches a scope only by itself or by a star prefix", () => {
    expect(scopeCovers("a:b", "a:b")).toBe(true);
    expect(scopeCovers("a:b", "a:bc")).toBe(false);
    expect(scopeCovers("a:b", "a:")).toBe(false);
    expect(scopeCovers("a:*", "a:b:c")).toBe(true);
    expect(scopeCovers("a:*", "a:")).toBe(true);
    expect(scopeCovers("a:*", "a:*")).toBe(true);
    expect(scopeCovers("a:*", "a")).toBe(false);
    expect(scopeCovers("a*", "a")).toBe(true);
    expect(scopeCovers("*", "")).toBe(true);
    expect(scopeCovers("*", "anything:at:all")).toBe(true);
  });

  it("treats a star that is not last as an ordinary character", () => {
    expect(scopeCovers("a:*:c", "a:b:c")).toBe(false);
    expect(scopeCovers("a:*:c", "a:*:c")).toBe(true);
  });

  it("does not let a required star be satisfied by a narrower grant", () => {
    expect(scopeCovers("a:b", "a:*")).toBe(false);
    expect(scopeCovers("a:b*", "a:*")).toBe(false);
    expect(satisfies(["a:b", "a:c"], ["a:*"])).toBe(false);
  });
});

describe("satisfies", () => {
  it("needs every required scope and is true for none", () => {
    expect(satisfies([], [])).toBe(true);
    expect(satisfies(["x"], [])).toBe(true);
    expect(satisfies(["a", "b"], ["a", "b"])).toBe(true);
    expect(satisfies(["a"], ["a", "b"])).toBe(false);
    expect(missingScopes(["a"], ["a", "b", "c", "b"])).toEqual(["b", "c"]);
  });

  it("grants a role's scopes through assume:, recursively", () => {
    const roles = createRoleSet([
      { roleId: "ci", scopes: ["taskweb:task:create", "assume:reader"] },
      { roleId: "reader", scopes: ["taskweb:task:read:*"] },
    ]);
    expect(satisfies(["assume:ci"], ["taskweb:task:read:abc"], { roles })).toBe(true);
    expect(satisfies(["assume:ci"], ["taskweb:task:create"], { roles })).toBe(true);
    expect(satisfies(["assume:reader"], ["taskweb:task:create"], { roles })).toBe(false);
    // The role's name is not a scope of its own: assume:ci grants ci's scopes, not "ci".
    expect(satisfies(["assume:ci"], ["ci"], { roles })).toBe(false);
    // Without the role list nothing is expanded.
    expect(satisfies(["assume:ci"], ["taskweb:task:create"])).toBe(false);
  });

  it("survives cycles between roles", () => {
    const roles = createRoleSet([
      { roleId: "a", scopes: ["assume:b", "scope-a"] },
      { roleId: "b", scopes: ["assume:a", "scope-b"] },
      { roleId: "self", scopes: ["assume:self"] },
    ]);
    expect(satisfies(["assume:a"], ["scope-a", "scope-b"], { roles })).toBe(true);
    expect(satisfies(["assume:a"], ["scope-c"], { roles })).toBe(false);
    expect(satisfies(["assume:self"], ["x"], { roles })).toBe(false);
  });

  it("grants every role a starred assume: scope covers", () => {
    const roles = createRoleSet([
      { roleId: "repo:one", scopes: ["push:one"] },
      { roleId: "repo:two", scopes: ["push:two"] },
      { roleId: "other", scopes: ["push:other"] },
    ]);
    expect(satisfies(["assume:repo:*"], ["push:one", "push:two"], { roles })).toBe(true);
    expect(satisfies(["assume:repo:*"], ["push:other"], { roles })).toBe(false);
    // A bare star (and a star short of "assume:") covers every role, so it grants everything.
    expect(satisfies(["assu*"], ["push:other"], { roles })).toBe(true);
  });

  it("substitutes the matched suffix into a parameterized role", () => {
    const roles = createRoleSet([
      {
        roleId: "project:*",
        scopes: ["secrets:get:project/<..>/*", "hooks:trigger:<..>", "fixed"],
      },
    ]);
    expect(satisfies(["assume:project:web"], ["secrets:get:project/web/token"], { roles })).toBe(
      true,
    );
    expect(satisfies(["assume:project:web"], ["hooks:trigger:web"], { roles })).toBe(true);
    expect(satisfies(["assume:project:web"], ["hooks:trigger:api"], { roles })).toBe(false);
    expect(satisfies(["assume:project:web"], ["fixed"], { roles })).toBe(true);
    // The empty suffix matches too, as in Taskcluster.
    expect(satisfies(["assume:project:"], ["hooks:trigger:"], { roles })).toBe(true);
    // A role prefix that does not match grants nothing.
    expect(satisfies(["assume:projec"], ["fixed"], { roles })).toBe(false);
  });

  it("cuts a substituted scope after a star that came from the assume: scope", () => {
    const roles = createRoleSet([
      { roleId: "project:*", scopes: ["secrets:get:project/<..>/token", "hooks:<..>:x"] },
    ]);
    // assume:project:we* covers project:web, project:wex… so the parameter is we*.
    expect(satisfies(["assume:project:we*"], ["secrets:get:project/web/token"], { roles })).toBe(
      true,
    );
    expect(satisfies(["assume:project:we*"], ["secrets:get:project/wx/token"], { roles })).toBe(
      false,
    );
    // A star shorter than the role's prefix covers every parameter: the parameter is *.
    expect(satisfies(["assume:proj*"], ["secrets:get:project/anything"], { roles })).toBe(true);
    expect(satisfies(["assume:proj*"], ["hooks:anything"], { roles })).toBe(true);
    expect(expandScopes(["assume:project:we*"], roles)).toEqual([
      "assume:project:we*",
      "hooks:we*",
      "secrets:get:project/we*",
    ]);
  });

  it("gives a longer parameterized role id precedence to nobody: every matching role applies", () => {
    const roles = createRoleSet([
      { roleId: "repo:*", scopes: ["generic:<..>"] },
      { roleId: "repo:github/*", scopes: ["github:<..>"] },
      { roleId: "repo:github/app", scopes: ["exact"] },
    ]);
    const granted = ["assume:repo:github/app"];
    expect(satisfies(granted, ["generic:github/app", "github:app", "exact"], { roles })).toBe(true);
    expect(satisfies(granted, ["github:other"], { roles })).toBe(false);
  });

  it("does not read roles it does not need", () => {
    const asked: string[] = [];
    const base = createRoleSet([
      { roleId: "a", scopes: ["x"] },
      { roleId: "b", scopes: ["y"] },
    ]);
    const roles: RoleLookup = {
      rolesFor(pattern) {
        asked.push(pattern);
        return base.rolesFor(pattern);
      },
    };
    expect(satisfies(["x", "assume:a", "assume:b"], ["x"], { roles })).toBe(true);
    expect(asked).toEqual([]);
    expect(satisfies(["assume:a", "assume:b"], ["x"], { roles })).toBe(true);
    expect(asked).toEqual(["a"]);
  });

  it("fails closed on a parameterized role whose closure never ends", () => {
    const roles = createRoleSet([{ roleId: "grow*", scopes: ["assume:grow<..>x"] }]);
    expect(satisfies(["assume:grow"], ["never"], { roles, maxScopes: 200 })).toBe(false);
    expect(satisfies(["assume:grow"], ["assume:growxxx"], { roles, maxScopes: 200 })).toBe(true);
  });
});

describe("deny rules", () => {
  const roles = createRoleSet([{ roleId: "admin-ish", scopes: ["taskweb:*"] }]);

  it("override a direct grant, a star grant and a grant through a role", () => {
    const deny = ["taskweb:secret:set:prod/*"];
    expect(
      satisfies(["taskweb:secret:set:prod/key"], ["taskweb:secret:set:prod/key"], { deny }),
    ).toBe(false);
    expect(satisfies(["*"], ["taskweb:secret:set:prod/key"], { deny })).toBe(false);
    expect(satisfies(["assume:admin-ish"], ["taskweb:secret:set:prod/key"], { roles, deny })).toBe(
      false,
    );
    expect(satisfies(["assume:admin-ish"], ["taskweb:secret:set:dev/key"], { roles, deny })).toBe(
      true,
    );
  });

  it("refuse a required star scope that would include a denied scope", () => {
    const deny = ["taskweb:secret:set:prod"];
    expect(satisfies(["*"], ["taskweb:secret:set:*"], { deny })).toBe(false);
    expect(satisfies(["*"], ["taskweb:secret:list"], { deny })).toBe(true);
    expect(missingScopes(["*"], ["a", "taskweb:secret:*"], { deny })).toEqual(["taskweb:secret:*"]);
  });

  it("overlap only where the sets of scopes share a member", () => {
    expect(scopesOverlap("a:b*", "a:*")).toBe(true);
    expect(scopesOverlap("a:b*", "a:c*")).toBe(false);
    expect(scopesOverlap("a:b", "a:bc")).toBe(false);
  });
});

describe("substituteParameter and normalizeScopes", () => {
  it("replaces every <..> unless the parameter ends in a star", () => {
    expect(substituteParameter("a:<..>:b:<..>", "x")).toBe("a:x:b:x");
    expect(substituteParameter("a:<..>:b:<..>", "x*")).toBe("a:x*");
    expect(substituteParameter("plain", "x")).toBe("plain");
  });

  it("drops scopes another one covers", () => {
    expect(normalizeScopes(["a:b", "a:*", "c", "a:*", "a:b:c"])).toEqual(["a:*", "c"]);
    const roles: Role[] = [{ roleId: "r", scopes: ["z", "y:*", "y:1"] }];
    expect(expandScopes(["assume:r"], createRoleSet(roles))).toEqual(["assume:r", "y:*", "z"]);
  });
});
