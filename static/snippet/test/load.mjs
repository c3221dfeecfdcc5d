// Runs the snippet in a fresh V8 context with no page around it: no <script data-site>, so it
// starts nothing, and it hands its DOM-free functions to DNI_TEST (a block the build removes).
import { readFileSync } from 'node:fs';
import vm from 'node:vm';

export const SOURCE = new URL('../dni.js', import.meta.url);
export const BUILT = new URL('../../../dni/static/dni.min.js', import.meta.url);

/** Run `file` as the browser would, on a page at `href`; returns [window, helpers or null]. */
export function run(file = SOURCE, href = 'https://shop.example.com.cn/') {
  let helpers = null;
  const window = {};
  const context = vm.createContext({
    window,
    document: {},
    location: new URL(href),
    URL,
    DNI_TEST: (given) => {
      helpers = given;
    },
  });
  vm.runInContext(readFileSync(file, 'utf8'), context, { filename: file.pathname });
  return [window, helpers];
}

/** The snippet's helpers, with `leased` ({target, number, extension}, E.164) as the numbers. */
export function withNumbers(...leased) {
  const helpers = run()[1];
  helpers.lease(leased.map((n) => ({ extension: null, ...n })));
  return helpers;
}
