/**
 * a seeded round-trip fuzz of the encoder against eventsource-parser, an
 * independent parser. Every random message is either refused with a coded
 * error it deserves, or recovered exactly by the parser, modulo the two
 * documented lossy steps (CR and CRLF arrive as LF; lone surrogates as
 * U+FFFD), with no extra events, ids, retries or comments.
 *
 * The run is deterministic: the seed is printed, and FUZZ_SEED=<n> replays
 * (or, with a new number, varies) it; FUZZ_SEED=random picks one.
 *
 * Per-case results are collected and reported once at the end rather than as
 * one tap assertion each, so 10,000 cases stay fast and a failure names its
 * case index for replay.
 */
import t from 'tap'
import { createParser, type EventSourceMessage, type EventSourceParser } from 'eventsource-parser'
import { TextDecoder } from 'node:util'
import { encode, frameText, type SseMessage } from '../lib/encoder.js'
import { heavySuite } from './helpers/heavy.js'
import { prng } from './helpers/prng.js'

await heavySuite()

const FIELD_INVALID = 'FST_ERR_SSEHUB_FIELD_INVALID'
const RETRY_INVALID = 'FST_ERR_SSEHUB_RETRY_INVALID'
const EVENT_INVALID = 'FST_ERR_SSEHUB_EVENT_INVALID'
const TOO_LARGE = 'FST_ERR_SSEHUB_EVENT_TOO_LARGE'

const TOTAL_CASES = 10_080
// Every 280th case is a big one: 36 of them, spread over the run so they land
// in the long-lived parser between ordinary events too.
const BIG_EVERY = 280
const MIN_CASES = 10_000
const MIN_BIG = 30
const MiB = 1024 * 1024
const DEFAULT_LIMIT = 4 * MiB

const SEED = parseSeed(process.env.FUZZ_SEED)

function parseSeed (value: string | undefined): number {
  if (value === undefined || value === '') return 0x5ee5eed4
  if (value === 'random') return Math.floor(Math.random() * 2 ** 32) >>> 0
  const n = Number(value)
  if (!Number.isFinite(n)) throw new Error(`FUZZ_SEED must be a number or "random", got ${value}`)
  return n >>> 0
}

const rnd = prng(SEED)
const int = (n: number): number => Math.floor(rnd() * n)
const chance = (p: number): boolean => rnd() < p
const pick = <T>(items: readonly T[]): T => items[int(items.length)]

const LINE_BREAKS = ['\r', '\n', '\r\n', '\n\r', '\r\r', '\n\n', '\r\n\r\n'] as const
const HOSTILE = [
  '\0', '\uFEFF', '\uD800', '\uDFFF', '\uDBFF', '\uDC00', '\uD83D', '\uDE00',
  ':', ': ', ' ', '  ', 'data:', 'data: ', 'id:', 'id: 9', 'event:', 'event: admin',
  'retry:', 'retry: 1', 'Data:', ' data:', '\t', '\u2028', '\u0085', '\v', '\f',
  '\x7f', '\x1b', '"', '\\', '{}', '😀', '👍🏽', '🏳️‍🌈', '中文', '漢字テスト', '한',
  'é', 'e\u0301', '€', '\uFFFD', '\uFFFF'
] as const
const PLAIN = ['a', 'b', 'x', 'hello', '0', '42', '-', '_', '.', 'Z'] as const
// Starts that matter because they would be special at column 0.
const LEADERS = ['\uFEFF', ':', ' ', 'data:', 'id:', 'event:', 'retry:', '\r', '\n', '\0'] as const
const BREAK = /[\r\n\0]/

/**
 * A random string of up to `maxTokens` tokens. `breaks` allows CR, LF and NUL;
 * without it the string is a legal id, event name or comment.
 */
function str (maxTokens: number, breaks: boolean): string {
  let out = ''
  if (chance(0.2)) out += pick(LEADERS)
  const n = int(maxTokens + 1)
  for (let i = 0; i < n; i++) {
    const r = rnd()
    if (breaks && r < 0.15) out += pick(LINE_BREAKS)
    else if (r < 0.55) out += pick(HOSTILE)
    else if (r < 0.6) out += String.fromCharCode(int(0x10000))
    else out += pick(PLAIN)
  }
  if (!breaks) out = out.replace(/[\r\n\0]/g, '')
  return out
}

