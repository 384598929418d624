/**
 * Unit tests of lib/ids.ts: the hub id `<epoch>-<seq>` (format, parse and
 * their bounds), the printable-string rule for Last-Event-ID and tags, and
 * the shape of a fresh epoch. Pure: no server, no timers.
 */
import t from 'tap'
import { formatId, parseId, PRINTABLE, newEpoch } from '../lib/ids.js'

/** A string for a test name: control and non-ASCII characters escaped, long ones shortened (TAP names are one line). */
function show (s: string): string {
  const short = s.length > 24 ? s.slice(0, 20) + '...' : s
  return '"' + short.replace(/[^\x20-\x7e]/g, c => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0')) + `" (${s.length})`
}

t.test('formatId and parseId round trip at the bounds of epoch and seq', async t => {
  const epochs = ['a', 'z', '0', '9', 'abc123', 'z'.repeat(24), '0'.repeat(24), 'm0x9q2kd1a2b']
  const seqs = [0, 1, 9, 10, 123456789, 2 ** 32, 10 ** 15, Number.MAX_SAFE_INTEGER]
  for (const epoch of epochs) {
    for (const seq of seqs) {
      const id = formatId(epoch, seq)
      t.equal(id, `${epoch}-${seq}`, 'the id is the epoch, a dash and the decimal seq')
      t.same(parseId(id), { epoch, seq }, `${id} parses back`)
    }
  }
})

t.test('parseId refuses what is not a hub id', async t => {
  const junk: Array<[string, string]> = [
    ['', 'empty'],
    ['-1', 'no epoch'],
    ['abc-', 'no seq'],
    ['abc', 'no dash'],
    ['abc1', 'no dash, digits at the end'],
    ['a'.repeat(25) + '-1', 'epoch of 25 characters'],
    ['abc-' + '1'.repeat(17), 'seq of 17 digits'],
    ['ABC-1', 'upper case epoch'],
    ['ab_c-1', 'underscore in the epoch'],
    ['ab-c-1', 'dash in the epoch'],
    ['abc--1', 'negative seq'],
    ['abc-+1', 'signed seq'],
    ['abc-1.5', 'fractional seq'],
    ['abc-1e3', 'exponent seq'],
    ['abc-0x1f', 'hex seq'],
    ['abc-1 ', 'trailing space'],
    [' abc-1', 'leading space'],
    ['abc-1\n', 'trailing newline'],
    ['abc-1\nabc-2', 'two ids on two lines'],
    ['abc-١٢', 'non-ASCII digits'],
    ['äbc-1', 'non-ASCII epoch'],
    ['abc- 1', 'space before the seq']
  ]
  for (const [id, what] of junk) t.equal(parseId(id), null, `${what}: ${show(id)}`)
})

t.test('parseId takes 16-digit seqs only while they are safe integers', async t => {
  t.same(parseId('e-' + String(Number.MAX_SAFE_INTEGER)), { epoch: 'e', seq: Number.MAX_SAFE_INTEGER }, 'the largest safe integer (16 digits)')
  t.equal(parseId('e-' + String(Number.MAX_SAFE_INTEGER + 1)), null, 'one past it would be rounded: refused')
  t.equal(parseId('e-9999999999999999'), null, 'the largest 16-digit number is not safe: refused')
  t.same(parseId('e-1000000000000000'), { epoch: 'e', seq: 1e15 }, 'the smallest 16-digit number')
})

t.test('PRINTABLE: printable ASCII, 1 to 128 characters, no space at either end', async t => {
  const accepted = [
    '!', '~', 'a', 'abc-1', 'a b', 'a  b', '"quoted"', 'x'.repeat(128),
    'a' + ' '.repeat(126) + 'b', '!#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~'
  ]
  for (const s of accepted) t.ok(PRINTABLE.test(s), `accepts ${show(s)}`)
  const refused = [
    '', ' ', ' a', 'a ', 'x'.repeat(129), 'a\tb', 'a\nb', 'a\rb', '\x00', 'a\x7f', 'é', 'a\u2028b', '\u00a0a'
  ]
  for (const s of refused) t.notOk(PRINTABLE.test(s), `refuses ${show(s)}`)
  // Every single byte: exactly 0x21..0x7e pass on their own; inside, 0x20 too.
  for (let c = 0; c < 256; c++) {
    const ch = String.fromCharCode(c)
    if (PRINTABLE.test(ch) !== (c >= 0x21 && c <= 0x7e)) t.fail(`alone: 0x${c.toString(16)}`)
    if (PRINTABLE.test('a' + ch + 'b') !== (c >= 0x20 && c <= 0x7e)) t.fail(`inside: 0x${c.toString(16)}`)
  }
  t.pass('every byte value checked alone and inside')
})

t.test('newEpoch: a valid id epoch, led by the time in base 36', async t => {
  for (let i = 0; i < 200; i++) {
    const before = Date.now()
    const epoch = newEpoch()
    const after = Date.now()
    if (!/^[a-z0-9]{1,24}$/.test(epoch)) return t.fail(`bad shape: ${epoch}`)
    if (parseId(formatId(epoch, 7))?.epoch !== epoch) return t.fail(`does not round trip: ${epoch}`)
    // The time leads (so epochs sort by when they were made); the tail's length is free.
    const led = [before, after].some(ms => epoch.startsWith(ms.toString(36)) && epoch.length > ms.toString(36).length)
    if (!led) return t.fail(`${epoch} is not led by the time ${before.toString(36)}`)
  }
  t.pass('200 epochs checked')
})

t.test('newEpoch: epochs made in different milliseconds differ even with the same random draw', async t => {
  let now = 1_700_000_000_000
  t.intercept(Date, 'now', { value: () => now })
  t.intercept(Math, 'random', { value: () => 0.5 })
  const a = newEpoch()
  now++
  const b = newEpoch()
  t.not(a, b)
  t.equal(a.length, b.length)
})

// An epoch names one history: two histories (two plugin instances or
// processes started together) must not share one, or an id of one would
// resume the other at the wrong place. With a random tail of 36^4 values,
// epochs made in the same millisecond collided by the birthday bound
// (measured: 84 duplicates in 20 runs of 10,000 calls); the tail is 36^8 now.
t.test('newEpoch: 100,000 calls in a row give 100,000 distinct epochs', async t => {
  const seen = new Set<string>()
  let duplicates = 0
  for (let i = 0; i < 100_000; i++) {
    const e = newEpoch()
    if (seen.has(e)) duplicates++
    seen.add(e)
  }
  t.equal(duplicates, 0, 'no epoch made twice')
})
