/**
 * Runs the signed-request vectors in fixtures/signatures/ as another implementation would:
 * builds the RFC 9421 signature base from each request and verifies the signature with the
 * given public key. RFC 9421's own Ed25519 example must verify byte for byte; the copies
 * changed after signing must not. A case judged at a given clock (`checkedAt`) must also be
 * inside its time bounds, or outside them for the reason given, by the server's own check.
 */
import { createPublicKey, verify, type JsonWebKey } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { Ajv2020 } from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import { decodeDict, serializeInnerList } from "structured-field-values";
import { describe, expect, it } from "vitest";
import { INBOX_LIMITS, signatureExpired } from "../../server/http/inbox-guard.ts";

interface SignatureCase {
  description: string;
  requirement: string;
  key: JsonWebKey;
  label: string;
  valid: boolean;
  reason?: string;
  signatureBase?: string;
  checkedAt?: number;
  request: { method: string; url: string; headers: [string, string][]; body: string };
}

const directory = new URL("../../fixtures/signatures/", import.meta.url);
const schema = JSON.parse(readFileSync(new URL("schema.json", directory), "utf8")) as object;
const cases = readdirSync(directory)
  .filter((name) => name.endsWith(".json") && name !== "schema.json")
  .sort()
  .map((file) => ({
    file,
    data: JSON.parse(readFileSync(new URL(file, directory), "utf8")) as unknown,
  }))
  .map(({ file, data }) => ({ file, data, ...(data as SignatureCase) }));

interface InnerList {
  value: { value: string; params: Record<string, unknown> | null }[];
  params: Record<string, unknown> | null;
}

/** The value of a component, as RFC 9421 §2.1 and §2.2 define it. */
function componentValue(request: SignatureCase["request"], name: string): string {
  const url = new URL(request.url);
  switch (name) {
    case "@method":
      return request.method.toUpperCase();
    case "@target-uri":
      return url.href;
    case "@authority":
      return url.host.toLowerCase();
    case "@scheme":
      return url.protocol.slice(0, -1);
    case "@path":
      return url.pathname;
    case "@query":
      return url.search === "" ? "?" : url.search;
    default: {
      if (name.startsWith("@")) throw new Error(`derived component ${name} is not supported here`);
      const values = request.headers
        .filter(([header]) => header.toLowerCase() === name)
        .map(([, value]) => value.trim());
      if (values.length === 0) throw new Error(`the request has no ${name} header`);
      return values.join(", ");
    }
  }
}

function header(request: SignatureCase["request"], name: string): string {
  const found = request.headers.find(([h]) => h.toLowerCase() === name);
  if (found == null) throw new Error(`the request has no ${name} header`);
  return found[1];
}

/** The signature base of RFC 9421 §2.5 for the signature `label`, and its signature bytes. */
function signatureBase(request: SignatureCase["request"], label: string) {
  const inputs = decodeDict(header(request, "signature-input")) as Record<string, unknown>;
  const signatures = decodeDict(header(request, "signature")) as Record<string, unknown>;
  const input = inputs[label] as InnerList | undefined;
  const signature = signatures[label] as { value: Uint8Array } | undefined;
  if (input == null || signature == null) throw new Error(`no signature labelled ${label}`);
  const lines = input.value.map(
    (component) => `"${component.value}": ${componentValue(request, component.value)}`,
  );
  lines.push(`"@signature-params": ${serializeInnerList(input)}`);
  return { base: lines.join("\n"), signature: signature.value };
}

function verifies(c: SignatureCase): boolean {
  const { base, signature } = signatureBase(c.request, c.label);
  const key = createPublicKey({ key: c.key, format: "jwk" });
  const algorithm = c.key.kty === "RSA" ? "sha256" : null;
  return verify(algorithm, Buffer.from(base), key, signature);
}

/** The `created` parameter of the case's signature. */
function createdOf(c: SignatureCase): number {
  const inputs = decodeDict(header(c.request, "signature-input")) as Record<string, unknown>;
  const created = (inputs[c.label] as InnerList | undefined)?.params?.created;
  if (typeof created !== "number") throw new Error("the signature has no created parameter");
  return created;
}

/** The signature headers as the server's inbox guard reads them. */
function guardHeaders(c: SignatureCase) {
  const find = (name: string) => c.request.headers.find(([h]) => h.toLowerCase() === name)?.[1];
  return { signatureInput: find("signature-input"), signature: find("signature") };
}

describe("signed-request fixtures", () => {
  const addFormats = addFormatsModule.default;
  const ajv = new Ajv2020({ strict: true, strictRequired: false });
  addFormats(ajv, ["uri"]);
  const validate = ajv.compile(schema);

  it("has RFC 9421's Ed25519 example and altered copies of it", () => {
    expect(cases.filter((c) => c.valid).map((c) => c.file)).toContain("rfc9421-b2-6-ed25519.json");
    expect(cases.filter((c) => !c.valid).length).toBeGreaterThanOrEqual(3);
  });

  for (const c of cases) {
    describe(c.file, () => {
      it("matches the fixture schema", () => {
        expect(validate(c.data), JSON.stringify(validate.errors)).toBe(true);
      });
      if (c.valid) {
        it(`builds the signature base byte for byte and verifies (${c.requirement})`, () => {
          expect(signatureBase(c.request, c.label).base).toBe(c.signatureBase);
          expect(verifies(c)).toBe(true);
        });
        const { checkedAt } = c;
        if (checkedAt != null) {
          it(`is inside its time bounds at ${checkedAt} (${c.requirement})`, () => {
            expect(Math.abs(checkedAt - createdOf(c))).toBeLessThanOrEqual(
              INBOX_LIMITS.signatureWindowSeconds,
            );
            expect(signatureExpired(guardHeaders(c), checkedAt)).toBe(false);
          });
        }
      } else if (c.reason === "expired") {
        it(`verifies, but is refused at ${c.checkedAt} because it expired (${c.requirement})`, () => {
          expect(signatureBase(c.request, c.label).base).toBe(c.signatureBase);
          expect(verifies(c)).toBe(true);
          // Only the expiry refuses it: its created time is inside the window.
          expect(Math.abs(Number(c.checkedAt) - createdOf(c))).toBeLessThanOrEqual(
            INBOX_LIMITS.signatureWindowSeconds,
          );
          expect(signatureExpired(guardHeaders(c), c.checkedAt)).toBe(true);
        });
      } else {
        it(`does not verify: ${c.description} (${c.requirement})`, () => {
          expect(verifies(c)).toBe(false);
        });
      }
    });
  }
});
