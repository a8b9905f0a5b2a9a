/**
 * One conversation as the page knows it: its messages (msgId order, each once), how far
 * back they were read from the server, and how far this user has read it. Views render
 * from it; nothing here touches the DOM.
 */
import type { Message } from '../client/index.js';

/** Messages per scroll-back page (`GET /groups/{id}/messages?before=`). */
export const PAGE_SIZE = 50;

export class Conversation {
  /** Confirmed messages, ascending msgId, no duplicates. */
  readonly messages: Message[] = [];
  subject: string | undefined;
  /** The shard that serves it (from `GET /groups/{id}`). */
  shard: number | undefined;
  /** The oldest message is loaded: nothing before `messages[0]`. */
  reachedStart = false;

  /** The highest msgId this user has seen. */
  lastRead: number;
  /** This user opened it before (in this browser): what came since is "new". */
  opened: boolean;

  constructor(
    /** The conversation asked for (the name the user chose). */
    readonly group: string,
    /** The one the join placed the user in: `group` or one of its `~k`. */
    readonly id: string,
    /** The highest msgId read, when it was ever opened. */
    lastRead: number | undefined,
  ) {
    this.lastRead = lastRead ?? 0;
    this.opened = lastRead !== undefined;
  }

  get first(): Message | undefined {
    return this.messages[0];
  }

  get last(): Message | undefined {
    return this.messages[this.messages.length - 1];
  }

  /** Adds a delivered message; false when it is already there. */
  add(m: Message): boolean {
    const last = this.last;
    if (!last || m.msgId > last.msgId) {
      this.messages.push(m);
      if (m.msgId === 1) this.reachedStart = true;
      return true;
    }
    return this.insert([m]).length > 0;
  }

  /** Adds an older page (any order); returns the messages that were new. */
  insert(page: Message[]): Message[] {
    const have = new Set(this.messages.map((m) => m.msgId));
    const fresh = page.filter((m) => !have.has(m.msgId));
    if (fresh.length === 0) return fresh;
    this.messages.push(...fresh);
    this.messages.sort((a, b) => a.msgId - b.msgId);
    if (this.messages[0]?.msgId === 1) this.reachedStart = true;
    return fresh;
  }

  /** The history began again (new epoch): forget it. */
  reset(): void {
    this.messages.length = 0;
    this.reachedStart = false;
    this.lastRead = 0;
  }

  /** Messages of others after `lastRead`, among those loaded. */
  unread(me: string): number {
    let n = 0;
    for (let i = this.messages.length - 1; i >= 0; i--) {
      const m = this.messages[i] as Message;
      if (m.msgId <= this.lastRead) break;
      if (m.userId !== me) n++;
    }
    return n;
  }

  /** Whether more unread messages may exist before the loaded ones. */
  unreadMayBeMore(me: string): boolean {
    return !this.reachedStart && this.unread(me) > 0 && (this.first?.msgId ?? 0) > this.lastRead + 1;
  }

  /** Marks everything loaded as read; true when that changed anything. */
  markRead(): boolean {
    const last = this.last?.msgId ?? 0;
    if (last <= this.lastRead) return false;
    this.lastRead = last;
    return true;
  }
}
