/**
 * "Create or join": a conversation by name. The name becomes the group id (lower case,
 * other characters as `-`); an existing group is joined, a missing one is created with
 * the name as its subject (this user its owner) and then joined.
 */
import type { ChatApi, ShardChatError } from '../client/index.js';
import { groupIdFor } from './session.js';

export class OpenForm {
  constructor(
    api: ChatApi,
    userId: string,
    /** Called with the group and the conversation the join placed the user in. */
    onJoined: (group: string, conversation: string) => void,
    describe: (err: ShardChatError) => string,
  ) {
    const form = document.getElementById('open-form') as HTMLFormElement;
    const input = document.getElementById('open-name') as HTMLInputElement;
    const error = document.getElementById('open-error') as HTMLParagraphElement;
    const submit = form.querySelector('button') as HTMLButtonElement;
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      error.hidden = true;
      const name = input.value.trim();
      const group = groupIdFor(name);
      if (!group) {
        error.textContent = 'Use letters, digits, dots, dashes or underscores.';
        error.hidden = false;
        return;
      }
      submit.disabled = true;
      try {
        const created = await createIfMissing(api, group, name);
        const conversation = await api.join(group, userId);
        input.value = '';
        onJoined(group, conversation);
        if (created) input.blur();
      } catch (err) {
        error.textContent = describe(err as ShardChatError);
        error.hidden = false;
      } finally {
        submit.disabled = false;
      }
    });
  }
}

/** Creates the group when it does not exist; true when it did not. */
async function createIfMissing(api: ChatApi, group: string, subject: string): Promise<boolean> {
  try {
    await api.getGroup(group);
    return false;
  } catch (err) {
    if ((err as ShardChatError).status !== 404) throw err;
  }
  await api.putGroup(group, { subject });
  return true;
}
