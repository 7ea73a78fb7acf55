/**
 * The JSON Schemas of the taskweb v1 wire format (`protocol/schemas/v1/`), compiled once on
 * first use, and the mapping of their errors to parse failures.
 *
 * @module
 */
import { Ajv2020 } from "ajv/dist/2020.js";
import type { ErrorObject, ValidateFunction } from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import announceSchema from "./schemas/v1/announce.json" with { type: "json" };
import artifactPublishedSchema from "./schemas/v1/artifact-published.json" with { type: "json" };
import artifactSchema from "./schemas/v1/artifact.json" with { type: "json" };
import defsSchema from "./schemas/v1/defs.json" with { type: "json" };
import offerAnswerSchema from "./schemas/v1/offer-answer.json" with { type: "json" };
import offerSchema from "./schemas/v1/offer.json" with { type: "json" };
import taskCompletedSchema from "./schemas/v1/task-completed.json" with { type: "json" };
import taskFailedSchema from "./schemas/v1/task-failed.json" with { type: "json" };
import taskGroupResolvedSchema from "./schemas/v1/task-group-resolved.json" with { type: "json" };
import taskGroupSchema from "./schemas/v1/task-group.json" with { type: "json" };
import taskSchema from "./schemas/v1/task.json" with { type: "json" };
import { fail, ok } from "./result.ts";
import type { ParseFailureCode, ParseResult } from "./result.ts";

/** The base every v1 schema `$id` starts with. */
export const SCHEMA_BASE_URL = "https://taskweb.dev/schemas/v1/";

/** The names of the top-level v1 schemas; each is `protocol/schemas/v1/<name>.json`. */
export const SCHEMA_NAMES = [
  "task",
  "artifact",
  "task-completed",
  "task-failed",
  "artifact-published",
  "task-group",
  "task-group-resolved",
  "offer",
  "offer-answer",
  "announce",
] as const;

/** One of {@link SCHEMA_NAMES}. */
export type SchemaName = (typeof SCHEMA_NAMES)[number];

const SCHEMAS: Readonly<Record<SchemaName, object>> = {
  task: taskSchema,
  artifact: artifactSchema,
  "task-completed": taskCompletedSchema,
  "task-failed": taskFailedSchema,
  "artifact-published": artifactPublishedSchema,
  "task-group": taskGroupSchema,
  "task-group-resolved": taskGroupResolvedSchema,
  offer: offerSchema,
  "offer-answer": offerAnswerSchema,
  announce: announceSchema,
};

/**
 * The `$id` of a v1 schema.
 *
 * @param name - The schema's name.
 * @returns e.g. `https://taskweb.dev/schemas/v1/task.json`.
 */
export function schemaId(name: SchemaName): string {
  return `${SCHEMA_BASE_URL}${name}.json`;
}

/**
 * The v1 schema documents (including the shared `defs.json`), for tools that want to run
 * them through their own validator. They are the same objects this module compiles; do not
 * change them.
 *
 * @returns The schema documents keyed by `$id`.
 */
export function schemaDocuments(): ReadonlyMap<string, object> {
  return new Map<string, object>([
    [`${SCHEMA_BASE_URL}defs.json`, defsSchema],
    ...SCHEMA_NAMES.map((name) => [schemaId(name), SCHEMAS[name]] as const),
  ]);
}

// ajv-formats is CommonJS with `exports.default`; under NodeNext the default import is the
// whole module object, whose `default` is the plugin at runtime as well.
const addFormats = addFormatsModule.default;

let validators: ReadonlyMap<SchemaName, ValidateFunction> | undefined;

