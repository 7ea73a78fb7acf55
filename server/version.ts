/** The software version, from package.json. */
import pkg from "../package.json" with { type: "json" };

/** taskweb's version. */
export const VERSION: string = pkg.version;
