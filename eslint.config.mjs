// ESLint for the website snippet and its Node unit tests (scripts/check-snippet runs it).
// The snippet is one classic browser script held to ES2017 syntax, the baseline the build's
// `terser --ecma 2017` assumes; the rules below add the house style's snippet rules.
import js from '@eslint/js';
import globals from 'globals';

export default [
  { ignores: ['dni/static/**', 'node_modules/**', '.venv/**'] },
  js.configs.recommended,
  {
    files: ['static/snippet/*.js'],
    languageOptions: {
      ecmaVersion: 2017,
      sourceType: 'script',
      globals: globals.browser,
    },
    rules: {
      'no-console': 'error',
      'no-alert': 'error',
      'no-debugger': 'error',
      'no-eval': 'error',
      'no-implied-eval': 'error',
      'no-new-func': 'error',
      'no-extend-native': 'error',
      'no-implicit-globals': 'error',
      'no-var': 'error',
      'prefer-const': 'error',
      eqeqeq: 'error',
      'no-shadow': ['error', { builtinGlobals: false }],
      'no-unused-vars': ['error', { caughtErrors: 'none' }],
      'no-restricted-properties': [
        'error',
        { property: 'innerHTML', message: 'Swap text nodes, never innerHTML.' },
        { property: 'outerHTML', message: 'Swap text nodes, never outerHTML.' },
        { property: 'insertAdjacentHTML', message: 'Swap text nodes, never markup.' },
        { object: 'document', property: 'write', message: 'Never write markup into the page.' },
      ],
      'no-restricted-syntax': [
        'error',
        {
          selector: 'MemberExpression[property.name="prototype"]',
          message: 'No prototype patching: the page owns its built-ins.',
        },
      ],
    },
  },
  {
    files: ['static/snippet/test/**/*.mjs', 'eslint.config.mjs'],
    languageOptions: {
      ecmaVersion: 'latest',
      sourceType: 'module',
      globals: globals.node,
    },
    rules: {
      'no-var': 'error',
      'prefer-const': 'error',
      eqeqeq: 'error',
    },
  },
];
