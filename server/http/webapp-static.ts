/**
 * Serves the web app: `/` is its single page, `/ui/` its ES modules and stylesheet from
 * `server/http/ui/`, and `/ui/vendor/` the browser builds of the two libraries it uses
 * (dagre for the graph layout, yaml for reading a graph before it is submitted) straight from
 * `node_modules`. There is no build step: the files are served as they are.
 *
 * The page itself holds no data. Everything it shows comes from `/api/v1` with the token the
 * user signs in with, so these files are public.
 * @module
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import express from "express";

const UI_DIR = join(dirname(fileURLToPath(import.meta.url)), "ui");

/** The folder of a package's file, found the way Node would find the package. */
function packageDir(specifier: string): string {
  return dirname(createRequire(import.meta.url).resolve(specifier));
}

/** Headers every page of the app is served with. */
const SECURITY_HEADERS: Record<string, string> = {
  "Content-Security-Policy":
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
};

/** The router serving the web app's files. */
export function webappStatic(): express.Router {
  const router = express.Router();
  const staticOptions = {
    index: false,
    fallthrough: true,
    setHeaders(res: express.Response) {
      for (const [name, value] of Object.entries(SECURITY_HEADERS)) res.setHeader(name, value);
      res.setHeader("Cache-Control", "no-cache");
    },
  };
  router.get("/", (_req, res) => {
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) res.setHeader(name, value);
    res.setHeader("Cache-Control", "no-cache");
    res.sendFile(join(UI_DIR, "index.html"));
  });
  router.use("/ui/vendor/dagre", express.static(packageDir("@dagrejs/dagre"), staticOptions));
  router.use(
    "/ui/vendor/yaml",
    express.static(join(packageDir("yaml"), "..", "browser", "dist"), staticOptions),
  );
  router.use("/ui", express.static(UI_DIR, staticOptions));
  return router;
}
