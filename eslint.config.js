// One linter for the boring parts: TypeScript-aware rules, no focused/skipped tests committed, and
// the dependency rules of docs' layout (see ARCHITECTURE "Layout and the rules that keep it readable"):
//   cli/, functions/, jobs/  thin entry shells: import shared/ only, never one another;
//   shared/                  never an entry folder nor infra/;
//   shared/handlers, shared/services  no cloud SDK (only adapters and the wiring talk to clouds);
//   infra/                   the Pulumi program: shared/ contracts only.
// Static imports and re-exports are checked by `no-restricted-imports`; dynamic `import()` and
// `import('x').T` type queries by `no-restricted-syntax` selectors built from the same lists.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Selectors every file gets (a later block's `no-restricted-syntax` replaces, so each repeats them). */
const baseSyntax = [
  { selector: "CallExpression[callee.object.name=/^(describe|it|test)$/][callee.property.name='only']", message: 'no focused tests' },
  {
    selector: "Property[key.name='err'] > CallExpression[callee.name='errorMessage']",
    message: 'log the Error object (`{ err }`: stack and cause reach Cloud Logging and Error Reporting), not only its message',
  },
];

/** A repository folder reached by a relative import: one or more `../`, then the folder. */
const folder = (name) => ({ regex: `^(\\.\\./)+${name}(/|$)`, re: `^(\\.\\.\\x2F)+${name}(\\x2F|$)` });

/** Cloud SDKs: only shared/adapters/** and shared/wiring/** (and the entry shells) may import them. */
const cloudSdks = [
  { regex: '^@google-cloud/', re: '^@google-cloud\\x2F', name: '@google-cloud/*' },
  { regex: '^@opensearch-project/', re: '^@opensearch-project\\x2F', name: '@opensearch-project/*' },
  { regex: '^@lancedb/', re: '^@lancedb\\x2F', name: '@lancedb/*' },
  { regex: '^google-gax(/|$)', re: '^google-gax(\\x2F|$)', name: 'google-gax' },
];

/**
 * `no-restricted-imports` + `no-restricted-syntax` for `files`, forbidding each `{ regex, re, message }`.
 * `regex` is the import-string pattern; `re` the same for esquery (which cannot hold a `/`).
 */
function boundary(files, forbidden) {
  const dynamic = forbidden.flatMap(({ re, message }) => [
    { selector: `ImportExpression[source.value=/${re}/]`, message },
    { selector: `TSImportType[source.value=/${re}/]`, message },
  ]);
  return {
    files,
    rules: {
      'no-restricted-imports': ['error', { patterns: forbidden.map(({ regex, message }) => ({ regex, message })) }],
      'no-restricted-syntax': ['error', ...baseSyntax, ...dynamic],
    },
  };
}

const entry = (name, who) => ({
  ...folder(name),
  message: `${who} must not import ${name}/: entry shells import shared/ only (composition roots live in shared/wiring/)`,
});
const sdk = (who) =>
  cloudSdks.map(({ regex, re, name }) => ({
    regex,
    re,
    message: `${who} must not import a cloud SDK (${name}): take a port as an argument; only shared/adapters/ and shared/wiring/ use SDKs`,
  }));
const sharedForbids = ['cli', 'jobs', 'functions', 'infra'].map((name) => ({
  ...folder(name),
  message: `shared/ must not import ${name}/: dependencies point from entry shells and infra/ to shared/, never back`,
}));

export default tseslint.config(
  { ignores: ['.prof/**', 'node_modules/**', '.imgsearch/**', 'bucket/**', 'coverage/**', '.deploy/**', '.stryker-tmp/**', 'reports/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        process: 'readonly',
        console: 'readonly',
        Buffer: 'readonly',
        URL: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        setInterval: 'readonly',
        clearInterval: 'readonly',
      },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'error',
      'no-restricted-syntax': ['error', ...baseSyntax],
    },
  },
  boundary(['cli/**/*.ts'], [entry('jobs', 'cli/'), entry('functions', 'cli/')]),
  boundary(['jobs/**/*.ts'], [entry('cli', 'jobs/'), entry('functions', 'jobs/')]),
  boundary(['functions/**/*.ts'], [entry('cli', 'functions/'), entry('jobs', 'functions/')]),
  boundary(['shared/**/*.ts'], sharedForbids),
  // Later blocks replace a rule's options for the files they match: these repeat shared/'s list.
  boundary(['shared/handlers/**/*.ts', 'shared/services/**/*.ts'], [...sharedForbids, ...sdk('shared/handlers and shared/services')]),
  boundary(
    ['infra/**/*.ts'],
    ['cli', 'jobs', 'functions'].map((name) => ({
      ...folder(name),
      message: `infra/ must not import ${name}/: the Pulumi program imports shared/ contracts only`,
    })),
  ),
  {
    // Fake servers in tests speak loosely typed JSON.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off', '@typescript-eslint/no-unused-expressions': 'off' },
  },
  {
    files: ['web/**/*.js'],
    // The browser APIs the page's modules use.
    languageOptions: {
      globals: Object.fromEntries(
        [
          ...['document', 'window', 'fetch', 'FormData', 'Node', 'performance', 'requestAnimationFrame', 'URLSearchParams'],
          ...['createImageBitmap', 'XMLHttpRequest', 'EventSource', 'history', 'location'],
        ].map((name) => [name, 'readonly']),
      ),
    },
  },
);
