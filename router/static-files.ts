/**
 * The browser web UI's static files, served by the router itself in local mode
 * (`router.webDir`). Every regular file under webDir is read into memory once, at
 * start, with its content type, a strong ETag and its cache policy; requests look
 * files up in that map only, so no request can reach a file outside webDir.
 *
 *   GET|HEAD /  and  /index.html   webDir/index.html
 *   GET|HEAD /app/<relative path>  webDir/<relative path>
 *
 * Only these paths are answered here; everything else goes to the shards.
 */
import { createHash } from 'node:crypto';
import { type Dirent, readdirSync, readFileSync, statSync } from 'node:fs';
import { STATUS_CODES } from 'node:http';
import path from 'node:path';
import { pathOf } from '../common/shard-function.js';
import type { ClientConnection } from './client-connection.js';
import { errorResponse, type RouterError } from './errors.js';
import { clientRequestId } from './request-head.js';
import { headerValue, type ParsedRequest } from './request-parser.js';

export const MAX_FILES = 500;
export const MAX_TOTAL_BYTES = 20 * 1024 * 1024;

export const INDEX_CSP =
  "default-src 'self'; img-src * data:; connect-src 'self' ws: wss:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.woff2': 'font/woff2',
};
const DEFAULT_CONTENT_TYPE = 'application/octet-stream';

const INDEX = 'index.html';
const APP_PREFIX = '/app/';
const ALLOW = 'GET, HEAD';

/** Why the router refuses to start with this webDir. */
export class StaticFilesError extends Error {
  override name = 'StaticFilesError';
}

interface StaticFile {
  body: Buffer;
  etag: string;
  /** Headers of a 200 answer, as [name, value, ...], without date and x-request-id. */
  headers: string[];
  /** Headers of a 304 answer. */
  notModified: string[];
}

export function contentTypeOf(file: string): string {
  return CONTENT_TYPES[path.extname(file).toLowerCase()] ?? DEFAULT_CONTENT_TYPE;
}

function entryFor(file: string, body: Buffer): StaticFile {
  const etag = `"${createHash('sha1').update(body).digest('base64url')}"`;
  const isIndex = file === INDEX;
  const common = [
    'etag',
    etag,
    'cache-control',
    isIndex ? 'no-cache' : 'public, max-age=3600',
    'x-content-type-options',
    'nosniff',
  ];
  if (isIndex) common.push('content-security-policy', INDEX_CSP);
  return {
    body,
    etag,
    headers: ['content-type', contentTypeOf(file), 'content-length', String(body.length), ...common],
    notModified: common,
  };
}

/** The RFC 9110 If-None-Match test (weak comparison): true when the client's copy is current. */
function matchesIfNoneMatch(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  for (const raw of header.split(',')) {
    let tag = raw.trim();
    if (tag === '*') return true;
    if (tag.startsWith('W/')) tag = tag.slice(2);
    if (tag === etag) return true;
  }
  return false;
}

/**
 * The file a request path names, as a key of the map: undefined when the path is not
 * one of ours (it goes to the shards), null when it is ours but names no acceptable
 * file (`..`, backslashes, NUL, bad escapes, empty segments).
 */
export function fileKeyOf(reqPath: string): string | null | undefined {
  if (reqPath === '/' || reqPath === '/index.html') return INDEX;
  if (!reqPath.startsWith(APP_PREFIX)) return undefined;
  const raw = reqPath.slice(APP_PREFIX.length);
  let rel: string;
  try {
    rel = decodeURIComponent(raw);
  } catch {
    return null;
  }
  if (rel === '' || rel.includes('\\') || rel.includes('\0')) return null;
  for (const seg of rel.split('/')) if (seg === '' || seg === '.' || seg === '..') return null;
  return rel;
}

export class StaticFiles {
  private constructor(
    readonly dir: string,
    private readonly files: Map<string, StaticFile>,
    readonly totalBytes: number,
  ) {}

  get count(): number {
    return this.files.size;
  }

  get hasIndex(): boolean {
    return this.files.has(INDEX);
  }

