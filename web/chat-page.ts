/**
 * The signed-in page: every conversation of the user (those this browser joined, and
 * those the server lists, `GET /users/{u}/groups`, kept current by the inbox's
 * `joined` and `left` events: joined on another device shows up here), followed over one
 * InboxConnection (the user's inbox on its session host; each conversation's own
 * WebSocket while the inbox is down), one of them open. Events flow one way: the
 * connection feeds the Conversation models, the views render from them.
 */
import {
  type ChatApi,
  InboxConnection,
  type InboxStatus,
  type Message,
  type ShardChatError,
} from '../client/index.js';
import { parseSubId } from '../common/protocol.js';
import { Conversation, PAGE_SIZE } from './conversation.js';
import { ConversationList } from './conversation-list.js';
import { MembersView } from './members-view.js';
import { MessagesView } from './messages-view.js';
import { OpenForm } from './open-form.js';
import { avatar, Profiles } from './profiles.js';
import {
  clearSession,
  forgetConversation,
  type Identity,
  loadLastRead,
  savedConversations,
  saveLastRead,
  saveSession,
} from './session.js';
import { toast } from './toasts.js';
import { TypingView } from './typing-view.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

/** Errors the reconnect banner already explains. */
const QUIET_WHILE_RECONNECTING = new Set(['network', 'timeout', 'shard_unavailable', 'closed']);

export class ChatPage {
  /** By the group asked for, and by the conversation id the server uses. */
  private readonly byGroup = new Map<string, Conversation>();
  private readonly byId = new Map<string, Conversation>();
  private open: Conversation | undefined;
  private route = '';
  private readonly conn: InboxConnection;
  private readonly profiles: Profiles;
  private readonly messages: MessagesView;
  private readonly list: ConversationList;
  private readonly members: MembersView;
  private readonly typing: TypingView;

  constructor(
    private readonly api: ChatApi,
    private readonly me: Identity,
    private readonly describe: (err: ShardChatError) => string,
  ) {
    this.profiles = new Profiles(api);
    this.profiles.set({ userId: me.userId, name: me.name, photoUrl: me.photoUrl });
    for (const { group, conversation } of savedConversations()) this.track(group, conversation);
    this.conn = new InboxConnection({ api, userId: me.userId, groups: [...this.byId.keys()] });
    this.messages = new MessagesView(
      me.userId,
      this.profiles,
      (id) => this.conn.retry(id),
      (c) => this.loadOlder(c),
    );
    this.list = new ConversationList(me.userId, this.profiles, (g) => this.select(g));
    this.members = new MembersView(api, me.userId, this.profiles, (e) => toast(describe(e)));
    this.typing = new TypingView(this.profiles);
    new OpenForm(api, me.userId, (g, c) => this.joined(g, c), describe);
    this.wireConnection();
    this.wireControls();
    this.profiles.onLoaded(() => this.renderList());
    void this.listFromServer();
    const name = document.createElement('span');
    name.textContent = me.name;
    $('me').replaceChildren(avatar(me, me.userId), name);
  }

  /** A conversation the user was just placed in (the entry form, a join by name or by link): remembered and opened. */
  joined(group: string, conversation: string): void {
    saveSession({ ...this.me, group, conversation });
    const known = this.byGroup.get(group);
    if (known && known.id !== conversation) {
      this.byId.delete(known.id);
      this.byGroup.delete(group);
      this.conn.unfollow(known.id);
    }
    if (!this.byGroup.has(group)) {
      this.track(group, conversation);
      this.conn.follow(conversation);
    }
    this.select(group);
  }

