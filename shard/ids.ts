/** Identifiers (DESIGN section 4): ids clients choose, and the `~k` ids of sub-conversations. */

/** An id a client chooses: no '~', which is reserved for sub-conversations. */
export const CLIENT_ID = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;
const SUB_ID = /^([A-Za-z0-9_-][A-Za-z0-9._-]{0,127})~([1-9][0-9]{0,5})$/;

export function isClientId(id: string): boolean {
  return CLIENT_ID.test(id);
}

/** A group id as it may appear in a path: a client id or `{clientId}~k`. */
export function isGroupId(id: string): boolean {
  return CLIENT_ID.test(id) || SUB_ID.test(id);
}

/** The parent and k of a sub-conversation id, or undefined. */
export function parseSubId(id: string): { parent: string; k: number } | undefined {
  const m = SUB_ID.exec(id);
  return m ? { parent: m[1] as string, k: Number(m[2]) } : undefined;
}

export function subId(parent: string, k: number): string {
  return `${parent}~${k}`;
}
