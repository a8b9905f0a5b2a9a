/** Errors shown as toasts (the seed's error handling): short-lived, deduplicated, announced. */
const recent = new Map<string, number>();

export function toast(text: string, kind: 'error' | 'info' = 'error', ms = 5000): void {
  const now = Date.now();
  if ((recent.get(text) ?? 0) > now - 4000) return;
  recent.set(text, now);
  const box = document.getElementById('toasts');
  if (!box) return;
  const el = document.createElement('div');
  el.className = `toast ${kind}`;
  el.textContent = text;
  box.append(el);
  while (box.children.length > 4) box.firstElementChild?.remove();
  setTimeout(() => el.remove(), ms);
}
