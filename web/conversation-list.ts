/**
 * The user's conversations: subject, last message and unread count each, the open one
 * marked; newest activity first. Selecting one is a link (`?group=`), so it also works
 * with a middle click or a new tab.
 */
import type { Conversation } from './conversation.js';
import { shortId } from './messages-view.js';
import type { Profiles } from './profiles.js';

export class ConversationList {
  private readonly list: HTMLUListElement;

  constructor(
    private readonly me: string,
    private readonly profiles: Profiles,
    onSelect: (group: string) => void,
  ) {
    this.list = document.getElementById('conversations') as HTMLUListElement;
    this.list.addEventListener('click', (e) => {
      const a = (e.target as Element).closest<HTMLAnchorElement>('a[data-group]');
      if (!a || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
      e.preventDefault();
      onSelect(a.dataset.group as string);
    });
  }

  render(all: Iterable<Conversation>, open: Conversation | undefined): void {
    const sorted = [...all].sort(
      (a, b) => (b.last?.ts ?? 0) - (a.last?.ts ?? 0) || a.group.localeCompare(b.group),
    );
    this.list.replaceChildren(...sorted.map((c) => this.item(c, c === open)));
  }

  private item(c: Conversation, open: boolean): HTMLLIElement {
    const li = document.createElement('li');
    const a = document.createElement('a');
    a.href = `?group=${encodeURIComponent(c.group)}`;
    a.dataset.group = c.group;
    if (open) a.setAttribute('aria-current', 'page');
    const title = document.createElement('span');
    title.className = 'subject';
    title.textContent = c.subject ?? c.group;
    const preview = document.createElement('span');
    preview.className = 'preview';
    const last = c.last;
    if (last) {
      const who =
        last.userId === this.me ? 'You' : (this.profiles.known(last.userId)?.name ?? shortId(last.userId));
      preview.textContent = `${who}: ${last.contents}`;
    } else preview.textContent = 'No messages yet';
    a.append(title, preview);
    const n = open ? 0 : c.unread(this.me);
    if (n > 0) {
      const badge = document.createElement('span');
      badge.className = 'unread';
      const more = c.unreadMayBeMore(this.me);
      badge.dataset.count = String(n);
      badge.textContent = `${n}${more ? '+' : ''}`;
      const said = document.createElement('span');
      said.className = 'visually-hidden';
      said.textContent = ' unread';
      badge.append(said);
      a.append(badge);
    }
    li.append(a);
    return li;
  }
}
