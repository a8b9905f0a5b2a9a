/**
 * The request head the router sends to a shard (router/request-head.ts).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type BuiltHead,
  buildRequestHead,
  clientRequestId,
  type HeadOptions,
} from '../../../router/request-head.js';
import { type ParsedRequest, parseRequestHead } from '../../../router/request-parser.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const HOP_BY_HOP = [
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'expect',
];

function req(requestLine: string, ...headers: string[]): ParsedRequest {
  return parseRequestHead([requestLine, ...headers].join('\r\n'), 100);
}

const OPTS: HeadOptions = {
  shardHeader: '3/8',
  defaultHost: 'shard-3:8080',
  remoteAddress: '10.0.0.7',
  bodyLength: undefined,
  upgrade: false,
};

function build(r: ParsedRequest, o: Partial<HeadOptions> = {}): BuiltHead {
  return buildRequestHead(r, { ...OPTS, ...o });
}

interface Split {
  requestLine: string;
  fields: [string, string][];
}

/** Splits a built head into its request line and [name, value] fields; checks the framing. */
function split(head: string): Split {
  expect(head.endsWith('\r\n\r\n')).toBe(true);
  // Exactly one blank line, at the very end.
  expect(head.indexOf('\r\n\r\n')).toBe(head.length - 4);
  const lines = head.slice(0, -4).split('\r\n');
  for (const line of lines) {
    expect(line).not.toMatch(/[\r\n]/);
  }
  const [requestLine, ...rest] = lines;
  const fields = rest.map((line): [string, string] => {
    const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+): (.*)$/.exec(line);
    expect(m, `malformed line ${JSON.stringify(line)}`).not.toBeNull();
    return [m?.[1] as string, m?.[2] as string];
  });
  return { requestLine: requestLine as string, fields };
}

function values(s: Split, lowerName: string): string[] {
  return s.fields.filter(([n]) => n.toLowerCase() === lowerName).map(([, v]) => v);
}

function one(s: Split, lowerName: string): string {
  const v = values(s, lowerName);
  expect(v, lowerName).toHaveLength(1);
  return v[0] as string;
}

describe('buildRequestHead: framing', () => {
  it('starts with the original method and target and HTTP/1.1, and ends with a single blank line', () => {
    const built = build(req('GET /rooms/7?since=3 HTTP/1.1', 'Host: chat.example'));
    expect(built.head.startsWith('GET /rooms/7?since=3 HTTP/1.1\r\n')).toBe(true);
    expect(split(built.head).requestLine).toBe('GET /rooms/7?since=3 HTTP/1.1');
  });

  it('always sends HTTP/1.1, also for an HTTP/1.0 client', () => {
    const s = split(build(req('POST /m HTTP/1.0', 'Content-Length: 0'), { bodyLength: 0 }).head);
    expect(s.requestLine).toBe('POST /m HTTP/1.1');
  });

  it('keeps absolute-form and asterisk-form targets as sent', () => {
    expect(
      split(build(req('GET http://chat.example/x?y HTTP/1.1', 'Host: chat.example')).head).requestLine,
    ).toBe('GET http://chat.example/x?y HTTP/1.1');
    expect(split(build(req('OPTIONS * HTTP/1.1', 'Host: a')).head).requestLine).toBe('OPTIONS * HTTP/1.1');
  });

  it('passes end-to-end headers through in order, with their original case and duplicates', () => {
    const s = split(
      build(
        req(
          'GET / HTTP/1.1',
          'Accept: text/html',
          'Host: chat.example',
          'Cookie: a=1',
          'X-Custom: x y',
          'cookie: b=2',
          'Authorization: Bearer t',
        ),
      ).head,
    );
    const passed = s.fields.filter(
      ([n]) =>
        !n.toLowerCase().startsWith('x-forwarded-') &&
        !['x-request-id', 'x-shardchat-shard'].includes(n.toLowerCase()),
    );
    expect(passed).toEqual([
      ['Accept', 'text/html'],
      ['Host', 'chat.example'],
      ['Cookie', 'a=1'],
      ['X-Custom', 'x y'],
      ['cookie', 'b=2'],
      ['Authorization', 'Bearer t'],
    ]);
  });

  it('emits the router headers after the client headers', () => {
    const s = split(build(req('GET / HTTP/1.1', 'Host: h', 'Accept: */*'), { bodyLength: 3 }).head);
    expect(s.fields.map(([n]) => n)).toEqual([
      'Host',
      'Accept',
      'x-forwarded-for',
      'x-forwarded-proto',
      'x-forwarded-host',
      'x-request-id',
      'x-shardchat-shard',
      'content-length',
    ]);
  });
});

