/** "Ada is typing…" for the open conversation: each typist shown for 3.5 s after their last keystroke. */
import { shortId } from './messages-view.js';
import type { Profiles } from './profiles.js';

const SHOWN_MS = 3500;

export class TypingView {
  private readonly timers = new Map<string, ReturnType<typeof setTimeout>>();
  private readonly line: HTMLElement;

  constructor(private readonly profiles: Profiles) {
    this.line = document.getElementById('typing') as HTMLElement;
    // A name that arrives after its typing indicator replaces the short id.
    profiles.onLoaded(() => this.render());
  }

  start(userId: string): void {
    this.profiles.want(userId);
    clearTimeout(this.timers.get(userId));
    this.timers.set(
      userId,
      setTimeout(() => this.stop(userId), SHOWN_MS),
    );
    this.render();
  }

  stop(userId: string): void {
    clearTimeout(this.timers.get(userId));
    if (this.timers.delete(userId)) this.render();
  }

  clear(): void {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.render();
  }

  private render(): void {
    const names = [...this.timers.keys()].map((id) => this.profiles.known(id)?.name ?? shortId(id));
    this.line.textContent =
      names.length === 0
        ? ''
        : names.length === 1
          ? `${names[0]} is typing…`
          : names.length <= 3
            ? `${names.slice(0, -1).join(', ')} and ${names.at(-1)} are typing…`
            : 'Several people are typing…';
  }
}
