/**
 * The open conversation's messages: confirmed ones in msgId order with day dividers,
 * one sender's consecutive messages grouped, a "New messages" marker before the first
 * unread one, older pages loaded as the user scrolls up; then this user's messages that
 * are still on their way (sending, or failed with a retry button).
 */
import type { Message, Outgoing, User } from '../client/index.js';
import type { Conversation } from './conversation.js';
import { avatar, type Profiles } from './profiles.js';

/** Consecutive messages of one sender closer than this share one header. */
const GROUP_GAP_MS = 5 * 60_000;
/** Older messages load when the list is scrolled this close to its top. */
const LOAD_OLDER_PX = 150;

export class MessagesView {
  private readonly list: HTMLOListElement;
  private readonly pending = new Map<string, HTMLLIElement>();
  private conv: Conversation | undefined;
  /** The newest confirmed message rendered (grouping and dividers follow it). */
  private tail: Message | undefined;
  private loadingOlder = false;
  /** The msgId the "New messages" marker stands before, while this conversation is open. */
  private newFrom: number | undefined;
  /** When the conversation was opened, how far it had been read then, and whether it had been opened before. */
  private openedAt = 0;
  private readAtOpen = 0;
  private openedBefore = false;

  constructor(
    private readonly me: string,
    private readonly profiles: Profiles,
    private readonly onRetry: (clientMsgId: string) => void,
    /** Reads the page before the first loaded message; resolves with what it added. */
    private readonly loadOlder: (conv: Conversation) => Promise<unknown>,
  ) {
    this.list = document.getElementById('messages') as HTMLOListElement;
    profiles.onLoaded((u) => this.refreshUser(u));
    this.list.addEventListener('scroll', () => this.maybeLoadOlder(), { passive: true });
  }

  /** Shows `conv` from scratch; the marker goes before its first unread message. */
  show(conv: Conversation): void {
    this.conv = conv;
    this.pending.clear();
    this.openedAt = Date.now();
    this.readAtOpen = conv.lastRead;
    this.openedBefore = conv.opened;
    this.newFrom = conv.opened ? conv.messages.find((m) => this.unreadAtOpen(m))?.msgId : undefined;
    this.renderAll();
    const marker = this.list.querySelector<HTMLElement>('.new-marker');
    if (marker) this.list.scrollTop = Math.max(0, marker.offsetTop - this.list.offsetTop - 40);
    else this.scrollToBottom();
    this.maybeLoadOlder();
  }

  /** An older page was added to the open conversation: render it above, keeping the view still. */
  olderAdded(): void {
    const fromBottom = this.list.scrollHeight - this.list.scrollTop;
    this.renderAll();
    this.list.scrollTop = this.list.scrollHeight - fromBottom;
    this.maybeLoadOlder();
  }

  /** A delivered message of the open conversation (already in the model). */
  addMessage(m: Message): void {
    const stick = this.nearBottom();
    if (m.clientMsgId) {
      this.pending.get(m.clientMsgId)?.remove();
      this.pending.delete(m.clientMsgId);
    }
    const conv = this.conv;
    if (!conv) return;
    if (this.tail && m.msgId < this.tail.msgId) {
      // Filled in behind the newest shown (a gap repaired): render again in order.
      this.olderAdded();
      return;
    }
    const firstPending = this.list.querySelector('li[data-status]');
    // The history that arrives after opening (a reload) can hold the first unread message.
    const marked = this.newFrom === undefined && this.openedBefore && this.unreadAtOpen(m);
    if (marked) {
      this.newFrom = m.msgId;
      this.list.insertBefore(note('new-marker', 'New messages'), firstPending);
    }
    for (const li of this.renderMessage(m, this.tail, !marked)) this.list.insertBefore(li, firstPending);
    this.tail = m;
    this.profiles.want(m.userId);
    if (stick || m.userId === this.me) this.scrollToBottom();
  }

  /** A message of this user's that is not stored yet (or failed). */
  updateOutgoing(o: Outgoing): void {
    if (this.list.querySelector(`li[data-msg-id][data-client-msg-id="${CSS.escape(o.clientMsgId)}"]`)) return;
    let li = this.pending.get(o.clientMsgId);
    if (!li) {
      li = this.bubble(this.me, o.contents, Date.now(), false);
      li.dataset.clientMsgId = o.clientMsgId;
      this.pending.set(o.clientMsgId, li);
      this.list.append(li);
      this.scrollToBottom();
    }
    li.dataset.status = o.state;
    const note = li.querySelector('.status-note') as HTMLElement;
    note.replaceChildren();
    if (o.state === 'pending') note.textContent = 'sending…';
    else if (o.state === 'sent') note.textContent = 'sent';
    else {
      note.textContent = `not sent${o.error ? ` (${o.error.message})` : ''}`;
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'retry ghost';
      b.textContent = 'Retry';
      b.setAttribute('aria-label', 'Retry sending this message');
      b.addEventListener('click', () => this.onRetry(o.clientMsgId));
      note.append(b);
    }
  }

  /** Posted by someone else before the conversation was opened, and not read then. */
  private unreadAtOpen(m: Message): boolean {
    return m.msgId > this.readAtOpen && m.userId !== this.me && m.ts < this.openedAt;
  }

  /** Whether the newest message is in view (the user can be taken to have read it). */
  atBottom(): boolean {
    return this.nearBottom();
  }

