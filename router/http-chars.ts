/**
 * The character classes of HTTP/1.1 heads (RFC 9110 section 5.6.2, 5.5), for the router's
 * two parsers. Heads are decoded as latin1, so every character code is a byte (0-255):
 * a table lookup per character checks a header line in the pass that finds its parts,
 * with no intermediate strings.
 */

/** tchar: the characters of a header name or method. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 48; c <= 57; c++) TCHAR[c] = 1;
for (let c = 65; c <= 90; c++) {
  TCHAR[c] = 1;
  TCHAR[c + 32] = 1;
}

/** Field value characters: tab, space, visible ASCII and obs-text; never NUL, CR, LF or DEL. */
const FIELD_CHAR = new Uint8Array(256);
FIELD_CHAR[9] = 1;
for (let c = 0x20; c <= 0x7e; c++) FIELD_CHAR[c] = 1;
for (let c = 0x80; c <= 0xff; c++) FIELD_CHAR[c] = 1;

/** Whether text[start, end) is a token: one or more tchars. */
export function isToken(text: string, start: number, end: number): boolean {
  if (end <= start) return false;
  for (let i = start; i < end; i++) if (TCHAR[text.charCodeAt(i)] !== 1) return false;
  return true;
}

/** Whether text[start, end) is one or more visible ASCII characters (a request target's). */
export function isVisibleAscii(text: string, start: number, end: number): boolean {
  if (end <= start) return false;
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

/** Strips optional whitespace (spaces and tabs only, RFC 9110 section 5.6.3) from both ends. */
export function trimOws(v: string): string {
  const start = skipOws(v, 0, v.length);
  const end = trimOwsEnd(v, start, v.length);
  return start === 0 && end === v.length ? v : v.slice(start, end);
}

/** Whether text[start, end) is a valid field value (an empty one is). */
export function isFieldValue(text: string, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (FIELD_CHAR[text.charCodeAt(i)] !== 1) return false;
  return true;
}

/** Index of the first character after optional whitespace (spaces and tabs) from `start`. */
export function skipOws(text: string, start: number, end: number): number {
  let i = start;
  while (i < end) {
    const c = text.charCodeAt(i);
    if (c !== 32 && c !== 9) break;
    i++;
  }
  return i;
}

/** Index after the last character before trailing optional whitespace in text[start, end). */
export function trimOwsEnd(text: string, start: number, end: number): number {
  let i = end;
  while (i > start) {
    const c = text.charCodeAt(i - 1);
    if (c !== 32 && c !== 9) break;
    i--;
  }
  return i;
}

/**
 * Whether the token text[start, start + lower.length) equals `lower` (a lower-case name
 * of letters, digits and `-`) ignoring case. Only for text already checked to be tchars:
 * among those, setting bit 0x20 maps exactly the upper-case letters to lower case.
 */
export function tokenIs(text: string, start: number, lower: string): boolean {
  const n = lower.length;
  for (let i = 0; i < n; i++) {
    if ((text.charCodeAt(start + i) | 0x20) !== lower.charCodeAt(i)) return false;
  }
  return true;
}

/**
 * The end of the field name of the header line text[at, end): the index of its colon
 * when a token comes right before it; -1 when the line has no colon after a first
 * character ("malformed header line"); -2 when the name holds a character that is not a
 * tchar, such as a space before the colon ("malformed header name").
 */
export function fieldNameEnd(text: string, at: number, end: number): number {
  let colon = at;
  while (colon < end && TCHAR[text.charCodeAt(colon)] === 1) colon++;
  if (colon > at && colon < end && text.charCodeAt(colon) === 58 /* : */) return colon;
  const first = text.indexOf(':', at);
  return first <= at || first >= end ? -1 : -2;
}

/** The number text[start, end) holds: 1 to 15 decimal digits; -1 for anything else. */
export function decimalOf(text: string, start: number, end: number): number {
  if (end <= start || end - start > 15) return -1;
  let n = 0;
  for (let i = start; i < end; i++) {
    const d = text.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

/** Adds the lower-cased, non-empty tokens of a Connection value text[start, end) to `out`. */
export function addConnectionTokens(out: string[], text: string, start: number, end: number): void {
  // The common values need no splitting (field values hold no CR, so tokenIs applies).
  const n = end - start;
  if (n === 10 && tokenIs(text, start, 'keep-alive')) out.push('keep-alive');
  else if (n === 5 && tokenIs(text, start, 'close')) out.push('close');
  else if (n === 7 && tokenIs(text, start, 'upgrade')) out.push('upgrade');
  else {
    for (const t of text.slice(start, end).toLowerCase().split(',')) {
      const tok = trimOws(t);
      if (tok) out.push(tok);
    }
  }
}
