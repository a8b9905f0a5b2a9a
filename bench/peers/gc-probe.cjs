// Preloaded into the servers bench/peers.mjs measures (`node --expose-gc -r ./gc-probe.cjs`):
// on SIGUSR2, two full garbage collections; then, $GC_PROBE_SETTLE_MS later (0 by default),
// two more, and process.memoryUsage() with the young generation's committed size (V8's new
// space) written as JSON to $GC_PROBE_FILE, so that idle memory is read with the garbage
// collected. V8 shrinks its young generation only at a GC that finds the allocation rate
// of the last seconds low: the first pair ends the connection burst's period, the second
// comes after a quiet one.
const fs = require('node:fs');
const v8 = require('node:v8');

const settleMs = Number(process.env.GC_PROBE_SETTLE_MS ?? 0);
const collect = () => {
  if (typeof global.gc === 'function') {
    global.gc();
    global.gc();
  }
};

process.on('SIGUSR2', () => {
  collect();
  setTimeout(() => {
    collect();
    const young = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
    fs.writeFileSync(
      process.env.GC_PROBE_FILE,
      JSON.stringify({
        at: Date.now(),
        ...process.memoryUsage(),
        youngBytes: young?.physical_space_size ?? 0,
      }),
    );
  }, settleMs);
});
