/**
 * The message list: confirmed messages in msgId order, then this user's messages that
 * are still on their way (sending, or failed with a retry button).
 */
import type { Message, Outgoing, User } from '../client/index.js';
import { avatar, type Profiles } from './profiles.js';

export class MessagesView {
  private readonly list: HTMLOListElement;
  private readonly pending = new Map<string, HTMLLIElement>();

  constructor(
    private readonly me: string,
    private readonly profiles: Profiles,
    private readonly onRetry: (clientMsgId: string) => void,
  ) {
    this.list = document.getElementById('messages') as HTMLOListElement;
    profiles.onLoaded((u) => this.refreshUser(u));
  }

  clear(): void {
    this.list.replaceChildren();
    this.pending.clear();
  }

  /** A stored message: appended after the other confirmed ones; replaces its pending copy. */
  addMessage(m: Message): void {
    const stick = this.nearBottom();
    if (m.clientMsgId) {
      this.pending.get(m.clientMsgId)?.remove();
      this.pending.delete(m.clientMsgId);
    }
    const li = this.render(m.userId, m.contents, m.ts);
    li.dataset.msgId = String(m.msgId);
    if (m.clientMsgId) li.dataset.clientMsgId = m.clientMsgId;
    const firstPending = this.list.querySelector('li[data-status]');
    this.list.insertBefore(li, firstPending);
    this.profiles.want(m.userId);
    if (stick || m.userId === this.me) this.scrollToBottom();
  }

  /** A message of this user's that is not stored yet (or failed). */
  updateOutgoing(o: Outgoing): void {
    if (this.list.querySelector(`li[data-msg-id][data-client-msg-id="${CSS.escape(o.clientMsgId)}"]`)) return;
    let li = this.pending.get(o.clientMsgId);
    if (!li) {
      li = this.render(this.me, o.contents, Date.now());
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

  private render(userId: string, contents: string, ts: number): HTMLLIElement {
    const u = this.profiles.known(userId);
    const li = document.createElement('li');
    li.className = userId === this.me ? 'msg mine' : 'msg';
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
    const note = document.createElement('span');
    note.className = 'status-note';
    meta.append(name, time, note);
    const text = document.createElement('div');
    text.className = 'text';
    text.append(...linkified(contents));
    bubble.append(meta, text);
    li.append(avatar(u, userId), bubble);
    return li;
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
