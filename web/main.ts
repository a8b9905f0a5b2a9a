/**
 * The browser chat (seed: TalkJS "shard a group chat"): a form for name, email and
 * picture on the first visit, then the conversation the join placed the user in, over
 * the client SDK's InboxConnection (the user's inbox on its session host, following
 * this one conversation; the conversation's own WebSocket while the inbox is down).
 */
import {
  ChatApi,
  InboxConnection,
  type InboxStatus,
  randomId,
  type ShardChatError,
} from '../client/index.js';
import { MessagesView, shortId } from './messages-view.js';
import { avatar, Profiles } from './profiles.js';
import {
  type ChatSession,
  clearSession,
  loadIdentity,
  loadSession,
  requestedGroup,
  saveSession,
} from './session.js';
import { toast } from './toasts.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

/** Errors the reconnect banner already explains. */
const QUIET_WHILE_RECONNECTING = new Set(['network', 'timeout', 'shard_unavailable', 'closed']);

function main(): void {
  const group = requestedGroup();
  const session = loadSession(group);
  if (session) void enter(session);
  else if (loadIdentity()) void joinAs(group);
  else ask(group);
}

/** A known identity on a group it has not joined in this browser yet: joins without the form. */
async function joinAs(group: string): Promise<void> {
  const id = loadIdentity();
  if (!id) return;
  const api = new ChatApi({ baseUrl: '' });
  try {
    api.token = await api.devToken(id.userId);
    const conversation = await api.join(group, id.userId);
    const s: ChatSession = { ...id, group, conversation };
    saveSession(s);
    await enter(s, api);
  } catch (err) {
    toast(`Could not join ${group}: ${describe(err as ShardChatError)}`);
  }
}

/** Before the form is filled: whether the group exists (a token for a throwaway id reads it). */
async function checkGroup(group: string): Promise<string | undefined> {
  try {
    const api = new ChatApi({ baseUrl: '' });
    api.token = await api.devToken(randomId());
    await api.getGroup(group);
    return undefined;
  } catch (err) {
    const e = err as ShardChatError;
    return e.status === 404 ? `The conversation ${group} does not exist.` : undefined;
  }
}

/** The entry form: creates the user (random UUID, as the seed does), gets a token and joins. */
function ask(group: string): void {
  const dialog = $<HTMLDialogElement>('entry');
  const form = $<HTMLFormElement>('entry-form');
  const error = $<HTMLParagraphElement>('entry-error');
  const submit = $<HTMLButtonElement>('entry-submit');
  $('entry-group').textContent = group;
  // The form cannot be dismissed: there is nothing to see without a user.
  dialog.addEventListener('cancel', (e) => e.preventDefault());
  dialog.showModal();
  $<HTMLInputElement>('entry-name').focus();
  void checkGroup(group).then((problem) => {
    if (!problem) return;
    showFormError(problem);
    submit.disabled = true;
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    if (!form.reportValidity()) return;
    const data = new FormData(form);
    const name = String(data.get('name') ?? '').trim();
    const email = String(data.get('email') ?? '').trim();
    const photoUrl = String(data.get('photoUrl') ?? '').trim();
    if (!name) {
      showFormError('Please enter your name.');
      return;
    }
    submit.disabled = true;
    submit.textContent = 'Entering…';
    try {
      const userId = randomId();
      const api = new ChatApi({ baseUrl: '' });
      api.token = await api.devToken(userId);
      await api.putUser(userId, { name, email, ...(photoUrl ? { photoUrl } : {}) });
      const conversation = await api.join(group, userId);
      const s: ChatSession = { userId, name, photoUrl: photoUrl || null, group, conversation };
      saveSession(s);
      dialog.close();
      await enter(s, api);
    } catch (err) {
      showFormError(describe(err as ShardChatError));
      submit.disabled = false;
      submit.textContent = 'Enter chat';
    }
  });

  function showFormError(text: string): void {
    error.textContent = text;
    error.hidden = false;
  }
}

