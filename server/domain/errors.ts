/**
 * The closed set of errors the REST API reports, each with its HTTP status, in one place.
 * @module
 */

/** Machine-readable API error codes. */
export type ApiErrorCode =
  | "InputError"
  | "AuthenticationFailed"
  | "InsufficientScopes"
  | "ResourceNotFound"
  | "RequestConflict"
  | "PayloadTooLarge"
  | "UnsupportedMediaType"
  | "RemoteUnavailable"
  | "InternalServerError"
  | "ServiceUnavailable";

/** HTTP status of each {@link ApiErrorCode}. */
export const API_ERROR_STATUS: Readonly<Record<ApiErrorCode, number>> = {
  InputError: 400,
  AuthenticationFailed: 401,
  InsufficientScopes: 403,
  ResourceNotFound: 404,
  RequestConflict: 409,
  PayloadTooLarge: 413,
  UnsupportedMediaType: 415,
  RemoteUnavailable: 502,
  InternalServerError: 500,
  /** The cluster lacks configuration the request needs (such as the secrets key). */
  ServiceUnavailable: 503,
};

/** An error meant for an API client: a code, a message saying what to do, and details. */
export class ApiError extends Error {
  override readonly name = "ApiError";
  readonly code: ApiErrorCode;
  readonly details: unknown;
  constructor(code: ApiErrorCode, message: string, details?: unknown, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.details = details;
  }
  /** The HTTP status for this error's code. */
  get status(): number {
    return API_ERROR_STATUS[this.code];
  }
}