function compiled(): ReadonlyMap<SchemaName, ValidateFunction> {
  if (validators === undefined) {
    const ajv = new Ajv2020({
      allErrors: false,
      strict: true,
      // `required` inside `if`/`then`/`not` names properties defined beside them, which this
      // check cannot see.
      strictRequired: false,
      // Subschemas beside a `$ref` rely on the referenced schema's `type`, which this check
      // does not follow.
      strictTypes: false,
      allowUnionTypes: true,
    });
    addFormats(ajv, ["uri", "date-time"]);
    ajv.addSchema(defsSchema);
    for (const name of SCHEMA_NAMES) ajv.addSchema(SCHEMAS[name]);
    const map = new Map<SchemaName, ValidateFunction>();
    for (const name of SCHEMA_NAMES) {
      const validate = ajv.getSchema(schemaId(name));
      if (validate === undefined) throw new Error(`schema ${name} did not compile`);
      map.set(name, validate);
    }
    validators = map;
  }
  return validators;
}

function describe(error: ErrorObject): { code: ParseFailureCode; message: string; path: string } {
  const path = error.instancePath;
  const at = path === "" ? "the document" : path;
  // Errors inside a value that must be a URL or a digest get the specific code, whatever the
  // keyword, so that "id is not a URL" reads the same whether it is a number or a URN.
  if (
    error.schemaPath.includes("/$defs/httpUrl/") ||
    error.schemaPath.includes("/$defs/audience/")
  ) {
    return {
      code: "bad-url",
      message: `${at} must be an absolute http(s) URL without credentials`,
      path,
    };
  }
  if (error.schemaPath.includes("/$defs/sha256/")) {
    return {
      code: "bad-digest",
      message: `${at} must be the SHA-256 of the content as 64 lowercase hex digits`,
      path,
    };
  }
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case "required": {
      const property = String(params["missingProperty"]);
      return {
        code: "schema",
        message: `${at} lacks the required property ${JSON.stringify(property)}; add it`,
        path: `${path}/${property}`,
      };
    }
    case "propertyNames": {
      const name = String(params["propertyName"]);
      return {
        code: "schema",
        message: `${at} has the property ${JSON.stringify(name)}, which aliases a term; use compact taskweb and ActivityStreams terms (compact the document with CONTEXT)`,
        path: `${path}/${name.replaceAll("~", "~0").replaceAll("/", "~1")}`,
      };
    }
    case "const":
      return {
        code: "schema",
        message: `${at} must be ${JSON.stringify(params["allowedValue"])}`,
        path,
      };
    case "enum":
      return {
        code: "schema",
        message: `${at} must be one of ${(params["allowedValues"] as unknown[]).map((value) => JSON.stringify(value)).join(", ")}`,
        path,
      };
    case "format":
      return {
        code: "schema",
        message: `${at} must be a ${String(params["format"])}${params["format"] === "date-time" ? " with a time zone, e.g. 2026-11-23T11:00:00.000Z" : ""}`,
        path,
      };
    case "not":
      // The only other `not` is inside propertyNames, whose error is reported instead.
      if (error.schemaPath.endsWith("/not")) {
        return {
          code: "schema",
          message: `${at} must not carry its own @context; the document's @context applies to it`,
          path,
        };
      }
      break;
  }
  return { code: "schema", message: `${at} ${error.message ?? "is invalid"}`, path };
}

/**
 * Validates a value against one of the v1 schemas.
 *
 * The schemas check shape only; {@link parseActivity} and the other parsers add the context,
 * URL and origin rules that a schema cannot express.
 *
 * @param name - Which schema.
 * @param value - The candidate document.
 * @returns The value unchanged when it matches, or a failure coded `bad-url` (a value that
 *   must be an http(s) URL is not), `bad-digest` (a `sha256` is malformed) or `schema`.
 */
export function validateAgainstSchema(name: SchemaName, value: unknown): ParseResult<unknown> {
  const validate = compiled().get(name);
  if (validate === undefined) throw new Error(`unknown schema ${name}`);
  if (validate(value)) return ok(value);
  // A bad property name yields the inner error first and then the propertyNames one, which
  // is the one that names the property.
  const errors = validate.errors ?? [];
  const first = errors.find((error) => error.keyword === "propertyNames") ?? errors[0];
  if (first === undefined) return fail("schema", `the document does not match ${schemaId(name)}`);
  const { code, message, path } = describe(first);
  return fail(code, message, path);
}
