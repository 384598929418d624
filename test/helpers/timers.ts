// Timers made by the plugin's own code (lib/), ref'd or not, for tests that
// prove one shared timer serves every stream and none outlives its stream.
import { createHook } from 'node:async_hooks'
import { fileURLToPath } from 'node:url'

const LIB = fileURLToPath(new URL('../../lib/', import.meta.url))
// A backend's own timers (the Redis backend's timeout per command in flight,
// its probes) are bounded by its commands, not by streams; under load one
// may still be running when a count is taken (the Redis run of the contract
// suite once saw 3), so they are not the hub's timers counted here.
const BACKENDS = fileURLToPath(new URL('../../lib/backends/', import.meta.url))

/**
 * Tracks Timeout resources (setTimeout/setInterval, ref'd or not: the hub's
 * are unref'd, so process.getActiveResourcesInfo() does not list them)
 * created by code under lib/ (not lib/backends/) and not yet destroyed or cleared.
 */
export function trackLibTimers (): { live: () => number, stop: () => void } {
  const live = new Map<number, { hasRef: () => boolean, _destroyed?: boolean }>()
  const hook = createHook({
    init (asyncId, type, _trigger, resource) {
      if (type !== 'Timeout') return
      const stack = new Error().stack ?? ''
      // The innermost frame under lib/ is the code that made the timer.
      const maker = stack.split('\n').find(line => line.includes(LIB))
      if (maker !== undefined && !maker.includes(BACKENDS)) live.set(asyncId, resource as { hasRef: () => boolean })
    },
    destroy (asyncId) { live.delete(asyncId) }
  })
  hook.enable()
  return {
    // A cleared interval may not be destroyed until the timer list runs: count only those not cleared.
    live: () => [...live.values()].filter(r => r._destroyed !== true).length,
    stop: () => hook.disable()
  }
}
