/**
 * The live cluster view (the router's admin port, /cluster): reads /cluster.json every
 * second and redraws the shard map and one row per shard. Text only (textContent), no
 * markup from the data.
 */

import type { ClusterSnapshot as Snapshot } from '../../common/cluster-snapshot.js';

const POLL_MS = 1000;
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

const count = (n: number | null) => (n === null ? '–' : Math.round(n).toLocaleString('en'));
const perSecond = (n: number | null) =>
  n === null ? '–' : n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString('en');
function bytes(n: number | null): string {
  if (n === null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v < 10 && u > 0 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

function cell(row: HTMLTableRowElement, text: string, cls?: string, header = false): HTMLTableCellElement {
  const c = document.createElement(header ? 'th' : 'td');
  if (header) c.setAttribute('scope', 'row');
  c.textContent = text;
  if (cls) c.className = cls;
  row.append(c);
  return c;
}

function fact(dl: HTMLElement, name: string, value: string): void {
  const div = document.createElement('div');
  const dt = document.createElement('dt');
  const dd = document.createElement('dd');
  dt.textContent = name;
  dd.textContent = value;
  div.append(dt, dd);
  dl.append(div);
}

function draw(s: Snapshot): void {
  const ready = s.shards.filter((r) => r.ready).length;
  $('summary').textContent =
    `${ready} of ${s.shards.length} shards ready · ${perSecond(s.router.requestsPerSecond)} requests/s · ` +
    `${perSecond(s.router.errorsPerSecond)} 5xx/s · ${count(s.router.websockets)} WebSockets · ${s.mode} topology · ` +
    `updated ${new Date(s.at).toLocaleTimeString('en-GB')}`;
  const dl = $('map');
  dl.replaceChildren();
  fact(dl, 'Version', String(s.map.version));
  fact(dl, 'Shards', String(s.map.shards));
  fact(dl, 'Assignment', s.map.assignment);
  const m = s.map.migration;
  const mig = $('migration');
  mig.hidden = !m;
  if (m) {
    const imported = s.shards.reduce((a, r) => a + (r.keysImported ?? 0), 0);
    mig.textContent = `Resharding ${m.from.shards} → ${m.to.shards} shards: ${m.state} since ${new Date(m.startedAt).toLocaleTimeString('en-GB')} · ${count(imported)} keys imported so far`;
  }
  const body = ($('shards') as HTMLTableElement).tBodies[0] as HTMLTableSectionElement;
  const rows = s.shards.map((r) => {
    const tr = document.createElement('tr');
    tr.dataset.shard = String(r.ordinal);
    const name = cell(tr, `shard-${r.ordinal}`, undefined, true);
    name.title = r.address;
    cell(
      tr,
      r.ready ? 'ready' : `not ready${r.reason ? ` (${r.reason})` : ''}`,
      r.ready ? 'state-ready' : 'state-down',
    );
    cell(tr, r.mapVersion === null ? '–' : String(r.mapVersion), 'num');
    cell(tr, count(r.groups), 'num');
    cell(tr, count(r.members), 'num');
    cell(tr, count(r.connections), 'num');
    cell(tr, perSecond(r.messagesPerSecond), 'num messages');
    cell(tr, bytes(r.dbBytes), 'num');
    cell(tr, perSecond(r.requestsPerSecond), 'num');
    cell(tr, perSecond(r.errorsPerSecond), 'num');
    cell(tr, count(r.websockets), 'num');
    const reshard = r.reshardPhase
      ? `${r.reshardPhase}; ${count(r.keysImported)} in, ${count(r.keysExported)} out`
      : r.error
        ? r.error
        : '–';
    cell(tr, reshard, r.error && !r.reshardPhase ? 'error' : undefined);
    return tr;
  });
  body.replaceChildren(...rows);
}

async function poll(): Promise<void> {
  try {
    const res = await fetch('/cluster.json', { cache: 'no-store' });
    if (!res.ok) throw new Error(`/cluster.json answered ${res.status}`);
    draw((await res.json()) as Snapshot);
  } catch (err) {
    $('summary').textContent = `The router does not answer: ${(err as Error).message}. Trying again…`;
  } finally {
    setTimeout(() => void poll(), POLL_MS);
  }
}

void poll();
