/**
 * A spinner for work whose length is unknown (waiting for a follow to be accepted, for a
 * migration, for a task group). It draws on standard error only when that is a terminal and
 * the output is not `--json`, so pipes and scripts see nothing but the result.
 * @module
 */

/** A line that turns while work goes on. */
export interface Spinner {
  /** Replaces the text next to the spinner. */
  update(text: string): void;
  /** Removes the spinner; `line`, when given, is printed in its place and kept. */
  stop(line?: string): void;
}

/** Options for {@link createSpinner}. */
export interface SpinnerOptions {
  /** Where to draw. @defaultValue process.stderr */
  readonly stream?: NodeJS.WriteStream;
  /** Draw at all; false gives a spinner that does nothing. @defaultValue stream.isTTY */
  readonly enabled?: boolean;
  /** Time between frames. @defaultValue 100 ms */
  readonly intervalMs?: number;
}

const FRAMES = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/** Starts a spinner showing `text`. */
export function createSpinner(text: string, options: SpinnerOptions = {}): Spinner {
  const stream = options.stream ?? process.stderr;
  const enabled = options.enabled ?? stream.isTTY === true;
  if (!enabled) {
    return { update() {}, stop() {} };
  }
  let current = text;
  let frame = 0;
  const draw = () => {
    stream.write(`\r\x1b[2K${FRAMES[frame % FRAMES.length]} ${current}`);
    frame += 1;
  };
  draw();
  const timer = setInterval(draw, options.intervalMs ?? 100);
  // A spinner never keeps the process alive.
  timer.unref();
  return {
    update(next) {
      current = next;
    },
    stop(line) {
      clearInterval(timer);
      stream.write(`\r\x1b[2K${line != null ? `${line}\n` : ""}`);
    },
  };
}