describe('buildRequestHead: hop-by-hop headers', () => {
  it('drops every hop-by-hop header, whatever its case', () => {
    const r = req(
      'POST /m HTTP/1.1',
      'Host: a',
      'Connection: keep-alive',
      'Keep-Alive: timeout=5',
      'Proxy-Connection: keep-alive',
      'Proxy-Authorization: Basic Zm9vOmJhcg==',
      'Transfer-Encoding: chunked',
      'TE: trailers',
      'Trailer: X-Checksum',
      'UPGRADE: h2c',
      'Expect: 100-continue',
      'X-Kept: yes',
    );
    const s = split(build(r, { bodyLength: 12 }).head);
    for (const h of HOP_BY_HOP) expect(values(s, h), h).toEqual([]);
    expect(one(s, 'x-kept')).toBe('yes');
    expect(one(s, 'content-length')).toBe('12');
  });

  it('drops headers named in Connection (case-insensitively), keeping the others', () => {
    const r = req(
      'GET / HTTP/1.1',
      'Host: a',
      'Connection: X-Hop, x-other',
      'x-hop: 1',
      'X-Other: 2',
      'X-HOP: 3',
      'X-Stay: 4',
    );
    const s = split(build(r).head);
    expect(values(s, 'x-hop')).toEqual([]);
    expect(values(s, 'x-other')).toEqual([]);
    expect(one(s, 'x-stay')).toBe('4');
  });

  it('the client cannot remove the router headers by naming them in Connection', () => {
    const r = req(
      'POST / HTTP/1.1',
      'Host: a',
      'Connection: x-forwarded-for, x-forwarded-proto, x-forwarded-host, x-request-id, x-shardchat-shard, content-length',
      'X-Forwarded-For: 1.1.1.1',
      'X-Request-Id: abc-123',
      'Content-Length: 3',
    );
    const built = build(r, { bodyLength: 3 });
    const s = split(built.head);
    expect(one(s, 'x-forwarded-for')).toBe('1.1.1.1, 10.0.0.7');
    expect(one(s, 'x-forwarded-proto')).toBe('http');
    expect(one(s, 'x-forwarded-host')).toBe('a');
    expect(one(s, 'x-request-id')).toBe('abc-123');
    expect(built.requestId).toBe('abc-123');
    expect(one(s, 'x-shardchat-shard')).toBe('3/8');
    expect(one(s, 'content-length')).toBe('3');
  });

  it('drops client x-shardchat-* headers (any case) and sets its own x-shardchat-shard', () => {
    const r = req(
      'GET / HTTP/1.1',
      'Host: a',
      'X-Shardchat-Shard: 0/1',
      'x-shardchat-internal: yes',
      'X-SHARDCHAT-ADMIN: 1',
      'X-Shardchat: not-prefixed',
    );
    const s = split(build(r, { shardHeader: '5/16' }).head);
    expect(one(s, 'x-shardchat-shard')).toBe('5/16');
    expect(s.fields.find(([n]) => n === 'x-shardchat-shard')).toEqual(['x-shardchat-shard', '5/16']);
    expect(values(s, 'x-shardchat-internal')).toEqual([]);
    expect(values(s, 'x-shardchat-admin')).toEqual([]);
    // Only the prefix `x-shardchat-` is reserved.
    expect(one(s, 'x-shardchat')).toBe('not-prefixed');
  });
});

