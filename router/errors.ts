/** JSON error answers the router gives itself (docs/architecture.md section 4: `{error: {code, message}}`). */

export interface RouterError {
  status: number;
  code: string;
  message: string;
  retryAfter?: number;
}

function body(e: RouterError): string {
  return JSON.stringify({ error: { code: e.code, message: e.message } });
}

/** The headers (as [name, value, ...]) and body of an error answer. */
export function errorResponse(
  e: RouterError,
  requestId: string | undefined,
): { headers: string[]; body: Buffer } {
  const text = Buffer.from(body(e));
  const headers = [
    'content-type',
    'application/json; charset=utf-8',
    'content-length',
    String(text.length),
    'cache-control',
    'no-store',
    'date',
    new Date().toUTCString(),
  ];
  if (requestId) headers.push('x-request-id', requestId);
  if (e.retryAfter !== undefined) headers.push('retry-after', String(e.retryAfter));
  return { headers, body: text };
}
