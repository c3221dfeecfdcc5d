// The snippet's number matching and rewriting, on plain strings (no browser): what
// tests/test_snippet_formats.py checks in Chromium, one rule at a time and in milliseconds.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { withNumbers } from './load.mjs';

const HOTLINE = { target: '+864008881234', number: '+864001000001' };

/** `text` as the snippet would write it, or `text` itself when it is left alone. */
function swap(helpers, text) {
  const chars = helpers.rewrite(text);
  return chars ? chars.join('') : text;
}

describe('a number keeps the shape it was printed in', () => {
  const helpers = withNumbers(HOTLINE);
  const shapes = {
    '全国热线 400-888-1234': '全国热线 400-100-0001',
    '400 888 1234': '400 100 0001',
    4008881234: '4001000001',
    '+86 400 888 1234': '+86 400 100 0001',
    '(+86) 400-888-1234': '(+86) 400-100-0001',
    '0086-400-888-1234': '0086-400-100-0001',
    '400.888.1234': '400.100.0001',
    '400·888·1234': '400·100·0001',
    '400—888—1234': '400—100—0001',
    '４００－８８８－１２３４': '４００－１００－０００１',
    '＋８６ ４００ ８８８ １２３４': '＋８６ ４００ １００ ０００１',
  };
  for (const [printed, swapped] of Object.entries(shapes)) {
    test(printed, () => assert.equal(swap(helpers, printed), swapped));
  }
});

describe('a number ends where its digit groups end', () => {
  const helpers = withNumbers(HOTLINE);
  const ends = {
    '400-888-1234(9:00-18:00)': '400-100-0001(9:00-18:00)',
    '400-888-1234 8:00-18:00': '400-100-0001 8:00-18:00',
    '400-888-1234、400-888-1234': '400-100-0001、400-100-0001',
    '010-62011365 400-888-1234': '010-62011365 400-100-0001',
    '400-888-1234 021-61234567': '400-100-0001 021-61234567',
  };
  for (const [printed, swapped] of Object.entries(ends)) {
    test(printed, () => assert.equal(swap(helpers, printed), swapped));
  }
});

describe('longer runs and other numbers are left alone', () => {
  const helpers = withNumbers(HOTLINE);
  const alone = [
    '订单号 4008881234567',
    '4008-881-2345',
    '1400-888-1234',
    '400-888-1234 5678',
    '+1 400 888 1234',
    'A4008881234',
    '¥ 4008.00',
    '传真 021-61234567',
  ];
  for (const printed of alone) {
    test(printed, () => assert.equal(helpers.rewrite(printed), null));
  }
});

describe('a trunk prefix is kept and the country code decides where the number starts', () => {
  test('a Beijing landline', () => {
    const helpers = withNumbers({ target: '+861051292956', number: '+861051290001' });
    assert.equal(swap(helpers, '010-51292956'), '010-51290001');
    assert.equal(swap(helpers, '(010) 5129 2956'), '(010) 5129 0001');
    assert.equal(swap(helpers, '（０１０）５１２９２９５６'), '（０１０）５１２９０００１');
    assert.equal(swap(helpers, '+86 10 5129 2956'), '+86 10 5129 0001');
    assert.equal(swap(helpers, '0086 10 5129 2956'), '0086 10 5129 0001');
  });

  test('a London number, with and without the (0)', () => {
    const helpers = withNumbers({ target: '+442079460000', number: '+442079460001' });
    assert.equal(swap(helpers, '020 7946 0000'), '020 7946 0001');
    assert.equal(swap(helpers, '+44 (0)20 7946 0000'), '+44 (0)20 7946 0001');
  });

  test('country codes of one, two and three digits', () => {
    const { matcherFor } = withNumbers();
    const length = (target) => matcherFor({ target, number: target })[1];
    assert.equal(length('+14155550100'), 1);
    assert.equal(length('+74951234567'), 1);
    assert.equal(length('+864008881234'), 2);
    assert.equal(length('+493012345678'), 2);
    assert.equal(length('+35312345678'), 3);
    assert.equal(length('+85223456789'), 3);
  });
});

