// Where the visitor cookie goes: the snippet tries each parent domain, shortest first, and keeps
// the first the browser accepts, which is the registrable domain and never a public suffix.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { run } from './load.mjs';

const { cookieDomains } = run()[1];

test('parent domains are tried shortest first, then the host alone', () => {
  assert.deepEqual(
    [...cookieDomains('shop.example.com.cn')],
    ['; domain=com.cn', '; domain=example.com.cn', '; domain=shop.example.com.cn', ''],
  );
  assert.deepEqual([...cookieDomains('example.com')], ['; domain=example.com', '']);
});

test('a single-label host gets a host-only cookie', () => {
  assert.deepEqual([...cookieDomains('localhost')], ['']);
});
