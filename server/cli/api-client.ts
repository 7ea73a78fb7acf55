/**
 * The CLI's client for a cluster's REST API.
 * @module
 */

/** Where the API is and how to authenticate. */
export interface ApiTarget {
  readonly url: string;
  readonly token: string;
}

/** The API answered with an error; the message is the cluster's. */
export class ApiRequestError extends Error {
  override readonly name = "ApiRequestError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

/** Calls the API and returns the parsed JSON body; throws {@link ApiRequestError}. */
export async function apiRequest(
  target: ApiTarget,
  method: string,
  path: string,
  body?: unknown,
): Promise<unknown> {
  let response: Response;
  try {
    response = await fetch(new URL(path, target.url), {
      method,
      headers: {
        authorization: `Bearer ${target.token}`,
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  } catch (error) {
    throw new ApiRequestError(0, "Unreachable", `Cannot reach ${target.url}: ${String(error)}`);
  }
  const text = await response.text();
  const json: unknown = text === "" ? {} : JSON.parse(text);
  if (!response.ok) {
    const e = json as {
      code?: string;
      message?: string;
      details?: { problems?: { field: string; message: string }[] };
    };
    const problems = e.details?.problems?.map((p) => `\n  ${p.field}: ${p.message}`).join("") ?? "";
    throw new ApiRequestError(
      response.status,
      e.code ?? "Error",
      `${e.message ?? response.statusText}${problems}`,
      e.details,
    );
  }
  return json;
}
