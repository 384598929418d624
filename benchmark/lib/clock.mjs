// One clock for every process of a run: CLOCK_MONOTONIC (process.hrtime) in
// microseconds, minus an epoch the orchestrator picks and hands to every
// child. performance.now() is read on the hot path (no allocation) and moved
// onto the monotonic clock by an offset measured once: both come from
// uv_hrtime, so the offset is constant.
import { performance } from 'node:perf_hooks'

function hrUs () {
  const [s, ns] = process.hrtime()
  return s * 1e6 + ns / 1e3
}

let offset = 0
{
  // Take the tightest of a few back-to-back samples.
  let best = Infinity
  for (let i = 0; i < 20; i++) {
    const a = performance.now()
    const h = hrUs()
    const b = performance.now()
    if (b - a < best) {
      best = b - a
      offset = h - ((a + b) / 2) * 1000
    }
  }
}

let epoch = 0
/** Sets the run's epoch (monotonic microseconds). */
export function setEpoch (us) { epoch = us }
/** Monotonic microseconds (absolute), for picking an epoch. */
export function monoUs () { return hrUs() }
/** Microseconds since the run's epoch, on the shared clock. */
export function nowUs () { return performance.now() * 1000 + offset - epoch }
