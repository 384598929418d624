/**
 * Hub ids and the other short printable strings that travel in headers.
 * Pure: no I/O. A hub id is `<epoch>-<seq>`: the epoch names one history,
 * the seq orders every event of the hub across all topics.
 */

const ID = /^([a-z0-9]{1,24})-(\d{1,16})$/

/**
 * Printable ASCII without leading or trailing spaces, 1 to 128 characters:
 * what a resumable `Last-Event-ID` and a stream tag may be.
 */
export const PRINTABLE = /^[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?$/

/** The id of `seq` in `epoch`. */
export function formatId (epoch: string, seq: number): string {
  return epoch + '-' + seq
}

/** Splits a hub id into epoch and seq; null if it is not one. */
export function parseId (id: string): { epoch: string, seq: number } | null {
  const m = ID.exec(id)
  if (m === null) return null
  const seq = Number(m[2])
  return Number.isSafeInteger(seq) ? { epoch: m[1], seq } : null
}

/**
 * A fresh epoch: the time in base 36 and a random tail of 8 base-36 digits
 * (36^8 = 2.8e12 values), so two histories started in the same millisecond
 * do not share one. 16 characters.
 */
export function newEpoch (): string {
  return Date.now().toString(36) + Math.floor(Math.random() * 36 ** 8).toString(36).padStart(8, '0')
}
