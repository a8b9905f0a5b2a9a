/**
 * Who this browser is: the identity (user id, name, photo), the conversation each
 * requested group placed it in and how far each was read, kept in localStorage, so
 * that closing the tab or the browser keeps the user; "Sign out" forgets all three.
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
const READ = 'shardchat.read';
/** A group id as the API accepts it. */
const GROUP_ID = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;

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

/** Forgets the conversation of a group (the user left it). */
export function forgetConversation(group: string): void {
  const conversations = read<Record<string, string>>(CONVERSATIONS) ?? {};
  delete conversations[group];
  localStorage.setItem(CONVERSATIONS, JSON.stringify(conversations));
}

/** Every conversation this browser joined: the group asked for and the conversation it placed the user in. */
export function savedConversations(): { group: string; conversation: string }[] {
  const all = read<Record<string, unknown>>(CONVERSATIONS) ?? {};
  return Object.entries(all)
    .filter((e): e is [string, string] => typeof e[1] === 'string')
    .map(([group, conversation]) => ({ group, conversation }));
}

/** The highest msgId read in a conversation; undefined when this browser never opened it. */
export function loadLastRead(conversation: string): number | undefined {
  const v = read<Record<string, unknown>>(READ)?.[conversation];
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined;
}

export function saveLastRead(conversation: string, msgId: number): void {
  const all = read<Record<string, number>>(READ) ?? {};
  all[conversation] = msgId;
  localStorage.setItem(READ, JSON.stringify(all));
}

export function clearSession(): void {
  localStorage.removeItem(IDENTITY);
  localStorage.removeItem(CONVERSATIONS);
  localStorage.removeItem(READ);
}

/** A conversation name typed by the user as a group id: lower case, runs of other characters as `-`. */
export function groupIdFor(name: string): string | undefined {
  const id = name
    .trim()
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[-.]+|-+$/g, '')
    .slice(0, 128);
  return GROUP_ID.test(id) ? id : undefined;
}

/** The conversation this page is for: `?group=` or the demo conversation, cafe. */
export function requestedGroup(): string {
  const g = new URLSearchParams(location.search).get('group');
  return g && GROUP_ID.test(g) ? g : 'cafe';
}
