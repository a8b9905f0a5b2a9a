/**
 * The shard's check of JSON body text (shard/api/errors.ts `checkText`): well-formed UTF-8 and
 * UTF-16 pass, malformed bytes are refused instead of being decoded to U+FFFD.
 */
import { describe, expect, it } from 'vitest';
import { checkText } from '../../../../shard/api/errors.js';

const refused = (buf: Uint8Array, label: string): string | undefined => {
  try {
    checkText(buf, label);
    return undefined;
  } catch (err) {
    expect((err as { type?: string }).type).toBe('encoding.invalid_text');
    return (err as Error).message;
  }
};

describe('checkText', () => {
  it('accepts well-formed UTF-8, with or without a BOM, and any label spelling', () => {
    const text = Buffer.from('{"contents":"héllo 💥 \u0000"}');
    for (const label of ['utf-8', 'UTF-8', 'utf8']) expect(refused(text, label)).toBeUndefined();
    expect(refused(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), text]), 'utf-8')).toBeUndefined();
  });

  it('refuses malformed UTF-8: invalid bytes, truncated sequences, overlongs, encoded surrogates', () => {
    for (const bad of [
      [0xc3, 0x28],
      [0xff],
      [0xe2, 0x82],
      [0xc0, 0xaf],
      [0xed, 0xa0, 0x80],
      [0xf4, 0x90, 0x80, 0x80],
    ]) {
      const buf = Buffer.concat([Buffer.from('{"x":"'), Buffer.from(bad), Buffer.from('"}')]);
      expect(refused(buf, 'utf-8'), JSON.stringify(bad)).toMatch(/not valid UTF-8/);
    }
  });

  it('checks UTF-16 in both byte orders, and finds the order of plain utf-16 from its BOM', () => {
    const le = Buffer.from('{"x":"é 💥"}', 'utf16le');
    expect(refused(le, 'utf-16le')).toBeUndefined();
    expect(refused(le, 'utf-16')).toBeUndefined();
    const be = Buffer.from(le).swap16();
    expect(refused(be, 'utf-16be')).toBeUndefined();
    expect(refused(Buffer.concat([Buffer.from([0xfe, 0xff]), be]), 'utf-16')).toBeUndefined();
    const lone = Buffer.from('{"x":"\uD800"}', 'utf16le');
    expect(refused(lone, 'utf-16le')).toMatch(/not valid UTF-16LE/);
    expect(refused(Buffer.from(lone).swap16(), 'utf-16be')).toMatch(/not valid UTF-16BE/);
  });

  it('leaves charsets it cannot check to the parser', () => {
    expect(refused(Buffer.from([0xff, 0xfe, 0xfd]), 'utf-7')).toBeUndefined();
  });
});
