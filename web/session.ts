/**
 * Who this browser is: the identity (user id, name, photo) and the conversation each
 * requested group placed it in, kept in localStorage, so that closing the tab or the
 * browser keeps the user; "Sign out" forgets both.
 */
export interface ChatSession {
  userId: string;
  name: string;
  photoUrl: string | null;
  /** The conversation asked for (`?group=`), and the one the join placed the user in (it or a `~k`). */
  group: string;
  conversation: string;
}

export interface Identity {
  userId: string;
  name: string;
  photoUrl: string | null;
}

const IDENTITY = 'shardchat.identity';
const CONVERSATIONS = 'shardchat.conversations';

function read<T>(key: string): T | undefined {
  try {
    return (JSON.parse(localStorage.getItem(key) ?? 'null') as T | null) ?? undefined;
  } catch {
    return undefined;
  }
}

export function loadIdentity(): Identity | undefined {
  const i = read<Identity>(IDENTITY);
  return i && typeof i.userId === 'string' && typeof i.name === 'string'
    ? { userId: i.userId, name: i.name, photoUrl: typeof i.photoUrl === 'string' ? i.photoUrl : null }
    : undefined;
}

/** The session for `group`: the identity and the conversation it was placed in, when both are known. */
export function loadSession(group: string): ChatSession | undefined {
  const id = loadIdentity();
  const conversation = read<Record<string, string>>(CONVERSATIONS)?.[group];
  return id && typeof conversation === 'string' ? { ...id, group, conversation } : undefined;
}

export function saveSession(s: ChatSession): void {
  localStorage.setItem(IDENTITY, JSON.stringify({ userId: s.userId, name: s.name, photoUrl: s.photoUrl }));
  const conversations = read<Record<string, string>>(CONVERSATIONS) ?? {};
  conversations[s.group] = s.conversation;
  localStorage.setItem(CONVERSATIONS, JSON.stringify(conversations));
}

export function clearSession(): void {
  localStorage.removeItem(IDENTITY);
  localStorage.removeItem(CONVERSATIONS);
}

/** The conversation this page is for: `?group=` or the demo conversation, cafe. */
export function requestedGroup(): string {
  const g = new URLSearchParams(location.search).get('group');
  return g && /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/.test(g) ? g : 'cafe';
}
