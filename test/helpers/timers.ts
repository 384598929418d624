// Timers made by the plugin's own code (lib/), ref'd or not, for tests that
// prove one shared timer serves every stream and none outlives its stream.
import { createHook } from 'node:async_hooks'
import { fileURLToPath } from 'node:url'

const LIB = fileURLToPath(new URL('../../lib/', import.meta.url))

/**
 * Tracks Timeout resources (setTimeout/setInterval, ref'd or not: the hub's
 * are unref'd, so process.getActiveResourcesInfo() does not list them)
 * created by code under lib/ and not yet destroyed or cleared.
 */
export function trackLibTimers (): { live: () => number, stop: () => void } {
  const live = new Map<number, { hasRef: () => boolean, _destroyed?: boolean }>()
  const hook = createHook({
    init (asyncId, type, _trigger, resource) {
      if (type !== 'Timeout') return
      const stack = new Error().stack ?? ''
      if (stack.includes(LIB)) live.set(asyncId, resource as { hasRef: () => boolean })
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