  private renderAll(): void {
    const conv = this.conv;
    const kept = [...this.list.querySelectorAll<HTMLLIElement>('li[data-status]')].filter((li) =>
      this.pending.has(li.dataset.clientMsgId ?? ''),
    );
    const items: HTMLLIElement[] = [];
    if (conv?.reachedStart && conv.messages.length > 0)
      items.push(note('start', 'This is the beginning of the conversation.'));
    else if (conv && conv.messages.length > 0) items.push(note('older', 'Scroll up for older messages'));
    let prev: Message | undefined;
    for (const m of conv?.messages ?? []) {
      const marked = m.msgId === this.newFrom;
      if (marked) items.push(note('new-marker', 'New messages'));
      items.push(...this.renderMessage(m, prev, !marked));
      prev = m;
    }
    this.tail = conv?.last;
    this.list.replaceChildren(...items, ...kept);
  }

  /** A message's row, after a day divider when it starts a new day. */
  private renderMessage(m: Message, prev: Message | undefined, mayGroup: boolean): HTMLLIElement[] {
    const out: HTMLLIElement[] = [];
    const newDay = !prev || dayOf(prev.ts) !== dayOf(m.ts);
    if (newDay) out.push(note('day', dayLabel(m.ts)));
    const grouped = mayGroup && !newDay && prev?.userId === m.userId && m.ts - (prev?.ts ?? 0) < GROUP_GAP_MS;
    const li = this.bubble(m.userId, m.contents, m.ts, grouped);
    li.dataset.msgId = String(m.msgId);
    if (m.clientMsgId) li.dataset.clientMsgId = m.clientMsgId;
    out.push(li);
    return out;
  }

  private bubble(userId: string, contents: string, ts: number, grouped: boolean): HTMLLIElement {
    const u = this.profiles.known(userId);
    const li = document.createElement('li');
    li.className = `msg${userId === this.me ? ' mine' : ''}${grouped ? ' grouped' : ''}`;
    li.dataset.user = userId;
    const bubble = document.createElement('div');
    bubble.className = 'bubble';
    const meta = document.createElement('div');
    meta.className = 'meta';
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = u?.name ?? shortId(userId);
    const time = document.createElement('time');
    time.dateTime = new Date(ts).toISOString();
    time.textContent = new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    const status = document.createElement('span');
    status.className = 'status-note';
    meta.append(name, time, status);
    const text = document.createElement('div');
    text.className = 'text';
    text.append(...linkified(contents));
    bubble.append(meta, text);
    li.append(avatar(u, userId), bubble);
    return li;
  }

  private maybeLoadOlder(): void {
    const conv = this.conv;
    if (!conv || conv.reachedStart || this.loadingOlder || conv.messages.length === 0) return;
    if (this.list.scrollTop > LOAD_OLDER_PX) return;
    this.loadingOlder = true;
    this.list.setAttribute('aria-busy', 'true');
    void this.loadOlder(conv).finally(() => {
      this.loadingOlder = false;
      this.list.removeAttribute('aria-busy');
      // Still at the top (or nothing to scroll yet): the next page.
      if (conv === this.conv) this.maybeLoadOlder();
    });
  }

  private refreshUser(u: User): void {
    for (const li of this.list.querySelectorAll<HTMLLIElement>(`li[data-user="${CSS.escape(u.userId)}"]`)) {
      const name = li.querySelector('.name');
      if (name) name.textContent = u.name;
      li.querySelector('.avatar')?.replaceWith(avatar(u, u.userId));
    }
  }

  private nearBottom(): boolean {
    return this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 80;
  }

  private scrollToBottom(): void {
    this.list.scrollTop = this.list.scrollHeight;
  }
}

/** A divider row (day, new messages, start of the conversation). */
function note(kind: string, text: string): HTMLLIElement {
  const li = document.createElement('li');
  li.className = `divider ${kind}`;
  const span = document.createElement('span');
  span.textContent = text;
  li.append(span);
  return li;
}

function dayOf(ts: number): string {
  return new Date(ts).toDateString();
}

function dayLabel(ts: number): string {
  const d = new Date(ts);
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (d.toDateString() === today.toDateString()) return 'Today';
  if (d.toDateString() === yesterday.toDateString()) return 'Yesterday';
  return d.toLocaleDateString([], {
    weekday: 'long',
    day: 'numeric',
    month: 'long',
    ...(d.getFullYear() === today.getFullYear() ? {} : { year: 'numeric' }),
  });
}

const URL_IN_TEXT = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]}]/gi;

/**
 * A message's text as nodes: http(s) URLs become links (opening a new tab, with no
 * opener and no referrer), everything else stays text. Nothing is parsed as HTML.
 */
export function linkified(contents: string): Node[] {
  const out: Node[] = [];
  let at = 0;
  for (const m of contents.matchAll(URL_IN_TEXT)) {
    const start = m.index ?? 0;
    if (start > at) out.push(document.createTextNode(contents.slice(at, start)));
    const a = document.createElement('a');
    a.href = m[0];
    a.textContent = m[0];
    a.target = '_blank';
    a.rel = 'noopener noreferrer nofollow';
    out.push(a);
    at = start + m[0].length;
  }
  if (at < contents.length) out.push(document.createTextNode(contents.slice(at)));
  return out;
}

export function shortId(userId: string): string {
  return userId.length > 12 ? `${userId.slice(0, 8)}…` : userId;
}
