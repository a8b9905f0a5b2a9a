/**
 * Paths that two readers could map to different ids (docs/architecture.md section 1).
 * The router refuses them with 400 before it hashes the key, and the shard refuses them
 * where it reads an id from a path itself, so that both read the same id from the same
 * bytes: never a dot segment (`.`, `..`, also percent-encoded in any case: a URL
 * parser resolves them, a proxy or framework may or may not), an empty segment (`//`:
 * merged by some, an authority to a URL parser at the start of a path), a backslash
 * (a `/` to WHATWG URL parsers), nor an encoded `/` or `\` inside an id (a separator
 * once decoded by a reader that decodes before it splits).
 */

/** Why two readers could read `path` (the raw path, without the query) differently; undefined when they cannot. */
export function pathAmbiguity(path: string): string | undefined {
  const n = path.length;
  let segStart = 0;
  for (let i = 0; i <= n; i++) {
    const c = i < n ? path.charCodeAt(i) : 47;
    if (c === 92 /* \ */) return 'a backslash in the path';
    if (c !== 47 /* / */) continue;
    if (i > 0) {
      const len = i - segStart;
      // An empty segment; a single trailing '/' is not one.
      if (len === 0 && i < n) return 'an empty path segment (//)';
      if (len > 0 && len <= 6 && isDotSegment(path, segStart, i))
        return 'a dot segment (. or ..) in the path';
    }
    segStart = i + 1;
  }
  return undefined;
}

/** Whether path[start, end) is `.` or `..`, each dot raw or as %2e / %2E. */
function isDotSegment(path: string, start: number, end: number): boolean {
  let dots = 0;
  let i = start;
  while (i < end) {
    const c = path.charCodeAt(i);
    if (c === 46 /* . */) {
      i++;
    } else if (
      c === 37 /* % */ &&
      i + 2 < end &&
      path.charCodeAt(i + 1) === 50 /* 2 */ &&
      (path.charCodeAt(i + 2) | 0x20) === 101 /* e */
    ) {
      i += 3;
    } else return false;
    dots++;
  }
  return dots === 1 || dots === 2;
}

/** Why an id as it appears in a path (still percent-encoded) is ambiguous: an encoded `/` or `\`. */
export function idAmbiguity(rawId: string): string | undefined {
  if (rawId.indexOf('%') === -1) return undefined;
  return /%(?:2f|5c)/i.test(rawId) ? 'an encoded / or \\ inside an id' : undefined;
}
