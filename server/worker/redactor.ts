/**
 * Replaces secret values in a stream of output with `[secret]`, also when a value arrives
 * split across chunks: the end of a chunk that could be the start of a value is held back
 * (at most the longest value's length minus one characters, and usually nothing) until the
 * next chunk shows whether it is one.
 * @module
 */

/** What a redacted value is replaced with. */
export const REDACTED = "[secret]";

/**
 * Patterns shorter than this are not redacted on their own: a line of a multi-line value
 * is only redacted when it is at least this long.
 */
export const MIN_REDACTED_LENGTH = 4;

/** A streaming redactor. */
export interface Redactor {
  /** Redacts a chunk; returns what may be shown now (perhaps less than was given). */
  push(chunk: string): string;
  /** Returns what was held back, redacted. Call once, at the end of the stream. */
  end(): string;
}

/**
 * The strings to redact for `values`: each value, and each line of a multi-line value (a
 * program that prints a key file line by line prints no whole value), longest first.
 */
export function redactionPatterns(values: readonly string[]): string[] {
  const patterns = new Set<string>();
  for (const value of values) {
    if (value.length >= MIN_REDACTED_LENGTH) patterns.add(value);
    for (const line of value.split(/\r?\n/)) {
      if (line.trim().length >= MIN_REDACTED_LENGTH) patterns.add(line);
    }
  }
  return [...patterns].sort((a, b) => b.length - a.length);
}

/**
 * For a pattern, the KMP failure function: `fail[i]` is the length of the longest proper
 * prefix of `pattern.slice(0, i + 1)` that is also its suffix.
 */
function failureFunction(pattern: string): Int32Array {
  const fail = new Int32Array(pattern.length);
  let k = 0;
  for (let i = 1; i < pattern.length; i++) {
    while (k > 0 && pattern[i] !== pattern[k]) k = fail[k - 1] ?? 0;
    if (pattern[i] === pattern[k]) k++;
    fail[i] = k;
  }
  return fail;
}

/**
 * The longest suffix of `text.slice(from)` that is a proper prefix of `pattern`, by length.
 * Only the last `pattern.length - 1` characters can start one.
 */
function pendingPrefixLength(text: string, from: number, pattern: string, fail: Int32Array) {
  let k = 0;
  for (let i = Math.max(from, text.length - (pattern.length - 1)); i < text.length; i++) {
    while (k > 0 && text[i] !== pattern[k]) k = fail[k - 1] ?? 0;
    if (text[i] === pattern[k]) k++;
    if (k === pattern.length) k = fail[k - 1] ?? 0;
  }
  return k;
}

/** Creates a redactor for `values` (see {@link redactionPatterns}). */
export function createRedactor(values: readonly string[]): Redactor {
  const patterns = redactionPatterns(values).map((p) => ({ text: p, fail: failureFunction(p) }));
  let held = "";

  /** Where the held-back tail of `text` starts: the earliest start of a possible value. */
  function holdFrom(text: string, from: number): number {
    let start = text.length;
    for (const p of patterns) {
      const k = pendingPrefixLength(text, from, p.text, p.fail);
      if (k > 0) start = Math.min(start, text.length - k);
    }
    return start;
  }

  /**
   * Finds whole occurrences in `text` from left to right: each call returns the earliest one
   * at or after `from`, the longest where several start there. Each pattern's next
   * occurrence is remembered, so that a value printed many times costs one scan per pattern.
   */
  function matcher(text: string) {
    /** Per pattern: its next occurrence found so far, -1 when there is none left. */
    const next = patterns.map(() => -2);
    return (from: number): { at: number; length: number } | undefined => {
      let best: { at: number; length: number } | undefined;
      for (let i = 0; i < patterns.length; i++) {
        const pattern = patterns[i]?.text ?? "";
        let at = next[i] ?? -1;
        if (at !== -1 && at < from) {
          at = text.indexOf(pattern, from);
          next[i] = at;
        }
        // Patterns are longest first: at an equal start, the first found is the longest.
        if (at >= 0 && (best == null || at < best.at)) best = { at, length: pattern.length };
      }
      return best;
    };
  }

  function redact(text: string, final: boolean): string {
    let out = "";
    let position = 0;
    let hold = final ? text.length : holdFrom(text, 0);
    const nextMatch = matcher(text);
    for (;;) {
      const match = nextMatch(position);
      // A match that starts in the held-back tail might still grow into a longer value.
      if (match == null || match.at >= hold) break;
      out += text.slice(position, match.at) + REDACTED;
      position = match.at + match.length;
      if (position > hold) hold = final ? text.length : holdFrom(text, position);
    }
    held = text.slice(hold);
    return out + text.slice(position, hold);
  }

  return {
    push(chunk) {
      if (patterns.length === 0) return chunk;
      return redact(held + chunk, false);
    },
    end() {
      if (patterns.length === 0) return "";
      const rest = redact(held, true);
      held = "";
      return rest;
    },
  };
}
