// The served file (npm run build): the test hook is gone and the snippet still runs.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';

import { BUILT, run } from './load.mjs';

test('the build drops the test hook and keeps window.DNI', () => {
  assert.ok(existsSync(BUILT), 'build first: npm run build');
  assert.ok(!readFileSync(BUILT, 'utf8').includes('DNI_TEST'));
  const [window, helpers] = run(BUILT);
  assert.equal(helpers, null);
  assert.deepEqual(Object.keys(window), ['DNI']);
  assert.deepEqual(Object.keys(window.DNI), ['rescan', 'numbers', 'onSwap', 'consent', 'optOut']);
  assert.equal(window.DNI.numbers().length, 0);
});

test('the source hands its helpers to the test hook', () => {
  const [window, helpers] = run();
  assert.deepEqual(Object.keys(window), ['DNI']);
  assert.equal(typeof helpers.rewrite, 'function');
});