  /**
   * Reads every regular file under `webDir` (recursively; symbolic links and other
   * special files are skipped). Throws StaticFilesError when webDir is not a readable
   * directory or holds more than MAX_FILES files or MAX_TOTAL_BYTES bytes.
   */
  static load(webDir: string, limits = { maxFiles: MAX_FILES, maxBytes: MAX_TOTAL_BYTES }): StaticFiles {
    const root = path.resolve(webDir);
    let st: ReturnType<typeof statSync>;
    try {
      st = statSync(root);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new StaticFilesError(
        code === 'ENOENT'
          ? `router.webDir ${webDir} does not exist (ENOENT): build the web UI or fix the path`
          : `router.webDir ${webDir}: cannot read it (${code ?? (err as Error).message})`,
      );
    }
    if (!st.isDirectory()) throw new StaticFilesError(`router.webDir ${webDir}: not a directory`);
    const files = new Map<string, StaticFile>();
    let total = 0;
    const walk = (dir: string, prefix: string) => {
      let entries: Dirent[];
      try {
        entries = readdirSync(dir, { withFileTypes: true });
      } catch (err) {
        throw new StaticFilesError(`router.webDir ${webDir}: cannot read ${dir}: ${(err as Error).message}`);
      }
      entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (const e of entries) {
        const full = path.join(dir, e.name);
        const key = prefix + e.name;
        if (e.isDirectory()) {
          walk(full, `${key}/`);
          continue;
        }
        if (!e.isFile()) continue;
        if (files.size >= limits.maxFiles) {
          throw new StaticFilesError(
            `router.webDir ${webDir}: more than ${limits.maxFiles} files; the router serves a small web UI only`,
          );
        }
        let body: Buffer;
        try {
          const size = statSync(full).size;
          if (total + size > limits.maxBytes) throw tooLarge(webDir, limits.maxBytes);
          body = readFileSync(full);
        } catch (err) {
          if (err instanceof StaticFilesError) throw err;
          throw new StaticFilesError(
            `router.webDir ${webDir}: cannot read ${key}: ${(err as Error).message}`,
          );
        }
        total += body.length;
        if (total > limits.maxBytes) throw tooLarge(webDir, limits.maxBytes);
        files.set(key, entryFor(key, body));
      }
    };
    walk(root, '');
    return new StaticFiles(root, files, total);
  }

  /**
   * Answers the request when its path is one of ours and returns the status sent;
   * undefined when the request is not for a static file (route it to a shard).
   */
  handle(conn: ClientConnection, req: ParsedRequest): number | undefined {
    const key = fileKeyOf(pathOf(req.target));
    if (key === undefined) return undefined;
    const requestId = clientRequestId(req);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      const e: RouterError = {
        status: 405,
        code: 'method_not_allowed',
        message: `${req.method} is not allowed here; use ${ALLOW}`,
      };
      const { headers, body } = errorResponse(e, requestId);
      headers.push('allow', ALLOW);
      return this.send(conn, 405, headers, body);
    }
    const file = key === null ? undefined : this.files.get(key);
    if (!file) {
      conn.respondError({ status: 404, code: 'not_found', message: 'no such file' }, requestId);
      return 404;
    }
    if (matchesIfNoneMatch(headerValue(req, 'if-none-match'), file.etag)) {
      return this.send(conn, 304, [...file.notModified, 'date', new Date().toUTCString()], undefined);
    }
    const headers = [...file.headers, 'date', new Date().toUTCString(), 'x-request-id', requestId];
    return this.send(conn, 200, headers, req.method === 'HEAD' ? undefined : file.body);
  }

  private send(conn: ClientConnection, status: number, headers: string[], body: Buffer | undefined): number {
    // Framing 'length': the head carries content-length (or, for 304, no body at all),
    // so the connection stays open for the next request.
    conn.respondHead(status, STATUS_CODES[status] ?? '', headers, status === 304 ? 'none' : 'length');
    if (body) conn.respondBody(body);
    conn.respondEnd();
    conn.flush();
    return status;
  }
}

function tooLarge(webDir: string, maxBytes: number): StaticFilesError {
  return new StaticFilesError(
    `router.webDir ${webDir}: more than ${maxBytes / (1024 * 1024)} MiB of files; the router serves a small web UI only`,
  );
}