  /** Opens a conversation this browser joined; `push` adds it to the browser's history. */
  select(group: string, push = true): void {
    const conv = this.byGroup.get(group);
    if (!conv) return;
    if (push && new URLSearchParams(location.search).get('group') !== group) {
      history.pushState(null, '', `?group=${encodeURIComponent(group)}`);
    }
    this.open = conv;
    $('chat').hidden = false;
    this.typing.clear();
    this.renderHeader();
    this.messages.show(conv);
    if (!conv.opened) {
      conv.opened = true;
      saveLastRead(conv.id, conv.lastRead);
    }
    for (const o of this.conn.unacknowledged(conv.id)) this.messages.updateOutgoing(o);
    this.members.show(conv.id, this.conn.onlineUsers(conv.id));
    this.markReadIfSeen();
    this.renderList();
    $('sidebar').classList.remove('open');
    $('toggle-conversations').setAttribute('aria-expanded', 'false');
    $('composer-input').focus();
  }

  /** Every conversation the server lists for the user (joined anywhere), added to those of this browser. */
  private async listFromServer(): Promise<void> {
    try {
      for (let after: string | undefined; ; ) {
        const page = await this.api.userGroups(this.me.userId, after, 1000);
        for (const g of page.groups) this.adopt(g.groupId);
        if (!page.next) return;
        after = page.next;
      }
    } catch (err) {
      toast(`Could not list your conversations: ${this.describe(err as ShardChatError)}`);
    }
  }

  /** A conversation the user is in (told by the server): remembered and followed, not opened. */
  private adopt(conversation: string): void {
    if (this.byId.has(conversation)) return;
    const group = parseSubId(conversation)?.parent ?? conversation;
    if (this.byGroup.has(group)) return;
    saveSession({ ...this.me, group, conversation });
    this.track(group, conversation);
    this.conn.follow(conversation);
    this.renderList();
  }

  /** The user left a conversation (on any device): it leaves the list, unless it is open here. */
  private dropped(conversation: string): void {
    const conv = this.byId.get(conversation);
    if (!conv || conv === this.open) return;
    this.byId.delete(conversation);
    this.byGroup.delete(conv.group);
    this.conn.unfollow(conversation);
    forgetConversation(conv.group);
    this.renderList();
  }

  has(group: string): boolean {
    return this.byGroup.has(group);
  }

  private track(group: string, conversation: string): Conversation {
    const conv = new Conversation(group, conversation, loadLastRead(conversation));
    this.byGroup.set(group, conv);
    this.byId.set(conversation, conv);
    this.api.getGroup(conversation).then(
      (g) => {
        conv.subject = g.body.subject;
        conv.shard = g.shard;
        if (conv === this.open) this.renderHeader();
        this.renderList();
      },
      (err: ShardChatError) => {
        if (conv === this.open) toast(this.describe(err));
      },
    );
    return conv;
  }

  private wireConnection(): void {
    const conn = this.conn;
    conn.on('hello', (h) => {
      this.route = h.shard === undefined ? 'inbox' : `your inbox on shard ${h.shard}`;
      this.renderHeader();
    });
    conn.on('message', (m) => this.delivered(m));
    conn.on('membership', (g, member) => (member ? this.adopt(g) : this.dropped(g)));
    conn.on('outgoing', (o) => {
      if (o.groupId === this.open?.id) this.messages.updateOutgoing(o);
    });
    conn.on('reset', (g) => {
      const conv = this.byId.get(g);
      if (!conv) return;
      conv.reset();
      if (conv === this.open) this.messages.show(conv);
      this.renderList();
    });
    conn.on('state', (status) => {
      if (status.mode === 'fallback' && this.route !== FALLBACK) {
        this.route = FALLBACK;
        this.renderHeader();
      }
      showState(status);
    });
    conn.on('presence', (g, online) => {
      if (g === this.open?.id) this.members.setOnline(online);
    });
    conn.on('typing', (g, userId) => {
      if (g === this.open?.id) this.typing.start(userId);
    });
    conn.on('error', (err, g) => {
      if (g !== undefined && g !== this.open?.id) return;
      if (conn.state !== 'open' && QUIET_WHILE_RECONNECTING.has(err.code)) return;
      if (err.code === 'network' || err.code === 'timeout') return;
      toast(this.describe(err));
    });
  }

