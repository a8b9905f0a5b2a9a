/**
 * The browser chat (seed: TalkJS "shard a group chat"): a form for name, email and
 * picture on the first visit, then the page of the user's conversations (chat-page.ts),
 * with the one asked for (`?group=`, the demo conversation `cafe` by default) open.
 */
import { ChatApi, randomId, type ShardChatError } from '../client/index.js';
import { ChatPage } from './chat-page.js';
import { type Identity, loadIdentity, loadSession, requestedGroup, saveSession } from './session.js';
import { toast } from './toasts.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

function main(): void {
  const group = requestedGroup();
  const id = loadIdentity();
  if (id) void signedIn(id, group);
  else ask(group);
}

/** A known identity: a fresh token, the page, and the group asked for (joined first if new here). */
async function signedIn(id: Identity, group: string, given?: ChatApi): Promise<void> {
  const api = given ?? new ChatApi({ baseUrl: '' });
  if (!given) {
    try {
      // Local mode issues tokens for any id; a fresh one on every load never expires mid-visit.
      api.token = await api.devToken(id.userId);
    } catch (err) {
      toast(`Could not sign in again: ${describe(err as ShardChatError)}`);
      return;
    }
  }
  const page = new ChatPage(api, id, describe);
  const saved = loadSession(group);
  if (saved) {
    page.select(group, false);
    return;
  }
  try {
    page.joined(group, await api.join(group, id.userId));
  } catch (err) {
    toast(`Could not join ${group}: ${describe(err as ShardChatError)}`);
    $('chat').hidden = false;
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
      const id: Identity = { userId, name, photoUrl: photoUrl || null };
      saveSession({ ...id, group, conversation });
      dialog.close();
      await signedIn(id, group, api);
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
