#!/usr/bin/env node
// Entry point of the `taskweb-conformance` command.
/* global URL */
import { launch } from "../bin/launch.js";

await launch("taskweb-conformance", new URL("./cli.ts", import.meta.url), 2);