describe('buildRequestHead: forwarding headers', () => {
  it('sets x-forwarded-for to the peer when the client sent none', () => {
    expect(one(split(build(req('GET / HTTP/1.1', 'Host: a')).head), 'x-forwarded-for')).toBe('10.0.0.7');
  });

  it('appends the peer to an existing x-forwarded-for chain', () => {
    const s = split(
      build(req('GET / HTTP/1.1', 'Host: a', 'X-Forwarded-For: 203.0.113.5, 198.51.100.2')).head,
    );
    expect(one(s, 'x-forwarded-for')).toBe('203.0.113.5, 198.51.100.2, 10.0.0.7');
  });

  it('joins multiple x-forwarded-for headers in order into one', () => {
    const s = split(
      build(
        req(
          'GET / HTTP/1.1',
          'X-Forwarded-For: 1.1.1.1',
          'Host: a',
          'x-forwarded-for: 2.2.2.2, 3.3.3.3',
          'X-FORWARDED-FOR: 4.4.4.4',
        ),
        { remoteAddress: '::ffff:127.0.0.1' },
      ).head,
    );
    expect(one(s, 'x-forwarded-for')).toBe('1.1.1.1, 2.2.2.2, 3.3.3.3, 4.4.4.4, ::ffff:127.0.0.1');
  });

  it('keeps the client x-forwarded-proto (first one), defaulting to http', () => {
    expect(one(split(build(req('GET / HTTP/1.1', 'Host: a')).head), 'x-forwarded-proto')).toBe('http');
    expect(
      one(
        split(build(req('GET / HTTP/1.1', 'Host: a', 'X-Forwarded-Proto: https')).head),
        'x-forwarded-proto',
      ),
    ).toBe('https');
    expect(
      one(
        split(
          build(req('GET / HTTP/1.1', 'Host: a', 'x-forwarded-proto: https', 'X-Forwarded-Proto: http')).head,
        ),
        'x-forwarded-proto',
      ),
    ).toBe('https');
  });

  it('keeps the client x-forwarded-host (first one), defaulting to Host', () => {
    expect(one(split(build(req('GET / HTTP/1.1', 'Host: chat.example:8080')).head), 'x-forwarded-host')).toBe(
      'chat.example:8080',
    );
    expect(
      one(
        split(build(req('GET / HTTP/1.1', 'X-Forwarded-Host: public.example', 'Host: internal')).head),
        'x-forwarded-host',
      ),
    ).toBe('public.example');
    expect(
      one(
        split(build(req('GET / HTTP/1.1', 'Host: h', 'X-Forwarded-Host: one', 'X-Forwarded-Host: two')).head),
        'x-forwarded-host',
      ),
    ).toBe('one');
  });

  it('sends no x-forwarded-host when there is neither Host nor x-forwarded-host', () => {
    const s = split(build(req('GET / HTTP/1.0')).head);
    expect(values(s, 'x-forwarded-host')).toEqual([]);
    expect(values(s, 'host')).toEqual(['shard-3:8080']);
    expect(one(s, 'x-forwarded-for')).toBe('10.0.0.7');
  });
});

describe('buildRequestHead: request id', () => {
  it('keeps a well-formed client x-request-id and returns it', () => {
    for (const id of ['abc', 'A-Z_a.z:0-9', 'x'.repeat(128), '0']) {
      const built = build(req('GET / HTTP/1.1', 'Host: a', `X-Request-Id: ${id}`));
      expect(built.requestId).toBe(id);
      expect(one(split(built.head), 'x-request-id')).toBe(id);
    }
  });

  it('replaces a malformed x-request-id with a fresh UUID', () => {
    for (const id of ['has space', 'x'.repeat(129), '', 'a/b', 'a,b', 'caf\xe9', 'a\tb', '<script>']) {
      const built = build(req('GET / HTTP/1.1', 'Host: a', `X-Request-Id: ${id}`));
      expect(built.requestId, JSON.stringify(id)).toMatch(UUID);
      expect(one(split(built.head), 'x-request-id')).toBe(built.requestId);
    }
  });

  it('generates a UUID when there is none, different each time', () => {
    const a = build(req('GET / HTTP/1.1', 'Host: a'));
    const b = build(req('GET / HTTP/1.1', 'Host: a'));
    expect(a.requestId).toMatch(UUID);
    expect(b.requestId).toMatch(UUID);
    expect(a.requestId).not.toBe(b.requestId);
    expect(one(split(a.head), 'x-request-id')).toBe(a.requestId);
  });

  it('uses the first well-formed x-request-id and sends only one', () => {
    const built = build(
      req(
        'GET / HTTP/1.1',
        'Host: a',
        'X-Request-Id: bad id',
        'x-request-id: good-1',
        'X-Request-Id: good-2',
      ),
    );
    expect(built.requestId).toBe('good-1');
    expect(one(split(built.head), 'x-request-id')).toBe('good-1');
  });
});

