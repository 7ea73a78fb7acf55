/**
 * The inbox guard's reading of the `expires` signature parameter (RFC 9421 §2.3,
 * draft-cavage-12 §2.1.5): a passed expiry refuses the request; quoted strings can neither
 * hide one nor fake one.
 */
import { describe, expect, it } from "vitest";
import { signatureExpired } from "../../server/http/inbox-guard.ts";

const NOW = 1_795_431_700;

describe("signatureExpired", () => {
  it("finds a passed expires parameter in RFC 9421 Signature-Input, and only a passed one", () => {
    const input = (expires: number) =>
      `sig1=("@method" "@target-uri" "content-digest");created=1795431602;expires=${expires};keyid="k"`;
    expect(signatureExpired({ signatureInput: input(NOW - 1), signature: "x" }, NOW)).toBe(true);
    expect(signatureExpired({ signatureInput: input(NOW), signature: "x" }, NOW)).toBe(true);
    expect(signatureExpired({ signatureInput: input(NOW + 1), signature: "x" }, NOW)).toBe(false);
  });

  it("refuses when any of several labels has expired", () => {
    const signatureInput = `a=("@method");created=1;expires=${NOW + 60}, b=("@method");created=1;expires=${NOW - 60}`;
    expect(signatureExpired({ signatureInput, signature: "x" }, NOW)).toBe(true);
  });

  it("does not read a parameter inside a quoted key id", () => {
    const fake = `sig1=("@method");created=1;keyid="https://a.example/k;expires=1"`;
    expect(signatureExpired({ signatureInput: fake, signature: "x" }, NOW)).toBe(false);
    const hidden = `sig1=("@method");keyid="a\\"b";expires=${NOW - 5};created=1`;
    expect(signatureExpired({ signatureInput: hidden, signature: "x" }, NOW)).toBe(true);
  });

  it("is false without an expires parameter", () => {
    expect(
      signatureExpired(
        { signatureInput: `sig1=("@method");created=1;keyid="k"`, signature: "x" },
        NOW,
      ),
    ).toBe(false);
    expect(signatureExpired({ signatureInput: undefined, signature: undefined }, NOW)).toBe(false);
  });

  it("reads draft-cavage's expires parameter, quoted or not", () => {
    const cavage = (expires: string) =>
      `keyId="https://a.example/actor#main-key",algorithm="hs2019",created=1,expires=${expires},headers="(request-target) host date digest",signature="abc="`;
    expect(
      signatureExpired({ signatureInput: undefined, signature: cavage(`${NOW - 1}`) }, NOW),
    ).toBe(true);
    expect(
      signatureExpired({ signatureInput: undefined, signature: cavage(`"${NOW - 1}"`) }, NOW),
    ).toBe(true);
    expect(
      signatureExpired({ signatureInput: undefined, signature: cavage(`${NOW + 100}`) }, NOW),
    ).toBe(false);
    const quoted = `keyId="https://a.example/x,expires=1",algorithm="rsa-sha256",headers="date",signature="abc="`;
    expect(signatureExpired({ signatureInput: undefined, signature: quoted }, NOW)).toBe(false);
  });
});
