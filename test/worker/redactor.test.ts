/**
 * The streaming redactor: whole values become `[secret]` wherever chunk boundaries fall,
 * nothing that could be the start of a value is shown before the rest arrives, and output
 * that cannot be is shown at once. Then `runCommand` with real pipes, stdout and stderr
 * interleaved.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createRedactor,
  redactionPatterns,
  REDACTED,
  type Redactor,
} from "../../server/worker/redactor.ts";
import { runCommand } from "../../server/worker/run-command.ts";

/** Feeds `chunks` through a new redactor; returns what it showed after each, and in all. */
function stream(values: readonly string[], chunks: readonly string[]) {
  const redactor: Redactor = createRedactor(values);
  const shown = chunks.map((c) => redactor.push(c));
  const rest = redactor.end();
  return { shown, text: shown.join("") + rest };
}

/** Leftmost-longest replacement over the whole text at once, written the obvious way. */
function reference(values: readonly string[], text: string): string {
  const patterns = redactionPatterns(values);
  let out = "";
  let i = 0;
  while (i < text.length) {
    const match = patterns.find((p) => text.startsWith(p, i));
    if (match != null) {
      out += REDACTED;
      i += match.length;
    } else {
      out += text[i];
      i += 1;
    }
  }
  return out;
}

/** A small seeded generator, so that a failure can be replayed. */
function random(seed: number) {
  let state = seed;
  return (n: number) => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return state % n;
  };
}

describe("createRedactor", () => {
  it("replaces every occurrence of a value in one chunk", () => {
    expect(stream(["hunter22"], ["a hunter22 b hunter22\n"]).text).toBe("a [secret] b [secret]\n");
  });

  it("replaces a value split at any point across two chunks, and shows no part of it early", () => {
    const value = "s3cr3t-value";
    for (let cut = 1; cut < value.length; cut++) {
      const { shown, text } = stream(
        [value],
        [`x=${value.slice(0, cut)}`, `${value.slice(cut)}\n`],
      );
      expect(text).toBe("x=[secret]\n");
      expect(shown[0]).toBe("x=");
    }
  });

  it("replaces a value spread over many one-character chunks", () => {
    const value = "abcdefgh";
    expect(stream([value], [..."<abcdefgh>"]).text).toBe("<[secret]>");
  });

  it("shows text that cannot start a value at once, and holds back only a possible start", () => {
    const redactor = createRedactor(["token-1234"]);
    expect(redactor.push("building… done\n")).toBe("building… done\n");
    expect(redactor.push("tok")).toBe("");
    expect(redactor.push("en-12")).toBe("");
    // Not the value after all: what was held back is shown with what follows.
    expect(redactor.push("x\n")).toBe("token-12x\n");
    expect(redactor.end()).toBe("");
  });

  it("holds back fewer characters than the longest value", () => {
    const value = "v".repeat(100);
    const redactor = createRedactor([value]);
    expect(redactor.push(`start ${"v".repeat(250)}`)).toBe(`start [secret][secret]`);
    expect(redactor.end()).toBe("v".repeat(50));
  });

  it("shows a held-back start at the end of the stream when the value never completed", () => {
    expect(stream(["password1"], ["pass", "wor"]).text).toBe("passwor");
  });

  it("prefers the longest value where several start at one place", () => {
    expect(stream(["abcd", "abcdefgh"], ["xx abcd", "efgh abcd yy"]).text).toBe(
      "xx [secret] [secret] yy",
    );
  });

  it("redacts each line of a multi-line value, and the whole value in one piece", () => {
    const key = "-----BEGIN KEY-----\nQUJDREVGR0hJSg==\n-----END KEY-----";
    expect(stream([key], [`${key}\n`]).text).toBe("[secret]\n");
    expect(stream([key], ["line: QUJDREVGR0hJSg==\n"]).text).toBe("line: [secret]\n");
  });

  it("passes output through untouched without values, and ignores values shorter than 4", () => {
    expect(stream([], ["a", "b"]).text).toBe("ab");
    expect(stream(["abc"], ["abc abc"]).text).toBe("abc abc");
  });

  it("agrees with a whole-text reference for random values, texts and chunk boundaries", () => {
    const next = random(20_260_601);
    const alphabet = "ab\n";
    const word = (min: number, max: number) =>
      Array.from({ length: min + next(max - min + 1) }, () => alphabet[next(alphabet.length)]).join(
        "",
      );
    for (let round = 0; round < 2000; round++) {
      const values = Array.from({ length: 1 + next(3) }, () => word(4, 9));
      const text = word(0, 60);
      const chunks: string[] = [];
      for (let i = 0; i < text.length;) {
        const size = 1 + next(8);
        chunks.push(text.slice(i, i + size));
        i += size;
      }
      const expected = reference(values, text);
      expect({ values, chunks, text: stream(values, chunks).text }).toEqual({
        values,
        chunks,
        text: expected,
      });
    }
  });

  it("redacts 8 MiB of output in 64 KiB chunks with a 64 KiB value quickly", () => {
    const value = randomBytes(48 * 1024).toString("base64");
    const filler = "x".repeat(64 * 1024 - 20);
    const redactor = createRedactor([value]);
    const started = performance.now();
    let out = "";
    for (let i = 0; i < 128; i++) {
      out += redactor.push(i % 16 === 0 ? `${filler}${value.slice(0, 20)}` : filler);
      if (i % 16 === 0) out += redactor.push(value.slice(20));
    }
    out += redactor.end();
    const elapsed = performance.now() - started;
    expect(out.split(REDACTED)).toHaveLength(9);
    expect(out).not.toContain(value.slice(0, 20));
    expect(elapsed).toBeLessThan(5000);
  });
});

describe("runCommand with values to redact", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskweb-redact-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("redacts a value split across stdout writes while stderr writes come between", async () => {
    const value = `v-${randomBytes(12).toString("hex")}`;
    const live: string[] = [];
    const result = await runCommand({
      command: [
        "sh",
        "-c",
        [
          'printf "out=%s" "$(printf %s "$V" | cut -c1-9)"',
          "sleep 0.2",
          'printf "err=%s\\n" "$V" >&2',
          "sleep 0.2",
          'printf "%s\\n" "$(printf %s "$V" | cut -c10-)"',
        ].join("; "),
      ],
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", V: value },
      cwd: dir,
      timeoutMs: 10_000,
      onOutput: (chunk) => live.push(chunk),
      redact: [value],
    });
    expect(result.exitCode).toBe(0);
    // The half value on stdout is held back while stderr's line is shown; then the rest
    // arrives and the whole value becomes [secret].
    expect(result.log).toBe("out=err=[secret]\n[secret]\n");
    expect(result.log).not.toContain(value.slice(0, 9));
    expect(result.log).not.toContain(value.slice(9));
    expect(live.join("")).toBe(result.log);
  });
});
