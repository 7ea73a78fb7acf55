/**
 * What the `taskweb` command's exit status means, in one place: scripts branch on it, and
 * `taskweb --help` prints the table below.
 * @module
 */
import { ApiRequestError } from "./api-client.ts";

/** The exit statuses of `taskweb`. */
export const EXIT_CODES = {
  /** The command did what was asked. */
  ok: 0,
  /**
   * The command ran and the answer is "no": the cluster refused the request (unknown task,
   * invalid input, conflict, bad token), a watched task group did not complete, a download
   * did not verify, a wait timed out.
   */
  failed: 1,
  /** The command line was wrong: a missing argument, a bad flag value, no token, no file. */
  usage: 2,
  /** The cluster could not be reached or failed (network error, HTTP 5xx): try again later. */
  unavailable: 3,
} as const;

/** The table printed at the end of `taskweb --help`. */
export const EXIT_CODES_HELP = `
Exit status:
  0  done
  1  refused or failed: the cluster said no (unknown task, invalid input, bad token),
     a watched task group did not complete, a download did not verify, a wait timed out
  2  usage: a missing argument, a bad flag value, no token, an unreadable file
  3  unavailable: the cluster could not be reached or answered a server error; try again

Every client command takes --url (env TASKWEB_URL), --token (env TASKWEB_TOKEN) and --json
(one JSON document per line on stdout; on failure {"error": {"code", "message"}}).`;

/** The exit status for an error that ended a command (usage errors are handled earlier). */
export function exitCodeOf(error: unknown): number {
  if (error instanceof ApiRequestError) {
    return error.status === 0 || error.status >= 500 ? EXIT_CODES.unavailable : EXIT_CODES.failed;
  }
  return EXIT_CODES.failed;
}

/** The machine-readable code of an error, for `--json` output. */
export function errorCodeOf(error: unknown): string {
  if (error instanceof ApiRequestError) return error.code;
  return "CommandFailed";
}
