// jsonld ships no type declarations; taskweb uses only compact().
declare module "jsonld" {
  interface JsonLdOptions {
    documentLoader?: unknown;
  }
  const jsonld: {
    compact(
      input: unknown,
      context: unknown,
      options?: JsonLdOptions,
    ): Promise<Record<string, unknown>>;
  };
  export default jsonld;
}