function jsonValue (depth: number): unknown {
  const r = rnd()
  if (depth <= 0 || r < 0.5) {
    return pick<() => unknown>([
      () => null,
      () => chance(0.5),
      () => int(2 ** 31) - 2 ** 30,
      () => rnd() * 1e6,
      () => pick([0, -0, 1e21, NaN, Infinity, 2 ** 53]),
      () => str(12, true)
    ])()
  }
  if (r < 0.75) return Array.from({ length: int(5) }, () => jsonValue(depth - 1))
  const obj: Record<string, unknown> = {}
  for (let i = int(5); i > 0; i--) obj[str(3, true)] = jsonValue(depth - 1)
  return obj
}

function unserialisable (): unknown {
  const circular: Record<string, unknown> = { a: 1 }
  circular.self = circular
  return pick<unknown>([10n, { n: 1n }, circular, () => 1, Symbol('s'), { toJSON: () => undefined }])
}

function genId (): unknown {
  const r = rnd()
  if (r < 0.35) return undefined
  if (r < 0.47) return pick([0, -0, 1, 7, -1, 1.5, 2 ** 53, 1e21, int(1e9)])
  if (r < 0.52) return ''
  if (r < 0.95) return str(10, false)
  if (r < 0.995) return str(8, true)
  return pick([null, {}, true])
}

function genEvent (): unknown {
  const r = rnd()
  if (r < 0.35) return undefined
  if (r < 0.42) return ''
  if (r < 0.95) return str(8, false)
  if (r < 0.995) return str(8, true)
  return pick([42, null])
}

function genComment (): unknown {
  const r = rnd()
  if (r < 0.75) return undefined
  if (r < 0.78) return ''
  if (r < 0.97) return str(10, false)
  if (r < 0.995) return str(8, true)
  return 7
}

const VALID_RETRIES = [0, -0, 1, 1000, 3000, 2 ** 31 - 1] as const
const INVALID_RETRIES = [-1, 1.5, NaN, Infinity, -Infinity, '100', 2 ** 31, 2 ** 53, null, ''] as const

function genRetry (): unknown {
  const r = rnd()
  if (r < 0.75) return undefined
  if (r < 0.85) return pick(VALID_RETRIES)
  if (r < 0.96) return int(2 ** 31)
  return pick(INVALID_RETRIES)
}

function genData (): unknown {
  const r = rnd()
  if (r < 0.07) return undefined
  if (r < 0.62) return str(chance(0.1) ? 400 : 40, true)
  if (r < 0.985) return jsonValue(3)
  return unserialisable()
}

// Blocks the >= 1 MiB payloads are stitched from: random enough to be hostile
// throughout, cheap enough that 36 megabyte payloads cost little to build.
const BLOCKS = Array.from({ length: 48 }, () => str(3000, true))

function bigString (): string {
  const target = MiB + int(MiB / 2)
  const parts: string[] = []
  let bytes = 0
  while (bytes < target + 64) {
    const block = pick(BLOCKS)
    parts.push(block, str(6, true))
    bytes += Buffer.byteLength(block)
  }
  return parts.join('')
}

type Limit = 'default' | 'exact' | 'one-under' | 'tiny' | 'utf16-under-utf8-over'

interface Case {
  message: unknown
  limit: Limit
  big: boolean
}

// Two in six big events are refused for size, one of them by a limit only
// the UTF-8 count catches; one is accepted at exactly its size.
const BIG_LIMITS: readonly Limit[] = ['utf16-under-utf8-over', 'exact', 'default', 'one-under', 'default', 'default']

