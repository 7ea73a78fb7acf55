// One linter for the whole tree; type-aware rules catch the promise bugs that kill servers.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  {
    ignores: [
      "node_modules/**",
      ".data/**",
      ".scratch/**",
      "bin/**",
      "test-artifacts/**",
      "bench/results/**",
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ["**/*.ts"],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/await-thenable": "error",
      "@typescript-eslint/consistent-type-imports": "error",
      "@typescript-eslint/no-unused-vars": [
        "error",
        { argsIgnorePattern: "^_", varsIgnorePattern: "^_" },
      ],
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            {
              group: ["express", "bullmq", "kysely", "pg", "ioredis"],
              message: "only where allowed",
            },
          ],
        },
      ],
    },
  },
  {
    // The wire format knows no server.
    files: ["server/**/*.ts", "test/**/*.ts", "bench/**/*.ts", "conformance/**/*.ts"],
    rules: { "no-restricted-imports": "off" },
  },
);
