/**
 * The Node.js process metrics every shardchat process exports (prom-client's defaults),
 * minus three gauges that prom-client names with a `_total` suffix, which Prometheus
 * reserves for counters (`promtool check metrics` flags them). Nothing is lost: the
 * same counts stay available as `nodejs_active_handles`, `nodejs_active_requests` and
 * `nodejs_active_resources`, broken down by type.
 */
import { collectDefaultMetrics, type Registry } from 'prom-client';

const MISNAMED = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

export function collectProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
  for (const name of MISNAMED) registry.removeSingleMetric(name);
}
