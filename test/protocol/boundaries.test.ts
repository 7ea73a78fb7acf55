/**
 * The wire format knows no server: protocol/ may import only node: built-ins, Ajv and
 * jsonld, so that a third-party conformance suite can use it without our server's stack.
 */
import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

const root = new URL("../../protocol/", import.meta.url);
const ALLOWED = [/^node:/, /^ajv(\/|$)/, /^ajv-formats$/, /^jsonld$/, /^\.\.?\//];

function sourceFiles(directory: URL): URL[] {
  return readdirSync(directory, { withFileTypes: true }).flatMap((entry) => {
    if (entry.isDirectory()) return sourceFiles(new URL(`${entry.name}/`, directory));
    return entry.name.endsWith(".ts") ? [new URL(entry.name, directory)] : [];
  });
}

function importsOf(source: string): string[] {
  return [
    ...source.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+"([^"]+)"/gms),
    ...source.matchAll(/^\s*import\s+"([^"]+)"/gm),
    ...source.matchAll(/\bimport\(\s*"([^"]+)"\s*\)/g),
  ].map((match) => match[1] ?? "");
}

describe("protocol/", () => {
  const files = sourceFiles(root);

  it("is scanned for imports", () => {
    const all = files.flatMap((file) => importsOf(readFileSync(file, "utf8")));
    expect(all).toContain("ajv/dist/2020.js");
    expect(all).toContain("./result.ts");
  });

  it.each(files.map((file) => file.pathname.slice(root.pathname.length)))(
    "%s imports only node: built-ins, ajv, ajv-formats, jsonld and protocol/ itself",
    (name) => {
      const source = readFileSync(new URL(name, root), "utf8");
      for (const specifier of importsOf(source)) {
        expect(
          ALLOWED.some((pattern) => pattern.test(specifier)),
          specifier,
        ).toBe(true);
        if (specifier.startsWith(".")) {
          expect(new URL(specifier, new URL(name, root)).pathname.startsWith(root.pathname)).toBe(
            true,
          );
        }
      }
    },
  );
});
