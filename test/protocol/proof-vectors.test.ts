/**
 * Runs the Object Integrity Proof vectors in fixtures/proofs/ (FEP-8b32's own test vector,
 * byte for byte, and copies of it changed after signing) through both proof
 * implementations of this repository: protocol/proof.ts (node:crypto, as signatures.md §3
 * defines eddsa-jcs-2022; the conformance suite signs and checks with it, and the server
 * verifies relayed activities with it) and the ActivityPub library the server signs and
 * verifies its own deliveries with. Ed25519 is deterministic, so where a vector gives the secret key both must
 * also re-create its proofValue exactly.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { createProof, importJwk, verifyObject, type DocumentLoader } from "@fedify/fedify";
import { Activity } from "@fedify/vocab";
import { getDocumentLoader } from "@fedify/vocab-runtime";
import { Temporal } from "@js-temporal/polyfill";
import { Ajv2020 } from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import { describe, expect, it } from "vitest";
import {
  addProof,
  decodeBase58btc,
  ed25519FromMultibase,
  verifyProof,
} from "../../protocol/index.ts";

interface ProofCase {
  description: string;
  requirement: string;
  valid: boolean;
  secretKeyMultibase?: string;
  verificationMethod: string;
  created?: string;
  controllerDocument: { id: string; assertionMethod: Record<string, unknown>[] };
  unsigned?: Record<string, unknown>;
  signed: Record<string, unknown> & { proof: Record<string, unknown> };
}

const directory = new URL("../../fixtures/proofs/", import.meta.url);
const schema = JSON.parse(readFileSync(new URL("schema.json", directory), "utf8")) as object;
const cases = readdirSync(directory)
  .filter((name) => name.endsWith(".json") && name !== "schema.json")
  .sort()
  .map((file) => {
    const data = JSON.parse(readFileSync(new URL(file, directory), "utf8")) as unknown;
    return { file, data, ...(data as ProofCase) };
  });

/** The Multikey entry of the controller document that the proof names. */
function verificationMethodOf(c: ProofCase): Record<string, unknown> {
  const method = c.controllerDocument.assertionMethod.find((m) => m.id === c.verificationMethod);
  if (method == null) throw new Error(`${c.verificationMethod} is not an assertionMethod`);
  return method;
}

/** An Ed25519 private key from a Multikey secret key (`z` + base58(0x80 0x26 ‖ seed)). */
function privateKeyOf(secretKeyMultibase: string): KeyObject {
  const bytes = decodeBase58btc(secretKeyMultibase.slice(1));
  expect(bytes.length).toBe(34);
  expect([bytes[0], bytes[1]]).toEqual([0x80, 0x26]);
  // PKCS #8 wrapping of an Ed25519 seed (RFC 8410).
  const prefix = Buffer.from("302e020100300506032b657004220420", "hex");
  return createPrivateKey({
    key: Buffer.concat([prefix, bytes.slice(2)]),
    format: "der",
    type: "pkcs8",
  });
}

/**
 * A loader that serves the verification method as a Multikey document. The controller
 * document of FEP-8b32's vector names `assertionMethod` at its top level, where none of its
 * contexts defines the term (data-integrity/v2 defines it only inside `proofPurpose`), so a
 * JSON-LD processor drops it; the key id itself is served instead, as FEP-521a allows.
 */
function keyLoader(c: ProofCase): DocumentLoader {
  const preloaded = getDocumentLoader();
  const keyDocument = {
    "@context": "https://w3id.org/security/multikey/v1",
    ...verificationMethodOf(c),
  };
  return async (url) =>
    url === c.verificationMethod
      ? { documentUrl: url, contextUrl: null, document: keyDocument }
      : await preloaded(url);
}

describe("Object Integrity Proof fixtures", () => {
  const addFormats = addFormatsModule.default;
  const ajv = new Ajv2020({ strict: true, strictRequired: false });
  addFormats(ajv, ["uri", "date-time"]);
  const validate = ajv.compile(schema);

  it("has FEP-8b32's vector with its secret key, and altered copies of it", () => {
    const fep = cases.find((c) => c.file === "fep-8b32-create-note.json");
    expect(fep?.valid).toBe(true);
    expect(fep?.secretKeyMultibase).toBeDefined();
    expect(cases.filter((c) => !c.valid).length).toBeGreaterThanOrEqual(3);
  });

  for (const c of cases) {
    describe(c.file, () => {
      it("matches the fixture schema", () => {
        expect(validate(c.data), JSON.stringify(validate.errors)).toBe(true);
      });

      const publicKey = () =>
        ed25519FromMultibase(String(verificationMethodOf(c).publicKeyMultibase));

      it(`${c.valid ? "verifies" : "does not verify"} with protocol/'s eddsa-jcs-2022 (${c.requirement})`, () => {
        expect(verifyProof(c.signed, publicKey())).toBe(c.valid);
      });

      it(`${c.valid ? "verifies" : "does not verify"} with the server's ActivityPub library (${c.requirement})`, async () => {
        const loader = keyLoader(c);
        // A document the library cannot even expand (a context clash) is refused by throwing.
        const verified = await verifyObject(Activity, c.signed, {
          documentLoader: loader,
          contextLoader: loader,
        }).catch(() => null);
        if (c.valid) expect(verified?.id?.href).toBe(c.signed.id);
        else expect(verified).toBeNull();
      });

      const { secretKeyMultibase, unsigned, created } = c;
      if (secretKeyMultibase != null && unsigned != null && created != null) {
        it("has a secret key whose public key is the verification method's", () => {
          const derived = createPublicKey(privateKeyOf(secretKeyMultibase)).export({
            format: "jwk",
          });
          expect(derived.x).toBe(publicKey().export({ format: "jwk" }).x);
        });

        it("re-creates the proof byte for byte with protocol/'s signer", () => {
          const signed = addProof(
            unsigned,
            privateKeyOf(secretKeyMultibase),
            c.verificationMethod,
            {
              created,
              withContext: "@context" in c.signed.proof,
            },
          );
          expect((signed.proof as Record<string, unknown>).proofValue).toBe(
            c.signed.proof.proofValue,
          );
          expect(signed).toEqual(c.signed);
        });

        it("re-creates the proofValue with the server's ActivityPub library", async () => {
          const loader = keyLoader(c);
          const object = await Activity.fromJsonLd(unsigned, {
            documentLoader: loader,
            contextLoader: loader,
          });
          const jwk = privateKeyOf(secretKeyMultibase).export({ format: "jwk" });
          const proof = await createProof(
            object,
            await importJwk(jwk, "private"),
            new URL(c.verificationMethod),
            {
              contextLoader: loader,
              context: unsigned["@context"] as string[],
              // The library takes its own Temporal type; the polyfill is the same API.
              created: Temporal.Instant.from(created) as never,
            },
          );
          expect(proof.proofValue).toEqual(
            decodeBase58btc(String(c.signed.proof.proofValue).slice(1)),
          );
          expect(proof.created?.toString()).toBe(created);
        });
      }
    });
  }
});
