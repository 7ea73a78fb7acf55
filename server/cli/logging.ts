/**
 * Logging for the command line: human-readable lines by default, JSON lines with
 * `TASKWEB_LOG_FORMAT=json` (or `LOG_FORMAT=json`), one object per line with `@timestamp`,
 * `level`, `logger`, `message` and `properties`. Lines written while an HTTP request is
 * handled carry its `requestId`; lines written while a run executes carry `taskId`, `runId`
 * and `workerId`. Fedify logs through the same library, under its own category.
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";
import {
  configure,
  getConsoleSink,
  getJsonLinesFormatter,
  getTextFormatter,
  type LogLevel,
  type LogRecord,
  type Sink,
} from "@logtape/logtape";

/** Options for {@link setUpLogging}. */
export interface LoggingOptions {
  /** Lowest level shown: trace, debug, info, warning, error, fatal. @defaultValue "info" */
  level?: string | undefined;
  /** `json` for JSON lines; anything else gives text. @defaultValue text */
  format?: string | undefined;
  /** Receives each formatted line instead of the console (tests, embedding). */
  write?: (line: string) => void;
}

/** Sets up logging once for a CLI process. */
export async function setUpLogging(options: LoggingOptions): Promise<void> {
  const levels: LogLevel[] = ["trace", "debug", "info", "warning", "error", "fatal"];
  const level = (levels.includes(options.level as LogLevel) ? options.level : "info") as LogLevel;
  const formatter = options.format === "json" ? getJsonLinesFormatter() : getTextFormatter();
  const write = options.write;
  const sink: Sink =
    write != null ? (record: LogRecord) => write(formatter(record)) : getConsoleSink({ formatter });
  await configure({
    reset: true,
    contextLocalStorage: new AsyncLocalStorage(),
    sinks: { console: sink },
    loggers: [
      { category: ["taskweb"], lowestLevel: level, sinks: ["console"] },
      { category: ["fedify"], lowestLevel: "warning", sinks: ["console"] },
      // Fedify logs every request it hands on to taskweb's own routes as a 404 warning.
      { category: ["fedify", "federation", "http"], lowestLevel: "error", sinks: ["console"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["console"] },
    ],
  });
}
