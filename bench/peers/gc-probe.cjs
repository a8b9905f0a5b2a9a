// Preloaded into the servers bench/peers.mjs measures (`node --expose-gc -r ./gc-probe.cjs`):
// on SIGUSR2, two full garbage collections, then process.memoryUsage() written as JSON to
// $GC_PROBE_FILE, so that idle memory is read with the garbage collected.
const fs = require('node:fs');

process.on('SIGUSR2', () => {
  if (typeof global.gc === 'function') {
    global.gc();
    global.gc();
  }
  fs.writeFileSync(process.env.GC_PROBE_FILE, JSON.stringify({ at: Date.now(), ...process.memoryUsage() }));
});
