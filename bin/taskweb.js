#!/usr/bin/env node
// Entry point of the `taskweb` command.
import { launch } from "./launch.js";

await launch("taskweb", new URL("../server/cli/main.ts", import.meta.url), 1);