function genCase (index: number): Case {
  if (index % BIG_EVERY === BIG_EVERY / 2) {
    const b = Math.floor(index / BIG_EVERY)
    // Big ones keep every field legal, so the only possible refusal is size.
    const message: Record<string, unknown> = {
      data: chance(0.7) ? bigString() : { blob: bigString(), more: jsonValue(2) }
    }
    if (chance(0.6)) message.event = str(6, false)
    if (chance(0.6)) message.id = chance(0.5) ? int(1e6) : str(6, false)
    if (chance(0.3)) message.retry = int(60000)
    if (chance(0.3)) message.comment = str(6, false)
    return { message, limit: BIG_LIMITS[b % BIG_LIMITS.length], big: true }
  }
  const r = rnd()
  let message: unknown
  if (r < 0.04) message = str(40, true)
  else if (r < 0.045) message = pick([null, undefined, 42, true, 0])
  else {
    const m: Record<string, unknown> = {}
    // Keys are set only when drawn, so "omitted" and "undefined" both occur.
    const comment = genComment()
    const event = genEvent()
    const id = genId()
    const retry = genRetry()
    const data = genData()
    if (comment !== undefined || chance(0.1)) m.comment = comment
    if (event !== undefined || chance(0.1)) m.event = event
    if (id !== undefined || chance(0.1)) m.id = id
    if (retry !== undefined || chance(0.1)) m.retry = retry
    if (data !== undefined || chance(0.1)) m.data = data
    message = m
  }
  const l = rnd()
  const limit: Limit = l < 0.03 ? 'exact' : l < 0.06 ? 'one-under' : l < 0.08 ? 'tiny' : l < 0.1 ? 'utf16-under-utf8-over' : 'default'
  return { message, limit, big: false }
}

/** The JSON text of `data`, or undefined when JSON has none (what the encoder must refuse). */
function jsonOf (data: unknown): string | undefined {
  try {
    return JSON.stringify(data)
  } catch {
    return undefined
  }
}

/**
 * The refusal codes `message` deserves on its fields alone, decided from the
 * spec rules rather than from the encoder. Size is added later, once known.
 */
function fieldRefusals (message: unknown): Set<string> {
  const codes = new Set<string>()
  if (typeof message === 'string') return codes
  if (message === null || typeof message !== 'object') return codes.add(EVENT_INVALID)
  const m = message as Record<string, unknown>
  const text = (value: unknown): void => {
    if (typeof value !== 'string') codes.add(EVENT_INVALID)
    else if (BREAK.test(value)) codes.add(FIELD_INVALID)
  }
  if (m.comment !== undefined) text(m.comment)
  if (m.event !== undefined && m.event !== '') text(m.event)
  if (m.id !== undefined) text(typeof m.id === 'number' ? String(m.id) : m.id)
  if (m.retry !== undefined) {
    const r = m.retry
    if (typeof r !== 'number' || !Number.isInteger(r) || r < 0 || r > 2 ** 31 - 1) codes.add(RETRY_INVALID)
  }
  if (m.data !== undefined && typeof m.data !== 'string' && jsonOf(m.data) === undefined) codes.add(EVENT_INVALID)
  return codes
}

/** What UTF-8 can carry of a JS string: lone surrogates become U+FFFD. */
const wellFormed = (s: string): string => Buffer.from(s, 'utf8').toString('utf8')
/** What SSE can carry of a payload string: additionally, CR and CRLF arrive as LF. */
const carried = (s: string): string => wellFormed(s).replace(/\r\n|\r/g, '\n')

interface Expected {
  events: EventSourceMessage[]
  retries: number[]
  comments: string[]
}

function expectationOf (message: SseMessage | string): Expected {
  if (typeof message === 'string') {
    return { events: [{ id: undefined, event: undefined, data: carried(message) }], retries: [], comments: [] }
  }
  const { comment, event, id, retry, data } = message
  const events: EventSourceMessage[] = []
  if (data !== undefined) {
    events.push({
      id: id === undefined ? undefined : wellFormed(String(id)),
      event: event === undefined || event === '' ? undefined : wellFormed(event),
      data: typeof data === 'string' ? carried(data) : JSON.stringify(data)
    })
  }
  return {
    events,
    retries: retry === undefined ? [] : [retry],
    comments: comment === undefined ? [] : [wellFormed(comment)]
  }
}

interface Sink {
  events: EventSourceMessage[]
  retries: number[]
  comments: string[]
  errors: string[]
}

const newSink = (): Sink => ({ events: [], retries: [], comments: [], errors: [] })

