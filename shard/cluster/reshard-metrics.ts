/** The shard map and resharding as Prometheus series (docs/architecture.md sections 7 and 8). */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { type Layout, sameLayout } from '../../common/placement.js';
import type { Ownership } from './ownership.js';
import type { Resharding } from './resharding.js';

const STATES = ['copying', 'fenced', 'switched'] as const;

export function registerReshardMetrics(
  registry: Registry,
  own: Ownership,
  resharding: Resharding,
  configured: Layout,
): void {
  const registers = [registry];
  new Gauge({
    name: 'shardchat_map_version',
    help: 'Version of the shard map this shard serves by.',
    registers,
    collect() {
      this.set(own.map.version);
    },
  });
  new Gauge({
    name: 'shardchat_map_shards',
    help: 'S of the shard map this shard serves by (the owners of keys now).',
    registers,
    collect() {
      this.set(own.map.shards);
    },
  });
  new Gauge({
    name: 'shardchat_map_config_mismatch',
    help: "1 when the configuration's shards or assignment differ from the stored map (served by the map; run shardchat reshard).",
    registers,
    collect() {
      this.set(sameLayout(own.map, configured) || own.map.migration ? 0 : 1);
    },
  });
  new Gauge({
    name: 'shardchat_reshard_phase',
    help: 'The state of the running migration (1 on its label), all 0 when none runs.',
    labelNames: ['state'],
    registers,
    collect() {
      for (const s of STATES) this.set({ state: s }, own.map.migration?.state === s ? 1 : 0);
    },
  });
  new Gauge({
    name: 'shardchat_reshard_held_writes',
    help: 'Writes of moving keys held by the fence right now.',
    registers,
    collect() {
      this.set(own.held);
    },
  });
  const hold = new Histogram({
    name: 'shardchat_reshard_hold_seconds',
    help: 'How long a write of a moving key was held by the fence.',
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers,
  });
  own.on('held', (s) => hold.observe(s));
  const keys = new Counter({
    name: 'shardchat_reshard_keys_total',
    help: 'Keys (groups, users) copied out of (exported) or into (imported) this shard, and deleted after they moved (dropped).',
    labelNames: ['direction'],
    registers,
  });
  const messages = new Counter({
    name: 'shardchat_reshard_messages_total',
    help: 'Messages copied out of (exported) or into (imported, new ones only) this shard.',
    labelNames: ['direction'],
    registers,
  });
  resharding.on('exported', (k, m) => {
    keys.inc({ direction: 'exported' }, k);
    messages.inc({ direction: 'exported' }, m);
  });
  resharding.on('imported', (k, m) => {
    keys.inc({ direction: 'imported' }, k);
    messages.inc({ direction: 'imported' }, m);
  });
  resharding.on('dropped', (k) => keys.inc({ direction: 'dropped' }, k));
}
