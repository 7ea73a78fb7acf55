/**
 * Logging for the command line: human-readable lines by default, JSON lines with
 * `LOG_FORMAT=json`. Fedify logs through the same library, under its own category.
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";
import {
  configure,
  getConsoleSink,
  getJsonLinesFormatter,
  getTextFormatter,
  type LogLevel,
} from "@logtape/logtape";

/** Sets up logging once for a CLI process. */
export async function setUpLogging(options: {
  level?: string | undefined;
  format?: string | undefined;
}): Promise<void> {
  const levels: LogLevel[] = ["trace", "debug", "info", "warning", "error", "fatal"];
  const level = (levels.includes(options.level as LogLevel) ? options.level : "info") as LogLevel;
  const formatter = options.format === "json" ? getJsonLinesFormatter() : getTextFormatter();
  await configure({
    reset: true,
    contextLocalStorage: new AsyncLocalStorage(),
    sinks: { console: getConsoleSink({ formatter }) },
    loggers: [
      { category: ["taskweb"], lowestLevel: level, sinks: ["console"] },
      { category: ["fedify"], lowestLevel: "warning", sinks: ["console"] },
      // Fedify logs every request it hands on to taskweb's own routes as a 404 warning.
      { category: ["fedify", "federation", "http"], lowestLevel: "error", sinks: ["console"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["console"] },
    ],
  });
}
