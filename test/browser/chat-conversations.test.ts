/// <reference lib="dom" />
/**
 * The browser chat as a messenger: the conversation list with unread counts, create and
 * join by name, the member list with offline members, scroll-back over several pages,
 * the "New messages" marker, day dividers and grouped messages, the phone layout, and
 * accessibility checked with axe-core. Debian's Chromium (playwright-core) against a
 * real router serving the web UI in front of three real shards; screenshots go to
 * test-artifacts/browser/ (the README's come from here).
 */
import { createRequire } from 'node:module';
import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { ChatApi } from '../../client/index.js';
import { HAVE_BROWSER, screenshot } from '../helpers/browser.js';
import { useChatBrowser } from '../helpers/chat-browser.js';
import { useProcessCleanup } from '../helpers/processes.js';

useProcessCleanup();

const AXE_SOURCE = (createRequire(import.meta.url)('axe-core') as { source: string }).source;

interface AxeResult {
  violations: { id: string; impact: string | null; help: string; nodes: { target: string[] }[] }[];
}

/** axe-core's serious and critical findings on the page as it is now. */
async function axeProblems(page: Page): Promise<string[]> {
  // Evaluated over the DevTools protocol: the page's CSP (script-src 'self') forbids inline scripts.
  if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(AXE_SOURCE);
  const r = (await page.evaluate(() =>
    (window as unknown as { axe: { run: (o: object) => Promise<unknown> } }).axe.run({
      resultTypes: ['violations'],
    }),
  )) as AxeResult;
  return r.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.impact} ${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`);
}

describe.skipIf(!HAVE_BROWSER)('the browser chat as a messenger', () => {
  const t = useChatBrowser(async (b) => {
    await b.owner.putGroup('cafe', { subject: 'Cafe' });
  });

  /** Creates or joins a conversation by name with the sidebar's form. */
  async function openByName(page: Page, name: string): Promise<void> {
    await page.fill('#open-name', name);
    await page.press('#open-name', 'Enter');
  }

  async function send(page: Page, text: string): Promise<void> {
    await page.fill('#composer-input', text);
    await page.press('#composer-input', 'Enter');
  }

  const texts = (page: Page) => page.locator('#messages li[data-msg-id] .text').allTextContents();
  const msgIds = (page: Page) =>
    page
      .locator('#messages li[data-msg-id]')
      .evaluateAll((els) => els.map((e) => Number((e as HTMLElement).dataset.msgId))) as Promise<number[]>;
  /** The unread badge of a conversation in the list ('' when there is none). */
  const unread = async (page: Page, group: string) => {
    const badge = page.locator(`#conversations a[data-group="${group}"] .unread`);
    return (await badge.count()) === 0 ? '' : ((await badge.getAttribute('data-count')) ?? '');
  };

  it('scrolling up loads older pages until the beginning, in order and without duplicates', async () => {
    await t.owner.putGroup('archive', { subject: 'The archive' });
    const total = 170;
    for (let i = 1; i <= total; i++) await t.owner.post('archive', `archived ${i}`, `arch-${i}`);
    const page = await t.newPage();
    await t.enter(page, 'archive', 'Reader');
    // The latest page first, scrolled to the bottom.
    await expect.poll(async () => (await msgIds(page)).at(-1)).toBe(total);
    expect((await msgIds(page)).length).toBeLessThan(total);
    // Scroll to the top until the beginning is shown: more than three pages of 50 (each
    // page lands above the view, which then is no longer at the top: scroll again).
    await expect
      .poll(
        async () => {
          await page.locator('#messages').evaluate((el) => {
            el.scrollTop = 0;
          });
          return page.locator('#messages .divider.start').count();
        },
        { timeout: 30_000, interval: 150 },
      )
      .toBe(1);
    const ids = await msgIds(page);
    expect(ids).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    const shown = await texts(page);
    expect(shown[0]).toBe('archived 1');
    expect(shown.at(-1)).toBe(`archived ${total}`);
    // One sender, one day: one "Today" divider, and every message after the first grouped under it.
    expect(await page.locator('#messages .divider.day').allTextContents()).toEqual(['Today']);
    expect(await page.locator('#messages li.msg.grouped').count()).toBe(total - 1);
    await screenshot(page, 'scroll-back');
  });

  it('create and join by name, unread counts moving between two users, the "New messages" marker, offline members', async () => {
    const ada = await t.newPage();
    const bob = await t.newPage();
    await t.enter(ada, 'cafe', 'Ada');
    await t.enter(bob, 'cafe', 'Bob');
    // Ada creates "Book club" by name; Bob joins it by the same name.
    await openByName(ada, 'Book club');
    await expect.poll(() => ada.textContent('#subject')).toBe('Book club');
    expect(new URL(ada.url()).searchParams.get('group')).toBe('book-club');
    expect((await t.owner.getGroup('book-club')).body.subject).toBe('Book club');
    await openByName(bob, 'book club');
    await expect.poll(() => bob.textContent('#subject')).toBe('Book club');
    // Both list both conversations.
    for (const p of [ada, bob]) {
      await expect
        .poll(() =>
          p
            .locator('#conversations a')
            .evaluateAll((as) => as.map((a) => (a as HTMLElement).dataset.group).sort()),
        )
        .toEqual(['book-club', 'cafe']);
      await expect
        .poll(() => p.locator('#conversations a[aria-current="page"]').getAttribute('data-group'))
        .toBe('book-club');
    }

    // Bob goes to cafe; Ada writes twice in book-club: Bob's count for book-club moves to 2.
    await bob.click('#conversations a[data-group="cafe"]');
    await expect.poll(() => bob.textContent('#subject')).toBe('Cafe');
    await send(ada, 'first for the club');
    await send(ada, 'second for the club');
    await expect.poll(() => unread(bob, 'book-club')).toBe('2');
    await expect
      .poll(() => bob.locator('#conversations a[data-group="book-club"] .preview').textContent())
      .toBe('Ada: second for the club');
    expect(await unread(bob, 'cafe')).toBe('');
    await screenshot(bob, 'unread');

    // Bob opens it: the marker stands before Ada's first message, the count is gone.
    await bob.click('#conversations a[data-group="book-club"]');
    await expect.poll(() => texts(bob)).toEqual(['first for the club', 'second for the club']);
    const marker = bob.locator('#messages .divider.new-marker');
    expect(await marker.count()).toBe(1);
    expect(
      await marker.evaluate((el) => {
        let next = el.nextElementSibling as HTMLElement | null;
        while (next && !next.dataset.msgId) next = next.nextElementSibling as HTMLElement | null;
        return next?.querySelector('.text')?.textContent;
      }),
    ).toBe('first for the club');
    await expect.poll(() => unread(bob, 'book-club')).toBe('');
    // Consecutive messages of one sender are grouped.
    expect(await bob.locator('#messages li.msg.grouped').count()).toBe(1);

    // Now Bob answers in book-club while Ada is in cafe: Ada's count moves.
    await ada.click('#conversations a[data-group="cafe"]');
    await send(bob, 'hi Ada');
    await expect.poll(() => unread(ada, 'book-club')).toBe('1');
    await ada.click('#conversations a[data-group="book-club"]');
    await expect.poll(() => unread(ada, 'book-club')).toBe('');
    // The browser's back button returns to cafe.
    await ada.goBack();
    await expect.poll(() => ada.textContent('#subject')).toBe('Cafe');
    await ada.click('#conversations a[data-group="book-club"]');

    // Members: both online; once Bob closes his page, Ada sees him offline.
    await expect
      .poll(() => ada.locator('#online-list li .name').allTextContents())
      .toEqual(['Ada (you)', 'Bob']);
    await bob.context().close();
    await expect
      .poll(() => ada.locator('#offline-list li .name').allTextContents(), { timeout: 20_000 })
      .toEqual(['Bob']);
    await expect.poll(() => ada.locator('#online-list li .name').allTextContents()).toEqual(['Ada (you)']);
    await screenshot(ada, 'chat-desktop');
    expect(await axeProblems(ada)).toEqual([]);
  });

  it('conversations joined on another device show up: live while the page is open, and in a new browser', async () => {
    await t.owner.putGroup('elsewhere-1', { subject: 'Joined elsewhere' });
    await t.owner.putGroup('elsewhere-2', { subject: 'Also elsewhere' });
    const page = await t.newPage();
    await t.enter(page, 'cafe', 'Eve');
    const identity = (await page.evaluate(() => localStorage.getItem('shardchat.identity'))) as string;
    const userId = (JSON.parse(identity) as { userId: string }).userId;
    // Eve's other device (the SDK) joins two conversations; the open page lists them at once.
    const other = new ChatApi({ baseUrl: t.cluster.router.url, token: await t.cluster.token(userId) });
    await other.join('elsewhere-1', userId);
    await other.join('elsewhere-2', userId);
    await t.owner.post('elsewhere-1', 'news from elsewhere', 'elsewhere-news');
    // (The list's order is the newest activity first, then the id.)
    const subjects = (p: Page) => p.locator('#conversations .subject').allTextContents();
    await expect.poll(() => subjects(page)).toEqual(['Joined elsewhere', 'Cafe', 'Also elsewhere']);
    await expect.poll(() => unread(page, 'elsewhere-1')).toBe('1');
    // Leaving on the other device takes it off the list.
    await other.leave('elsewhere-2', userId);
    await expect.poll(() => subjects(page)).toEqual(['Joined elsewhere', 'Cafe']);
    // A new browser that knows only who Eve is lists every conversation of hers.
    const fresh = await t.newPage();
    await fresh.addInitScript((id) => localStorage.setItem('shardchat.identity', id), identity);
    await fresh.goto(`${t.cluster.router.url}/?group=cafe`);
    await fresh.waitForSelector('#state[data-state="open"]');
    await expect.poll(() => subjects(fresh)).toEqual(['Joined elsewhere', 'Cafe']);
    await fresh.click('#conversations a[data-group="elsewhere-1"]');
    await expect.poll(() => texts(fresh)).toEqual(['news from elsewhere']);
  });

  it('a phone screen: a one-line header, the conversation list and members as panels, axe-clean', async () => {
    await t.owner.putGroup('pocket-2', { subject: 'Pocket conversation with a long subject line' });
    await t.owner.post('pocket-2', 'hello there, see https://example.com', 'pocket-1');
    const page = await t.newPage({ width: 390, height: 760 });
    // The signed-out page: only the form (no connection state, no sign-out, no counts).
    await page.goto(`${t.cluster.router.url}/?group=pocket-2`);
    await expect.poll(() => page.locator('#entry').isVisible()).toBe(true);
    expect(await page.locator('#chat').isVisible()).toBe(false);
    expect(await axeProblems(page)).toEqual([]);
    await page.fill('#entry-name', 'Gus');
    await page.fill('#entry-email', 'gus@example.com');
    await page.click('#entry-submit');
    await page.waitForSelector('#state[data-state="open"]');
    await expect.poll(() => texts(page)).toEqual(['hello there, see https://example.com']);
    const header = await page.locator('header.bar').boundingBox();
    expect(header?.height).toBeLessThanOrEqual(56);
    expect(
      await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth),
    ).toBeLessThanOrEqual(0);
    // The placeholder fits in the message box.
    expect(
      await page.locator('#composer-input').evaluate((el) => {
        const t = el as HTMLTextAreaElement;
        const ctx = document.createElement('canvas').getContext('2d') as CanvasRenderingContext2D;
        ctx.font = getComputedStyle(t).font;
        return ctx.measureText(t.placeholder).width < t.clientWidth;
      }),
    ).toBe(true);
    expect(await page.locator('#sidebar').isVisible()).toBe(false);
    await screenshot(page, 'chat-phone');
    expect(await axeProblems(page)).toEqual([]);
    await page.click('#toggle-conversations');
    expect(await page.locator('#sidebar').isVisible()).toBe(true);
    expect(await page.locator('#conversations a').count()).toBe(1);
    await screenshot(page, 'chat-phone-conversations');
    expect(await axeProblems(page)).toEqual([]);
  });

  it('the keyboard alone reaches every control, with a visible focus', async () => {
    const page = await t.newPage();
    await t.enter(page, 'cafe', 'Kim');
    await page.click('#composer-input');
    const seen = new Set<string>();
    for (let i = 0; i < 30; i++) {
      await page.keyboard.press('Tab');
      const f = await page.evaluate(() => {
        const el = document.activeElement as HTMLElement | null;
        if (!el || el === document.body) return undefined;
        const style = getComputedStyle(el);
        return {
          id: el.id || el.getAttribute('data-group') || el.tagName,
          outlined: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0,
        };
      });
      if (!f) continue;
      expect(f.outlined, `focus outline on ${f.id}`).toBe(true);
      seen.add(f.id);
    }
    for (const id of ['sign-out', 'cafe', 'open-name', 'messages', 'composer-input', 'send']) {
      expect(seen, `Tab reaches ${id}`).toContain(id);
    }
  });
});