describe('extensions', () => {
  test("the shop's own extension stays", () => {
    const helpers = withNumbers(HOTLINE);
    assert.equal(swap(helpers, '400-888-1234转8015'), '400-100-0001转8015');
    assert.equal(swap(helpers, '400-888-1234 ext. 22'), '400-100-0001 ext. 22');
    assert.equal(swap(helpers, '400-888-1234-8015'), '400-100-0001-8015');
  });

  test('an extension slot is shown after the number, with 转 in China', () => {
    const helpers = withNumbers({ ...HOTLINE, number: HOTLINE.target, extension: '8000' });
    assert.equal(swap(helpers, '热线 400-888-1234'), '热线 400-888-1234 转 8000');
    const uk = withNumbers({ target: '+442079460000', number: '+442079460000', extension: '12' });
    assert.equal(swap(uk, '020 7946 0000'), '020 7946 0000 ext. 12');
  });

  test("an extension slot cannot stand in for the shop's own extension", () => {
    const helpers = withNumbers({ ...HOTLINE, number: HOTLINE.target, extension: '8000' });
    assert.equal(helpers.rewrite('400-888-1234 转 0'), null);
    // It is still found, so a tel: link and its text can be kept in step.
    assert.equal(helpers.findNumbers('400-888-1234 转 0').length, 1);
  });
});

describe('rewritten text has one entry per original character', () => {
  test('so that a number split over inline elements is written back in place', () => {
    const helpers = withNumbers(HOTLINE);
    const chars = helpers.rewrite('电话 400-888-1234');
    assert.equal(chars.length, '电话 400-888-1234'.length);
    assert.equal(chars.slice(3, 6).join(''), '400');
  });

  test('a longer tracking number grows the last entry', () => {
    const helpers = withNumbers({ target: '+8675586001234', number: '+86755860012345' });
    const chars = helpers.rewrite('0755-8600 1234');
    assert.equal(chars.length, 14);
    assert.equal(chars[13], '45');
  });
});

describe('tel: links', () => {
  test('dial the tracking number in the href’s own shape', () => {
    const { rewriteTel } = withNumbers(HOTLINE);
    assert.equal(rewriteTel('tel:4008881234'), 'tel:4001000001');
    assert.equal(rewriteTel('tel:+86-400-888-1234'), 'tel:+86-400-100-0001');
    assert.equal(rewriteTel('tel:4008881234,,8015'), 'tel:4001000001,,8015');
    assert.equal(rewriteTel('tel:%2B86%20400%20888%201234'), 'tel:+86 400 100 0001');
  });

  test('dial an extension slot after two pauses', () => {
    const { rewriteTel } = withNumbers({ ...HOTLINE, number: HOTLINE.target, extension: '8000' });
    assert.equal(rewriteTel('tel:4008881234'), 'tel:4008881234,,8000');
    // …but not over the shop's own: that link stays as the shop wrote it.
    assert.equal(rewriteTel('tel:4008881234,,8015'), 'tel:4008881234,,8015');
    assert.equal(rewriteTel('tel:4008881234;ext=8015'), 'tel:4008881234;ext=8015');
  });

  test('stay as written when they name another number or cannot be decoded', () => {
    const { rewriteTel } = withNumbers(HOTLINE);
    assert.equal(rewriteTel('tel:02161234567'), 'tel:02161234567');
    assert.equal(rewriteTel('tel:%E0%A4%A'), 'tel:%E0%A4%A');
  });
});

test('full-width text becomes ASCII one character for one', () => {
  const { toAscii, digitsOf } = withNumbers();
  assert.equal(toAscii('（０１０）５１２９－２９５６ 转'), '(010)5129-2956 转');
  assert.equal(digitsOf('+86 (0)10-5129'), '860105129');
});