function parserInto (sink: Sink): EventSourceParser {
  return createParser({
    onEvent: e => { sink.events.push(e) },
    onRetry: r => { sink.retries.push(r) },
    onComment: c => { sink.comments.push(c) },
    onError: e => { sink.errors.push(e.message) }
  })
}

/** Feeds `bytes` in random pieces, split anywhere, even inside a UTF-8 sequence. */
function feedPieces (parser: EventSourceParser, decoder: TextDecoder, bytes: Buffer, maxPiece: number): number {
  let pieces = 0
  for (let at = 0; at < bytes.length; pieces++) {
    const n = 1 + int(maxPiece)
    parser.feed(decoder.decode(bytes.subarray(at, at + n), { stream: true }))
    at += n
  }
  return pieces
}

/** Why `bytes` is not a well-formed frame (W-01, W-03, W-11, W-12), or undefined. */
function frameProblem (bytes: Buffer): string | undefined {
  if (bytes.indexOf(0x0d) !== -1) return 'contains a CR byte'
  if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) return 'starts with a BOM'
  const text = bytes.toString('utf8')
  if (!text.endsWith('\n')) return 'does not end with LF'
  const lines = text.slice(0, -1).split('\n')
  if (lines[lines.length - 1] !== '') return 'does not end with a blank line'
  for (let i = 0; i < lines.length - 1; i++) {
    const line = lines[i]
    if (line === '') return `blank line ${i} before the end would dispatch early`
    if (!(line.startsWith('data: ') || line.startsWith('event: ') || line.startsWith('id: ') ||
      line.startsWith('retry: ') || line.startsWith(':'))) {
      return `line ${i} is not a known field: ${JSON.stringify(line.slice(0, 40))}`
    }
  }
  return undefined
}

function firstDifference (a: string, b: string): string {
  let i = 0
  while (i < a.length && i < b.length && a[i] === b[i]) i++
  return `lengths ${a.length}/${b.length}, first difference at ${i}: ` +
    `${JSON.stringify(a.slice(Math.max(0, i - 10), i + 10))} vs ${JSON.stringify(b.slice(Math.max(0, i - 10), i + 10))}`
}

/**
 * Escapes everything outside printable ASCII. Failure text goes into the TAP
 * stream, where a raw NEL, U+2028 or lone surrogate can break the line
 * structure and make tap silently lose the very assertion reporting it.
 */
