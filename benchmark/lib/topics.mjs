// Which topic event g goes to, shared by the publisher (to address it) and the
// subscriber workers (to know how many of their sockets must receive it before
// their watermark may pass it). Both sides compute it from g alone, so nothing
// about the sequence has to travel over IPC.
//
//   'rr'     round-robin: topic (g - 1) mod T (broadcast and the `many` case)
//   'random' uniformly random topics: a 32-bit integer hash of g (murmur3's
//            finaliser) mod T, the same on every process, fixed per run
//            (the targeted case: each publish reaches one topic's few sockets)

/** murmur3 fmix32: a bijection on 32-bit integers with full avalanche. */
function mix (h) {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** A function g (1-based) -> topic index in [0, topics). */
export function topicPicker (pick, topics) {
  if (topics === 1) return () => 0
  if (pick === 'random') return (g) => mix(g ^ 0x5bd1e995) % topics
  return (g) => (g - 1) % topics
}
