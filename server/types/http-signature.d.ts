// The Joyent `http-signature` package ships no type declarations, and the published ones
// lack `authorizationHeaderName`, which ActivityPub needs (`Signature:`, not
// `Authorization: Signature`). taskweb uses sign() only.
declare module "http-signature" {
  import type { ClientRequest } from "node:http";
  interface SignOptions {
    key: string;
    keyId: string;
    headers?: string[];
    authorizationHeaderName?: string;
    algorithm?: string;
  }
  const httpSignature: {
    sign(request: ClientRequest, options: SignOptions): boolean;
  };
  export default httpSignature;
}