function ascii (text: string): string {
  return text.replace(/[^\x20-\x7e]/g, c => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'))
}

function describe (value: unknown): string {
  let text: string
  try {
    text = JSON.stringify(value, (_k, v) => typeof v === 'bigint' ? `${v}n` : typeof v === 'function' ? '[function]' : typeof v === 'symbol' ? '[symbol]' : v)
  } catch {
    text = '[circular]'
  }
  return text === undefined ? String(value) : text.length > 300 ? text.slice(0, 300) + `… (${text.length} chars)` : text
}

interface Stats {
  cases: number
  accepted: number
  refused: Record<string, number>
  big: number
  bigAccepted: number
  bigRefused: number
  utf16UnderUtf8Over: number
  dispatched: number
  inPieces: number
  shared: number
  coverage: Record<string, number>
  failures: string[]
}

// Hostile shapes the accepted payloads must have covered, so the alphabet
// cannot quietly stop producing them.
const COVERAGE: Record<string, RegExp> = {
  'lone CR': /\r(?!\n)/,
  CRLF: /\r\n/,
  'LF then CR': /\n\r/,
  NUL: /\0/,
  'leading U+FEFF': /^\uFEFF/,
  'lone surrogate': /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/,
  ': at line start': /(^|[\r\n]):/,
  'field name at line start': /(^|[\r\n])(data|id|event|retry):/,
  'leading space': /^ /,
  'only a line break': /^(\r\n|\r|\n)$/,
  empty: /^$/
}

function run (): Stats {
  const stats: Stats = {
    cases: 0,
    accepted: 0,
    refused: {},
    big: 0,
    bigAccepted: 0,
    bigRefused: 0,
    utf16UnderUtf8Over: 0,
    dispatched: 0,
    inPieces: 0,
    shared: 0,
    coverage: Object.fromEntries(Object.keys(COVERAGE).map(k => [k, 0])),
    failures: []
  }

  // One parser for the life of the run, opened like a real stream, so every
  // case it gets follows the frames of earlier ones.
  const sharedSink = newSink()
  const sharedParser = parserInto(sharedSink)
  const sharedDecoder = new TextDecoder()
  sharedParser.feed(sharedDecoder.decode(Buffer.from('retry: 3000\n\n'), { stream: true }))
  if (sharedSink.retries.length !== 1 || sharedSink.retries[0] !== 3000) stats.failures.push('the stream opening did not report retry 3000')

  for (let index = 0; index < TOTAL_CASES; index++) {
    const { message, limit, big } = genCase(index)
    stats.cases++
    const fail = (why: string): void => {
      stats.failures.push(ascii(`case ${index} (FUZZ_SEED=${SEED}): ${why}; message ${describe(message)}`))
    }

    const deserved = fieldRefusals(message)
    let full: Buffer | undefined
    if (deserved.size === 0) {
      try {
        full = encode(message as SseMessage, Number.MAX_SAFE_INTEGER)
      } catch (err) {
        fail(`a legal message was refused with no size limit: ${(err as Error & { code?: string }).code ?? (err as Error).message}`)
        continue
      }
    }

    let maxBytes = DEFAULT_LIMIT
    if (full !== undefined) {
      if (limit === 'exact') maxBytes = full.length
      else if (limit === 'one-under') maxBytes = full.length - 1
      else if (limit === 'tiny') maxBytes = int(64)
      else if (limit === 'utf16-under-utf8-over') {
        const units = frameText(message as SseMessage).length
        // Only possible when UTF-8 needs at least two bytes more than UTF-16 units.
        if (full.length - units >= 2) {
          maxBytes = units + Math.floor((full.length - units) / 2)
          stats.utf16UnderUtf8Over++
        }
      }
      if (full.length > maxBytes) deserved.add(TOO_LARGE)
    }

    const payload = message !== null && typeof message === 'object' ? (message as SseMessage).data : message
    const payloadText = typeof payload === 'string' ? payload : payload === undefined ? undefined : jsonOf(payload)
    const isBig = payloadText !== undefined && Buffer.byteLength(payloadText) >= MiB
    if (big && !isBig) fail('a big case came out under 1 MiB')
    if (isBig) stats.big++

    let bytes: Buffer
    try {
      bytes = encode(message as SseMessage, maxBytes)
    } catch (err) {
      const code = (err as Error & { code?: string }).code
      if (code === undefined || !deserved.has(code)) {
        fail(`refused with ${code ?? (err as Error).message}, expected ${deserved.size === 0 ? 'acceptance' : [...deserved].join(' or ')}`)
      }
      stats.refused[code ?? 'uncoded'] = (stats.refused[code ?? 'uncoded'] ?? 0) + 1
      if (isBig) stats.bigRefused++
      continue
    }
    if (deserved.size > 0) {
      fail(`accepted, but it deserved ${[...deserved].join(' or ')} (maxBytes ${maxBytes}, ${bytes.length} bytes)`)
      continue
    }
    stats.accepted++
    if (isBig) stats.bigAccepted++
    if (full !== undefined && !bytes.equals(full)) fail('the bytes depend on maxBytes')

    const problem = frameProblem(bytes)
    if (problem !== undefined) fail(`malformed frame: ${problem}`)

    if (typeof payload === 'string') {
      for (const [name, re] of Object.entries(COVERAGE)) if (re.test(payload)) stats.coverage[name]++
    }

    let sink: Sink
    const pieces = chance(0.4)
    const maxPiece = big ? 128 * 1024 : 24
    if (chance(0.5)) {
      stats.shared++
      sink = sharedSink
      sink.events.length = sink.retries.length = sink.comments.length = sink.errors.length = 0
      if (pieces) feedPieces(sharedParser, sharedDecoder, bytes, maxPiece)
      else sharedParser.feed(sharedDecoder.decode(bytes, { stream: true }))
    } else {
      sink = newSink()
      const parser = parserInto(sink)
      if (pieces) {
        const decoder = new TextDecoder()
        feedPieces(parser, decoder, bytes, maxPiece)
        const rest = decoder.decode()
        if (rest !== '') fail(`the frame ended inside a UTF-8 sequence (${JSON.stringify(rest)} left)`)
      } else {
        parser.feed(new TextDecoder().decode(bytes))
      }
    }
    if (pieces) stats.inPieces++

    const expected = expectationOf(message as SseMessage | string)
    stats.dispatched += sink.events.length
    if (sink.errors.length > 0) fail(`parser reported ${sink.errors.join('; ')}`)
    if (sink.events.length !== expected.events.length) {
      fail(`${sink.events.length} events dispatched, expected ${expected.events.length}`)
    } else {
      for (let i = 0; i < expected.events.length; i++) {
        const got = sink.events[i]
        const want = expected.events[i]
        if (got.event !== want.event) fail(`event ${JSON.stringify(got.event)}, expected ${JSON.stringify(want.event)}`)
        if (got.id !== want.id) fail(`id ${JSON.stringify(got.id)}, expected ${JSON.stringify(want.id)}`)
        if (got.data !== want.data) fail(`data differs: ${firstDifference(got.data, want.data)}`)
      }
    }
    if (sink.retries.length !== expected.retries.length || sink.retries.some((r, i) => r !== expected.retries[i])) {
      fail(`retries ${JSON.stringify(sink.retries)}, expected ${JSON.stringify(expected.retries)}`)
    }
    if (sink.comments.length !== expected.comments.length || sink.comments.some((c, i) => c !== expected.comments[i])) {
      fail(`comments ${JSON.stringify(sink.comments)}, expected ${JSON.stringify(expected.comments)}`)
    }
  }

  // Nothing half-decoded may be left between frames in the long-lived stream.
  if (sharedDecoder.decode() !== '') stats.failures.push('the shared stream ended inside a UTF-8 sequence')
  return stats
}

t.comment(`FUZZ_SEED=${SEED} (set FUZZ_SEED=<n> to replay, FUZZ_SEED=random for a new one)`)

let stats: Stats | undefined

t.test('every random message round-trips through eventsource-parser or is refused with a code it deserves', async t => {
  const started = performance.now()
  stats = run()
  t.comment(`${stats.cases} cases in ${Math.round(performance.now() - started)} ms: ` +
    `${stats.accepted} accepted (${stats.dispatched} events dispatched), refused ${JSON.stringify(stats.refused)}; ` +
    `${stats.big} with data >= 1 MiB (${stats.bigAccepted} accepted, ${stats.bigRefused} refused); ` +
    `${stats.inPieces} fed in pieces, ${stats.shared} through the long-lived parser`)
  for (const failure of stats.failures.slice(0, 20)) t.fail(failure)
  t.equal(stats.failures.length, 0, 'no case failed')
})

t.test('the run covered what it claims', async t => {
  if (stats === undefined) return t.fail('the fuzz run did not complete')
  t.ok(stats.cases >= MIN_CASES, `at least ${MIN_CASES} cases (${stats.cases})`)
  t.ok(stats.big >= MIN_BIG, `at least ${MIN_BIG} cases with data >= 1 MiB (${stats.big})`)
  t.ok(stats.bigAccepted >= 20, `big events round-tripped (${stats.bigAccepted})`)
  t.ok(stats.bigRefused >= 6, `big events refused for size (${stats.bigRefused})`)
  t.ok(stats.accepted >= stats.cases * 0.6, `most cases reach the parser (${stats.accepted})`)
  for (const code of [FIELD_INVALID, RETRY_INVALID, EVENT_INVALID, TOO_LARGE]) {
    t.ok((stats.refused[code] ?? 0) >= 10, `${code} was exercised (${stats.refused[code] ?? 0})`)
  }
  t.ok(stats.utf16UnderUtf8Over >= 10, `limits between the UTF-16 length and the UTF-8 size were exercised (${stats.utf16UnderUtf8Over})`)
  t.ok(stats.inPieces >= 1000, `fed in random pieces (${stats.inPieces})`)
  t.ok(stats.shared >= 1000, `fed through the long-lived parser (${stats.shared})`)
  for (const [name, count] of Object.entries(stats.coverage)) {
    t.ok(count >= 5, `accepted string payloads included: ${name} (${count})`)
  }
})