async function enter(s: ChatSession, given?: ChatApi): Promise<void> {
  const api = given ?? new ChatApi({ baseUrl: '' });
  if (!given) {
    try {
      // Local mode issues tokens for any id; a fresh one on every load never expires mid-visit.
      api.token = await api.devToken(s.userId);
    } catch (err) {
      toast(`Could not sign in again: ${describe(err as ShardChatError)}`);
      return;
    }
  }
  $('chat').hidden = false;
  const profiles = new Profiles(api);
  profiles.set({ userId: s.userId, name: s.name, photoUrl: s.photoUrl });
  profiles.want(s.userId);
  const where = $('where');
  let groupShard: number | undefined;
  let route = '';
  const describeWhere = () => {
    where.replaceChildren();
    const conv = document.createElement('code');
    conv.textContent = s.conversation;
    where.append('Conversation ', conv);
    if (s.conversation !== s.group) where.append(` (a sub-conversation of ${s.group})`);
    if (groupShard !== undefined) where.append(` · served by shard ${groupShard}`);
    if (route) where.append(` · ${route}`);
    where.append(` · you are ${s.name}`);
  };
  describeWhere();
  api.getGroup(s.conversation).then(
    (g) => {
      $('subject').textContent = g.body.subject;
      document.title = `${g.body.subject} · shardchat`;
      groupShard = g.shard;
      describeWhere();
    },
    (err: ShardChatError) => toast(describe(err)),
  );

  const here = s.conversation;
  const conn = new InboxConnection({ api, userId: s.userId, groups: [here] });
  const view = new MessagesView(s.userId, profiles, (id) => conn.retry(id));
  conn.on('hello', (h) => {
    route = h.shard === undefined ? 'inbox' : `your inbox on shard ${h.shard}`;
    describeWhere();
  });
  conn.on('message', (m) => {
    if (m.groupId !== here) return;
    view.addMessage(m);
    stopTyping(m.userId);
  });
  conn.on('outgoing', (o) => {
    if (o.groupId === here) view.updateOutgoing(o);
  });
  conn.on('reset', (g) => {
    if (g === here) view.clear();
  });
  conn.on('state', (status) => {
    if (status.mode === 'fallback' && route !== 'direct connection (inbox unavailable)') {
      route = 'direct connection (inbox unavailable)';
      describeWhere();
    }
    showState(status);
  });
  conn.on('presence', (g, online) => {
    if (g === here) showOnline(online, profiles, s.userId);
  });
  conn.on('typing', (g, userId) => {
    if (g === here) startTyping(userId, profiles);
  });
  conn.on('error', (err, g) => {
    if (g !== undefined && g !== here) return;
    if (conn.state !== 'open' && QUIET_WHILE_RECONNECTING.has(err.code)) return;
    if (err.code === 'network' || err.code === 'timeout') return;
    toast(describe(err));
  });
  profiles.onLoaded(() => {
    showOnline(conn.onlineUsers(here), profiles, s.userId);
    // A name that arrives after its typing indicator replaces the short id.
    renderTyping();
  });

  const form = $<HTMLFormElement>('composer');
  const input = $<HTMLTextAreaElement>('composer-input');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    conn.send(here, text);
    input.value = '';
    input.focus();
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  input.addEventListener('input', () => conn.typing(here));
  input.focus();

  $('sign-out').addEventListener('click', () => {
    conn.close();
    clearSession();
    location.reload();
  });
  const toggle = $<HTMLButtonElement>('toggle-online');
  toggle.addEventListener('click', () => {
    const open = $('online').classList.toggle('open');
    toggle.setAttribute('aria-expanded', String(open));
  });
}

/**
 * The page depends on one conversation: it is connected while the inbox is open, or
 * while the inbox is down but the conversation's own socket delivers (fallback). The
 * banner shows when neither does.
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

function showOnline(online: string[], profiles: Profiles, me: string): void {
  const list = $('online-list');
  list.replaceChildren();
  const sorted = [...online].sort((a, b) => (a === me ? -1 : b === me ? 1 : a.localeCompare(b)));
  for (const userId of sorted) {
    profiles.want(userId);
    const u = profiles.known(userId);
    const li = document.createElement('li');
    li.dataset.user = userId;
    const name = document.createElement('span');
    name.textContent = (u?.name ?? shortId(userId)) + (userId === me ? ' (you)' : '');
    li.append(avatar(u, userId), name);
    list.append(li);
  }
  $('online-count').textContent = String(online.length);
}

const typingTimers = new Map<string, ReturnType<typeof setTimeout>>();
let typingProfiles: Profiles | undefined;

function startTyping(userId: string, profiles: Profiles): void {
  typingProfiles = profiles;
  profiles.want(userId);
  clearTimeout(typingTimers.get(userId));
  typingTimers.set(
    userId,
    setTimeout(() => stopTyping(userId), 3500),
  );
  renderTyping();
}

function stopTyping(userId: string): void {
  clearTimeout(typingTimers.get(userId));
  if (typingTimers.delete(userId)) renderTyping();
}

function renderTyping(): void {
  const names = [...typingTimers.keys()].map((id) => typingProfiles?.known(id)?.name ?? shortId(id));
  $('typing').textContent =
    names.length === 0
      ? ''
      : names.length === 1
        ? `${names[0]} is typing…`
        : names.length <= 3
          ? `${names.slice(0, -1).join(', ')} and ${names.at(-1)} are typing…`
          : 'Several people are typing…';
}

function describe(err: ShardChatError): string {
  if (!err || typeof err !== 'object') return String(err);
  switch (err.code) {
    case 'network':
      return 'The chat server cannot be reached.';
    case 'group_full':
      return 'This conversation is full.';
    case 'rate_limited':
      return 'You are sending too fast; slow down a little.';
    default:
      return err.message || err.code;
  }
}

main();
