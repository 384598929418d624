// Latency histogram in integer microseconds with fixed log-linear buckets
// (16 sub-buckets per power of two, so about 6% resolution), no allocation
// per recorded value. Shared by the subscriber workers (which record) and the
// orchestrator (which merges and reads percentiles).

export const BUCKETS = 512

/** Bucket index of a latency in microseconds (clamped to 0 .. 2^31-1). */
export function bucketOf (us) {
  const v = us < 0 ? 0 : us > 2147483647 ? 2147483647 : Math.floor(us)
  if (v < 16) return v
  const e = 31 - Math.clz32(v)
  return 16 + (e - 4) * 16 + ((v >>> (e - 4)) & 15)
}

/** The middle of a bucket, in microseconds. */
export function bucketMid (idx) {
  if (idx < 16) return idx
  const e = ((idx - 16) >> 4) + 4
  const m = (idx - 16) & 15
  const lo = (16 + m) * 2 ** (e - 4)
  const hi = (17 + m) * 2 ** (e - 4)
  return (lo + hi) / 2
}

/** Sparse form for IPC: [[idx, count], ...]. */
export function sparse (hist) {
  const out = []
  for (let i = 0; i < hist.length; i++) if (hist[i] !== 0) out.push([i, hist[i]])
  return out
}

export function mergeSparse (into, pairs) {
  for (const [i, c] of pairs) into[i] += c
}

/** Percentile p (0..100) of a dense histogram, in microseconds (bucket middle), or null if empty. */
export function percentile (hist, p) {
  let total = 0
  for (let i = 0; i < hist.length; i++) total += hist[i]
  if (total === 0) return null
  const rank = Math.max(1, Math.ceil((p / 100) * total))
  let seen = 0
  for (let i = 0; i < hist.length; i++) {
    seen += hist[i]
    if (seen >= rank) return bucketMid(i)
  }
  return bucketMid(hist.length - 1)
}
