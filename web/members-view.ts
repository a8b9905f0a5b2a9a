/**
 * The open conversation's members: online ones first (from presence), then the others,
 * read from `GET /groups/{id}/members` a page at a time ("Show more" for the next).
 */
import type { ChatApi, ShardChatError } from '../client/index.js';
import { shortId } from './messages-view.js';
import { avatar, type Profiles } from './profiles.js';

/** Members read per page. */
const MEMBERS_PAGE = 100;

export class MembersView {
  private conversation: string | undefined;
  private readonly members = new Set<string>();
  private online: string[] = [];
  private next: string | undefined;
  /** Online users that made the list be read again (once each). */
  private readonly askedFor = new Set<string>();
  private readonly more: HTMLButtonElement;

  constructor(
    private readonly api: ChatApi,
    private readonly me: string,
    private readonly profiles: Profiles,
    private readonly onError: (err: ShardChatError) => void,
  ) {
    this.more = document.getElementById('members-more') as HTMLButtonElement;
    this.more.addEventListener('click', () => void this.loadPage());
    profiles.onLoaded(() => this.render());
  }

  /** Shows the members of `conversation` (read again from the server). */
  show(conversation: string, online: string[]): void {
    this.conversation = conversation;
    this.members.clear();
    this.askedFor.clear();
    this.next = undefined;
    this.online = online;
    this.render();
    void this.loadPage();
  }

  /** Who is online in the open conversation now. */
  setOnline(online: string[]): void {
    this.online = online;
    // Someone online that the list has not read yet joined since: read the list again.
    const missing = online.filter((u) => !this.members.has(u) && !this.askedFor.has(u));
    if (this.next === undefined && missing.length > 0 && this.conversation) {
      for (const u of missing) this.askedFor.add(u);
      this.members.clear();
      void this.loadPage();
    }
    this.render();
  }

  private async loadPage(): Promise<void> {
    const conversation = this.conversation;
    if (!conversation) return;
    try {
      const page = await this.api.members(conversation, this.next, MEMBERS_PAGE);
      if (conversation !== this.conversation) return;
      for (const m of page.members) this.members.add(m.userId);
      this.next = page.next;
      this.render();
    } catch (err) {
      this.onError(err as ShardChatError);
    }
  }

  private render(): void {
    const online = new Set(this.online);
    const offline = [...this.members].filter((u) => !online.has(u));
    this.fill('online-list', this.sorted([...online]));
    this.fill('offline-list', this.sorted(offline));
    (document.getElementById('online-count') as HTMLElement).textContent = String(online.size);
    (document.getElementById('offline-count') as HTMLElement).textContent = String(offline.length);
    this.more.hidden = this.next === undefined;
  }

  /** This user first, then by name. */
  private sorted(users: string[]): string[] {
    const name = (u: string) => this.profiles.known(u)?.name ?? u;
    return users.sort((a, b) => (a === this.me ? -1 : b === this.me ? 1 : name(a).localeCompare(name(b))));
  }

  private fill(id: string, users: string[]): void {
    const list = document.getElementById(id) as HTMLUListElement;
    list.replaceChildren(
      ...users.map((userId) => {
        this.profiles.want(userId);
        const u = this.profiles.known(userId);
        const li = document.createElement('li');
        li.dataset.user = userId;
        const name = document.createElement('span');
        name.className = 'name';
        name.textContent = (u?.name ?? shortId(userId)) + (userId === this.me ? ' (you)' : '');
        li.append(avatar(u, userId), name);
        return li;
      }),
    );
  }
}
