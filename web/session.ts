/**
 * Who this browser tab is: kept in sessionStorage, as the seed does, so that a reload
 * keeps the user in the same conversation and another tab can be another user.
 */
export interface ChatSession {
  userId: string;
  name: string;
  /** The conversation asked for (`?group=`), and the one the join placed the user in (it or a `~k`). */
  group: string;
  conversation: string;
}

const KEY = 'shardchat.session';

export function loadSession(group: string): ChatSession | undefined {
  try {
    const s = JSON.parse(sessionStorage.getItem(KEY) ?? 'null') as ChatSession | null;
    return s && s.group === group && s.userId && s.conversation ? s : undefined;
  } catch {
    return undefined;
  }
}

export function saveSession(s: ChatSession): void {
  sessionStorage.setItem(KEY, JSON.stringify(s));
}

export function clearSession(): void {
  sessionStorage.removeItem(KEY);
}

/** The conversation this page is for: `?group=` or the demo conversation, cafe. */
export function requestedGroup(): string {
  const g = new URLSearchParams(location.search).get('group');
  return g && /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/.test(g) ? g : 'cafe';
}
