// --route weights (issue 20, item 7): plain finite decimals only, and a finite sum, so the split
// is what the user wrote (1e308 + 1e308 overflowed to Infinity and sent every request to one arm;
// 0x10 was read as 16).
import { describe, expect, it } from 'vitest';
import { ModelRouter, parseRouteSpec } from '../../src/serve/routing.js';

describe('--route weights', () => {
  it('accepts plain decimals (integers, fractions; 0 turns an arm off)', () => {
    expect(parseRouteSpec('ab=base:3,ft:0.5,off:0').arms).toEqual([
      { model: 'base', weight: 3 },
      { model: 'ft', weight: 0.5 },
      { model: 'off', weight: 0 },
    ]);
    expect(parseRouteSpec('ab=base:.25,ft:1.').arms.map((a) => a.weight)).toEqual([0.25, 1]);
  });

  it('refuses hex, octal and binary literals, exponents, Infinity, NaN, signs and blanks, naming the arm', () => {
    for (const w of [
      '0x10',
      '0o7',
      '0b1',
      '1e3',
      '1e308',
      'Infinity',
      '-Infinity',
      'NaN',
      '+1',
      '-0',
      ' 1',
      '1 ',
      '1_000',
      '',
    ]) {
      expect(() => parseRouteSpec(`ab=base:1,ft:${w}`), JSON.stringify(w)).toThrow(
        new RegExp(`key 'route'.*a decimal number.*got "ft:${w.replace(/[.+*]/g, '\\$&')}"`),
      );
    }
  });

  it('refuses weights whose sum is not finite (each finite alone)', () => {
    const huge = '9'.repeat(308);
    expect(Number(huge)).toBeLessThan(Infinity);
    expect(() => parseRouteSpec(`big=base:${huge},ft:${huge}`)).toThrow(
      /key 'route'.*the weights add up to more than the largest number/,
    );
  });

  it('a digit string past the double range is refused as not finite', () => {
    expect(() => parseRouteSpec(`ab=base:1,ft:${'9'.repeat(400)}`)).toThrow(/key 'route'.*a decimal number/);
  });

  it('large but finite weights still split by weight', () => {
    const r = new ModelRouter(
      'tiny',
      ['ft'],
      [parseRouteSpec(`ab=base:${'1'.padEnd(300, '0')},ft:${'3'.padEnd(300, '0')}`)],
      1,
    );
    const arms = Array.from({ length: 400 }, () => r.resolve('ab')!.model);
    const ft = arms.filter((a) => a === 'ft').length;
    expect(ft).toBeGreaterThan(250);
    expect(ft).toBeLessThan(350);
  });
});