  private delivered(m: Message): void {
    const conv = this.byId.get(m.groupId);
    if (!conv?.add(m)) return;
    this.profiles.want(m.userId);
    if (conv === this.open) {
      this.messages.addMessage(m);
      this.typing.stop(m.userId);
      this.markReadIfSeen();
    }
    this.renderList();
  }

  /** The page before the first loaded message of `conv`, from its shard. */
  private async loadOlder(conv: Conversation): Promise<void> {
    const first = conv.first;
    if (!first) return;
    try {
      const page = await this.api.messagesBefore(conv.id, first.msgId, PAGE_SIZE);
      if (page.length < PAGE_SIZE) conv.reachedStart = true;
      conv.insert(page);
      if (conv === this.open) this.messages.olderAdded();
    } catch (err) {
      toast(`Could not load older messages: ${this.describe(err as ShardChatError)}`);
      // Wait a little before the next attempt (the view asks again while at the top).
      await new Promise((r) => setTimeout(r, 2000));
    }
  }

  /** The open conversation counts as read while the page is visible and its newest message in view. */
  private markReadIfSeen(): void {
    const conv = this.open;
    if (!conv || document.visibilityState !== 'visible' || !this.messages.atBottom()) return;
    if (conv.markRead()) {
      saveLastRead(conv.id, conv.lastRead);
      this.renderList();
    }
  }

  private renderList(): void {
    this.list.render(this.byGroup.values(), this.open);
  }

  private renderHeader(): void {
    const conv = this.open;
    if (!conv) return;
    const subject = conv.subject ?? conv.group;
    $('subject').textContent = subject;
    document.title = `${subject} · shardchat`;
    const where = $('where');
    where.replaceChildren();
    const code = document.createElement('code');
    code.textContent = conv.id;
    where.append('Conversation ', code);
    if (conv.id !== conv.group) where.append(` (a sub-conversation of ${conv.group})`);
    if (conv.shard !== undefined) where.append(` · served by shard ${conv.shard}`);
    if (this.route) where.append(` · ${this.route}`);
    where.append(` · you are ${this.me.name}`);
  }

  private wireControls(): void {
    const form = $<HTMLFormElement>('composer');
    const input = $<HTMLTextAreaElement>('composer-input');
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const text = input.value.trim();
      if (!text || !this.open) return;
      this.conn.send(this.open.id, text);
      input.value = '';
      input.focus();
    });
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        form.requestSubmit();
      }
    });
    input.addEventListener('input', () => {
      if (this.open) this.conn.typing(this.open.id);
    });
    $('messages').addEventListener('scroll', () => this.markReadIfSeen(), { passive: true });
    document.addEventListener('visibilitychange', () => this.markReadIfSeen());
    window.addEventListener('popstate', () => {
      const g = new URLSearchParams(location.search).get('group');
      if (g && this.byGroup.has(g)) this.select(g, false);
    });
    $('sign-out').addEventListener('click', () => {
      this.conn.close();
      clearSession();
      location.reload();
    });
    toggle('toggle-members', 'members');
    toggle('toggle-conversations', 'sidebar');
  }
}

const FALLBACK = 'direct connection (inbox unavailable)';

/** A button that shows and hides a panel on narrow screens. */
function toggle(buttonId: string, panelId: string): void {
  const button = $<HTMLButtonElement>(buttonId);
  button.addEventListener('click', () => {
    const open = $(panelId).classList.toggle('open');
    button.setAttribute('aria-expanded', String(open));
  });
}

/**
 * Connected while the inbox is open, or while the inbox is down but every followed
 * conversation's own socket delivers (fallback). The banner shows when neither does.
 */
function showState(status: InboxStatus): void {
  const { state } = status;
  // The empty-conversation note shows only once connected (not while history loads).
  if (state === 'open') $('chat').dataset.connected = 'true';
  const el = $('state');
  el.dataset.mode = status.mode;
  el.dataset.state = state;
  el.textContent = state === 'open' ? 'connected' : state;
  $('banner').hidden = state !== 'reconnecting';
  if (state === 'closed') toast('Disconnected. Reload the page to connect again.');
}
