/** Names and pictures of the users in the conversation, fetched once each. */
import type { ChatApi, User } from '../client/index.js';

export class Profiles {
  private readonly cache = new Map<string, Promise<User | undefined>>();
  private readonly listeners = new Set<(u: User) => void>();

  constructor(private readonly api: ChatApi) {}

  /** Calls `fn` whenever a profile arrives. */
  onLoaded(fn: (u: User) => void): void {
    this.listeners.add(fn);
  }

  known(userId: string): User | undefined {
    return this.resolved.get(userId);
  }

  private readonly resolved = new Map<string, User>();

  /** Starts loading a profile if it is not known yet. */
  want(userId: string): void {
    if (this.cache.has(userId)) return;
    const p = this.api.getUser(userId).then(
      (u) => {
        this.resolved.set(userId, u);
        for (const fn of this.listeners) fn(u);
        return u;
      },
      () => {
        // Unknown or unreachable (its shard may be down): forget it so that a later message asks again.
        setTimeout(() => this.cache.delete(userId), 5000);
        return undefined;
      },
    );
    this.cache.set(userId, p);
  }

  /** Seeds the cache with a profile this tab already has (its own). */
  set(u: User): void {
    this.resolved.set(u.userId, u);
    this.cache.set(u.userId, Promise.resolve(u));
  }
}

/** A picture when the profile has a usable one, otherwise the initials. */
export function avatar(u: User | undefined, userId: string): HTMLElement {
  const name = u?.name || userId;
  const url = u?.photoUrl;
  if (url && /^https?:\/\//i.test(url)) {
    const img = document.createElement('img');
    img.className = 'avatar';
    img.src = url;
    img.alt = '';
    img.referrerPolicy = 'no-referrer';
    img.loading = 'lazy';
    img.addEventListener('error', () => img.replaceWith(initials(name)), { once: true });
    return img;
  }
  return initials(name);
}

function initials(name: string): HTMLElement {
  const span = document.createElement('span');
  span.className = 'avatar';
  span.setAttribute('aria-hidden', 'true');
  const parts = name.trim().split(/\s+/).slice(0, 2);
  span.textContent = parts.map((p) => p.charAt(0).toUpperCase()).join('') || '?';
  return span;
}