describe('buildRequestHead: body length', () => {
  it('sets content-length from bodyLength, replacing the client one', () => {
    const s = split(build(req('POST / HTTP/1.1', 'Host: a', 'Content-Length: 999'), { bodyLength: 42 }).head);
    expect(one(s, 'content-length')).toBe('42');
  });

  it('sets content-length for a decoded chunked body', () => {
    const s = split(
      build(req('POST / HTTP/1.1', 'Host: a', 'Transfer-Encoding: chunked'), { bodyLength: 7 }).head,
    );
    expect(one(s, 'content-length')).toBe('7');
    expect(values(s, 'transfer-encoding')).toEqual([]);
  });

  it('sends content-length: 0 for an empty body', () => {
    expect(
      one(
        split(build(req('POST / HTTP/1.1', 'Host: a', 'Content-Length: 0'), { bodyLength: 0 }).head),
        'content-length',
      ),
    ).toBe('0');
  });

  it('sends no content-length when bodyLength is undefined', () => {
    const s = split(build(req('GET / HTTP/1.1', 'Host: a', 'Content-Length: 5')).head);
    expect(values(s, 'content-length')).toEqual([]);
  });
});

describe('buildRequestHead: upgrade', () => {
  it('sends connection: upgrade and upgrade: websocket exactly once', () => {
    const r = req(
      'GET /ws HTTP/1.1',
      'Host: a',
      'Connection: keep-alive, Upgrade',
      'Upgrade: websocket',
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
      'Sec-WebSocket-Version: 13',
    );
    expect(r.upgrade).toBe('websocket');
    const s = split(build(r, { upgrade: true }).head);
    expect(values(s, 'connection')).toEqual(['upgrade']);
    expect(values(s, 'upgrade')).toEqual(['websocket']);
    expect(values(s, 'keep-alive')).toEqual([]);
    expect(one(s, 'sec-websocket-key')).toBe('dGhlIHNhbXBsZSBub25jZQ==');
    expect(one(s, 'sec-websocket-version')).toBe('13');
    expect(values(s, 'content-length')).toEqual([]);
  });

  it('sends neither connection nor upgrade when not upgrading, even if the client asked', () => {
    const r = req('GET /ws HTTP/1.1', 'Host: a', 'Connection: Upgrade', 'Upgrade: websocket');
    const s = split(build(r).head);
    expect(values(s, 'connection')).toEqual([]);
    expect(values(s, 'upgrade')).toEqual([]);
  });
});

describe('clientRequestId', () => {
  it('returns a well-formed client x-request-id', () => {
    expect(clientRequestId(req('GET / HTTP/1.1', 'Host: a', 'X-REQUEST-ID: req-77'))).toBe('req-77');
    expect(
      clientRequestId(req('GET / HTTP/1.1', 'Host: a', 'x-request-id: bad id', 'X-Request-Id: ok.1')),
    ).toBe('ok.1');
  });

  it('returns a UUID for an absent or malformed id and for no request', () => {
    expect(clientRequestId(undefined)).toMatch(UUID);
    expect(clientRequestId(req('GET / HTTP/1.1', 'Host: a'))).toMatch(UUID);
    expect(clientRequestId(req('GET / HTTP/1.1', 'Host: a', `X-Request-Id: ${'y'.repeat(129)}`))).toMatch(
      UUID,
    );
    expect(clientRequestId(req('GET / HTTP/1.1', 'Host: a', 'X-Request-Id: a b'))).toMatch(UUID);
  });

  it('agrees with buildRequestHead on a client id', () => {
    const r = req('GET / HTTP/1.1', 'Host: a', 'X-Request-Id: !!', 'X-Request-Id: same:id');
    expect(clientRequestId(r)).toBe('same:id');
    expect(build(r).requestId).toBe('same:id');
  });
});

