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

/** Whether a character code is a tchar. */
export function isTchar(code: number): boolean {
  return TCHAR[code] === 1;
}

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
