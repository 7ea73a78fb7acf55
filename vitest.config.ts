import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globals: false,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Each file starts real servers and databases; two cores run two files at a time.
    maxWorkers: 2,
    globalSetup: ["test/support/global-setup.ts"],
  },
});