describe('buildRequestHead: properties', () => {
  const tokenChar = fc.constantFrom(
    ..."!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".split(''),
  );
  const visible = fc.constantFrom(
    ...Array.from({ length: 0x7f - 0x21 }, (_, i) => String.fromCharCode(0x21 + i)),
  );
  const name = fc.oneof(
    fc.string({ unit: tokenChar, minLength: 1, maxLength: 12 }),
    fc.constantFrom(
      'Connection',
      'Keep-Alive',
      'TE',
      'Trailer',
      'Expect',
      'Upgrade',
      'Proxy-Authorization',
      'Proxy-Connection',
      'X-Forwarded-For',
      'X-Forwarded-Proto',
      'X-Forwarded-Host',
      'X-Request-Id',
      'X-Shardchat-Shard',
      'x-shardchat-evil',
      'Cookie',
      'Accept',
    ),
  );
  const value = fc.string({ unit: visible, maxLength: 16 });
  const router = new Set([
    'x-forwarded-for',
    'x-forwarded-proto',
    'x-forwarded-host',
    'x-request-id',
    'x-shardchat-shard',
  ]);
  const reserved = new Set([...HOP_BY_HOP, ...router, 'content-length', 'host']);

  it('never leaks hop-by-hop or x-shardchat-* headers and emits each router header once', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(name, value), { maxLength: 20 }),
        fc.option(fc.nat({ max: 1 << 20 }), { nil: undefined }),
        fc.boolean(),
        (pairs, bodyLength, upgrade) => {
          const clean = pairs.filter(
            ([n]) => !['host', 'content-length', 'transfer-encoding'].includes(n.toLowerCase()),
          );
          const text = ['GET /p HTTP/1.1', 'Host: h', ...clean.map(([n, v]) => `${n}: ${v}`)].join('\r\n');
          const r = parseRequestHead(text, 100);
          const built = buildRequestHead(r, {
            shardHeader: '1/2',
            defaultHost: 'shard-1:8080',
            remoteAddress: '127.0.0.1',
            bodyLength,
            upgrade,
          });
          const s = split(built.head);
          expect(s.requestLine).toBe('GET /p HTTP/1.1');
          for (const h of HOP_BY_HOP) {
            const expected =
              upgrade && h === 'connection' ? ['upgrade'] : upgrade && h === 'upgrade' ? ['websocket'] : [];
            expect(values(s, h), h).toEqual(expected);
          }
          for (const h of router) expect(values(s, h), h).toHaveLength(1);
          expect(one(s, 'x-shardchat-shard')).toBe('1/2');
          expect(one(s, 'x-request-id')).toBe(built.requestId);
          expect(values(s, 'content-length')).toEqual(bodyLength === undefined ? [] : [String(bodyLength)]);
          expect(s.fields.filter(([n]) => n.toLowerCase().startsWith('x-shardchat-'))).toEqual([
            ['x-shardchat-shard', '1/2'],
          ]);
          // End-to-end client headers pass in order, unless named in Connection.
          const expectedClient = [['Host', 'h'] as [string, string], ...clean].filter(([n]) => {
            const l = n.toLowerCase();
            return (
              (l === 'host' || !reserved.has(l)) &&
              !l.startsWith('x-shardchat-') &&
              !r.connectionTokens.includes(l)
            );
          });
          expect(s.fields.slice(0, expectedClient.length)).toEqual(expectedClient);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('a request without Host', () => {
  it("gets the shard's address as Host, since the shard speaks HTTP/1.1", () => {
    const built = buildRequestHead(req('GET /groups/a HTTP/1.0'), OPTS);
    const lines = built.head.split('\r\n');
    expect(lines[0]).toBe('GET /groups/a HTTP/1.1');
    expect(lines.filter((l) => l.toLowerCase().startsWith('host:'))).toEqual(['host: shard-3:8080']);
  });

  it("keeps the client's Host when there is one", () => {
    const built = buildRequestHead(req('GET /groups/a HTTP/1.1', 'Host: chat.example'), OPTS);
    const hosts = built.head.split('\r\n').filter((l) => l.toLowerCase().startsWith('host:'));
    expect(hosts).toEqual(['Host: chat.example']);
  });
});
