/**
 * Golden-byte tests of the SSE framing (checklist W-01..W-13). The expected
 * bytes are written out by hand from the spec, not derived from the encoder,
 * so a change in framing shows up here as a byte diff.
 */
import t, { type Test } from 'tap'
import {
  encode,
  frameText,
  commentText,
  dataLines,
  packetOf,
  packet,
  type SseMessage
} from '../lib/encoder.js'

const MAX = 1024 * 1024

/** The bytes `encode` produces, as a string, for comparing against a golden literal. */
function wire (message: SseMessage | string, maxBytes = MAX): string {
  return encode(message, maxBytes).toString('utf8')
}

/** Invalid inputs are built through this so the tests can hand the encoder what TypeScript would refuse. */
function bad (value: unknown): SseMessage {
  return value as SseMessage
}

/**
 * Structural rules every frame must obey whatever its content: LF only
 * (W-03), every line a lowercase known field with one space or a comment
 * (W-01), exactly one blank line and it is the last one (W-12), no BOM at the
 * start (W-11).
 */
function assertWellFormed (t: Test, bytes: Buffer): void {
  t.equal(bytes.indexOf(0x0d), -1, 'no CR byte anywhere')
  t.not(bytes.subarray(0, 3).toString('hex'), 'efbbbf', 'does not start with a BOM')
  const text = bytes.toString('utf8')
  t.ok(text.endsWith('\n'), 'ends with LF')
  const lines = text.slice(0, -1).split('\n')
  t.equal(lines[lines.length - 1], '', 'the last line is blank')
  const fieldLines = lines.slice(0, -1)
  for (const line of fieldLines) {
    t.match(line, /^(?:(?:data|event|id|retry): |:)/, `line ${JSON.stringify(line.slice(0, 20))} is a known field or a comment`)
  }
}

t.test('a data-only event is one data line and a blank line', async t => {
  t.equal(wire({ data: 'x' }), 'data: x\n\n')
  t.equal(wire('x'), 'data: x\n\n', 'a string message is its data')
  t.equal(frameText({ data: 'x' }), 'data: x\n\n')
})

t.test('fields come in the order comment, event, id, retry, data whatever the key order', async t => {
  const expected = ': note\nevent: update\nid: 42\nretry: 1500\ndata: {"a":1}\n\n'
  t.equal(wire({ comment: 'note', event: 'update', id: 42, retry: 1500, data: { a: 1 } }), expected)
  t.equal(wire({ data: { a: 1 }, retry: 1500, id: 42, event: 'update', comment: 'note' }), expected)
  assertWellFormed(t, encode({ data: { a: 1 }, retry: 1500, id: 42, event: 'update', comment: 'note' }, MAX))
})

t.test('each field alone', async t => {
  t.equal(wire({ event: 'ping' }), 'event: ping\n\n', 'no data: the browser dispatches nothing (W-13)')
  t.equal(wire({ id: 'abc' }), 'id: abc\n\n')
  t.equal(wire({ retry: 2500 }), 'retry: 2500\n\n')
  t.equal(wire({ comment: 'hi' }), ': hi\n\n')
  t.equal(wire({ event: 'e', data: 'd' }), 'event: e\ndata: d\n\n')
  t.equal(wire({ id: 'i', data: 'd' }), 'id: i\ndata: d\n\n')
  t.equal(wire({ retry: 10, data: 'd' }), 'retry: 10\ndata: d\n\n')
  t.equal(wire({ comment: 'c', data: 'd' }), ': c\ndata: d\n\n')
})

t.test('ids (W-06, W-13)', async t => {
  t.equal(wire({ id: 0, data: 'x' }), 'id: 0\ndata: x\n\n', 'numeric 0 is written, not dropped as falsy')
  t.equal(wire({ id: '0', data: 'x' }), 'id: 0\ndata: x\n\n')
  t.equal(wire({ id: '', data: 'x' }), 'id: \ndata: x\n\n', 'an empty id is written so it resets the last id')
  t.equal(wire({ id: '' }), 'id: \n\n')
  t.equal(wire({ id: 17 }), 'id: 17\n\n')
  t.equal(wire({ id: -0 }), 'id: 0\n\n', 'no sign for negative zero')
  t.equal(wire({ id: ' padded ' }), 'id:  padded \n\n', 'surrounding spaces survive the one-space strip')
  t.equal(wire({ id: 'a:b' }), 'id: a:b\n\n')
})

t.test('event names (W-07)', async t => {
  t.equal(wire({ event: '', data: 'x' }), 'data: x\n\n', 'an empty name is the default and writes no line')
  t.equal(wire({ event: undefined, data: 'x' }), 'data: x\n\n')
  t.equal(wire({ data: 'x' }), 'data: x\n\n')
  t.equal(wire({ event: 'Update', data: 'x' }), 'event: Update\ndata: x\n\n', 'case is kept')
  t.equal(wire({ event: ' e', data: 'x' }), 'event:  e\ndata: x\n\n')
})

t.test('retry (W-08)', async t => {
  t.equal(wire({ retry: 0 }), 'retry: 0\n\n')
  t.equal(wire({ retry: 2 ** 31 - 1 }), 'retry: 2147483647\n\n')
  t.equal(wire({ retry: -0 }), 'retry: 0\n\n', 'digits only, no sign')
  t.equal(wire({ retry: 1e3 }), 'retry: 1000\n\n', 'no exponent form')
})

t.test('comments (W-09)', async t => {
  t.equal(commentText(''), ':\n')
  t.equal(commentText('ping'), ': ping\n')
  t.equal(commentText(' x'), ':  x\n', 'a leading space survives the one-space strip')
  t.equal(commentText('data: not a field'), ': data: not a field\n')
  t.equal(wire({ comment: '' }), ':\n\n', 'a bare heartbeat')
  t.equal(wire({ comment: '', data: 'x' }), ':\ndata: x\n\n')
})

t.test('data values (W-02, W-04, W-05, W-13)', async t => {
  t.equal(wire({ data: ' x' }), 'data:  x\n\n', 'the leading space survives the parser removing exactly one')
  t.equal(wire({ data: '  ' }), 'data:   \n\n')
  t.equal(wire({ data: '' }), 'data: \n\n', 'empty data still dispatches, so the line is written')
  t.equal(wire(''), 'data: \n\n')
  t.equal(wire({ data: 'x ' }), 'data: x \n\n', 'trailing space kept')
  t.equal(wire({ data: ':x' }), 'data: :x\n\n')
  t.equal(wire({ data: 'data: y' }), 'data: data: y\n\n')
  t.equal(wire({ data: 'a\0b' }), 'data: a\0b\n\n', 'NUL in data is passed through')
})

t.test('non-string data is JSON, string data as is', async t => {
  t.equal(wire({ data: { a: 1, b: [true, null] } }), 'data: {"a":1,"b":[true,null]}\n\n')
  t.equal(wire({ data: [1, 'two'] }), 'data: [1,"two"]\n\n')
  t.equal(wire({ data: 42 }), 'data: 42\n\n')
  t.equal(wire({ data: 0 }), 'data: 0\n\n')
  t.equal(wire({ data: false }), 'data: false\n\n')
  t.equal(wire({ data: null }), 'data: null\n\n', 'null is JSON, not "no data"')
  t.equal(wire({ data: '42' }), 'data: 42\n\n')
  t.equal(wire({ data: '"q"' }), 'data: "q"\n\n', 'a string is not JSON-quoted')
  t.equal(wire({ data: { s: 'a\r\nb' } }), 'data: {"s":"a\\r\\nb"}\n\n', 'JSON escapes line breaks, so one line and lossless')
  t.equal(wire({ data: { toJSON: () => 'custom' } }), 'data: "custom"\n\n', 'toJSON is honoured')
  t.equal(wire({ data: new Date(0) }), 'data: "1970-01-01T00:00:00.000Z"\n\n')
})

t.test('multi-line data: CR, LF and CRLF each end a line (W-04, W-05)', async t => {
  const cases: Array<[string, string]> = [
    ['a\nb', 'data: a\ndata: b\n\n'],
    ['a\rb', 'data: a\ndata: b\n\n'],
    ['a\r\nb', 'data: a\ndata: b\n\n'],
    ['a\n\rb', 'data: a\ndata: \ndata: b\n\n'],
    ['a\r\rb', 'data: a\ndata: \ndata: b\n\n'],
    ['a\n\nb', 'data: a\ndata: \ndata: b\n\n'],
    ['\r', 'data: \ndata: \n\n'],
    ['\n', 'data: \ndata: \n\n'],
    ['\r\n', 'data: \ndata: \n\n'],
    ['a\n', 'data: a\ndata: \n\n'],
    ['\na', 'data: \ndata: a\n\n'],
    ['\r\n\r\n', 'data: \ndata: \ndata: \n\n'],
    ['x\revent: admin', 'data: x\ndata: event: admin\n\n'],
    ['x\nid: 1\n\ndata: y', 'data: x\ndata: id: 1\ndata: \ndata: data: y\n\n'],
    [' a\n b', 'data:  a\ndata:  b\n\n']
  ]
  for (const [data, expected] of cases) {
    t.equal(wire({ data }), expected, JSON.stringify(data))
    assertWellFormed(t, encode({ data }, MAX))
  }
})

t.test('dataLines on its own', async t => {
  t.equal(dataLines(''), 'data: \n')
  t.equal(dataLines('x'), 'data: x\n')
  t.equal(dataLines('a\rb'), 'data: a\ndata: b\n')
  t.equal(dataLines('a\r\nb'), 'data: a\ndata: b\n')
  t.equal(dataLines('a\n\rb'), 'data: a\ndata: \ndata: b\n')
  t.equal(dataLines('\r'), 'data: \ndata: \n')
})

t.test('frameText and encode agree', async t => {
  const message: SseMessage = { comment: 'c', event: 'e', id: 1, retry: 2, data: 'a\rb' }
  t.equal(frameText(message), ': c\nevent: e\nid: 1\nretry: 2\ndata: a\ndata: b\n\n')
  t.equal(wire(message), frameText(message))
  t.equal(frameText('p\nq'), 'data: p\ndata: q\n\n')
})

t.test('UTF-8 output (W-10, W-11, W-15)', async t => {
  t.same([...encode({ data: '€' }, MAX)], [...Buffer.from('data: '), 0xe2, 0x82, 0xac, 0x0a, 0x0a])
  t.same([...encode({ data: '😀' }, MAX)], [...Buffer.from('data: '), 0xf0, 0x9f, 0x98, 0x80, 0x0a, 0x0a])
  t.equal(wire({ data: '中文', event: '事件', id: 'ü' }), 'event: 事件\nid: ü\ndata: 中文\n\n')
  t.same([...encode({ data: '\uD800' }, MAX)], [...Buffer.from('data: '), 0xef, 0xbf, 0xbd, 0x0a, 0x0a], 'a lone surrogate becomes U+FFFD')
  t.same([...encode({ data: '\uDFFFx' }, MAX)], [...Buffer.from('data: '), 0xef, 0xbf, 0xbd, 0x78, 0x0a, 0x0a])
  const bom = encode({ data: '\uFEFFx' }, MAX)
  t.equal(bom.toString('hex'), Buffer.from('data: ').toString('hex') + 'efbbbf' + '780a0a', 'a leading U+FEFF in data sits after "data: ", never at column 0')
  assertWellFormed(t, bom)
})

t.test('never a Data: or indented field line (W-01)', async t => {
  const messages: Array<SseMessage | string> = [
    { data: 'Data: x\n data: y\r Data:z' },
    { event: 'Data', id: ' data:', comment: 'Data:', data: '\n\n' },
    'x\r\n data: y',
    { data: { 'Data:': '\n data:' } }
  ]
  for (const message of messages) {
    const text = wire(message)
    t.notMatch(text, /(^|\n)(Data|DATA|Event|Id|ID|Retry):/, 'no capitalised field names at column 0')
    t.notMatch(text, /(^|\n)[ \t]/, 'no line starts with whitespace')
    assertWellFormed(t, encode(message, MAX))
  }
})

t.test('id, event and comment with CR, LF or NUL are refused (W-06, W-07, W-09)', async t => {
  for (const breaker of ['\n', '\r', '\0', '\r\n']) {
    for (const value of [breaker, 'a' + breaker, breaker + 'a', 'a' + breaker + 'b']) {
      const label = JSON.stringify(value)
      t.throws(() => encode({ id: value, data: 'x' }, MAX), { code: 'FST_ERR_SSEHUB_FIELD_INVALID' }, `id ${label}`)
      t.throws(() => encode({ event: value, data: 'x' }, MAX), { code: 'FST_ERR_SSEHUB_FIELD_INVALID' }, `event ${label}`)
      t.throws(() => encode({ comment: value, data: 'x' }, MAX), { code: 'FST_ERR_SSEHUB_FIELD_INVALID' }, `comment ${label}`)
      t.throws(() => commentText(value), { code: 'FST_ERR_SSEHUB_FIELD_INVALID' }, `commentText ${label}`)
      t.throws(() => frameText({ id: value }), { code: 'FST_ERR_SSEHUB_FIELD_INVALID' }, `frameText id ${label}`)
    }
  }
  const err = t.throws(() => encode({ id: 'a\nb' }, MAX)) as Error & { statusCode?: number }
  t.ok(err instanceof TypeError)
  t.match(err.message, /an event id must not contain CR, LF or NUL/)
})

t.test('a retry that is not a whole number of ms in range is refused (W-08)', async t => {
  const values: unknown[] = [-1, 1.5, 0.1, NaN, Infinity, -Infinity, '100', 2 ** 31, 2 ** 53, null, true, 10n]
  for (const retry of values) {
    t.throws(() => encode(bad({ retry, data: 'x' }), MAX), { code: 'FST_ERR_SSEHUB_RETRY_INVALID' }, `retry ${typeof retry === 'string' ? JSON.stringify(retry) : typeof retry === 'bigint' ? `${retry}n` : String(retry)}`)
  }
})

t.test('data JSON cannot serialise is refused', async t => {
  const circular: Record<string, unknown> = {}
  circular.self = circular
  const values: Array<[string, unknown]> = [
    ['a BigInt', 10n],
    ['an object holding a BigInt', { n: 1n }],
    ['a circular object', circular],
    ['a function', () => 1],
    ['a symbol', Symbol('s')],
    ['a toJSON returning undefined', { toJSON: () => undefined }]
  ]
  for (const [what, data] of values) {
    t.throws(() => encode(bad({ data }), MAX), { code: 'FST_ERR_SSEHUB_EVENT_INVALID' }, what)
  }
})

t.test('messages that are neither an object nor a string are refused', async t => {
  for (const message of [null, undefined, 42, 0, true, 10n, Symbol('m')]) {
    t.throws(() => encode(bad(message), MAX), { code: 'FST_ERR_SSEHUB_EVENT_INVALID' }, typeof message === 'symbol' ? 'symbol' : String(message))
  }
})

t.test('fields of the wrong type are refused, not coerced', async t => {
  t.throws(() => encode(bad({ event: 42, data: 'x' }), MAX), { code: 'FST_ERR_SSEHUB_EVENT_INVALID' })
  t.throws(() => encode(bad({ event: null, data: 'x' }), MAX), { code: 'FST_ERR_SSEHUB_EVENT_INVALID' })
  t.throws(() => encode(bad({ id: {}, data: 'x' }), MAX), { code: 'FST_ERR_SSEHUB_EVENT_INVALID' })
  t.throws(() => encode(bad({ id: null, data: 'x' }), MAX), { code: 'FST_ERR_SSEHUB_EVENT_INVALID' })
  t.throws(() => encode(bad({ comment: 1, data: 'x' }), MAX), { code: 'FST_ERR_SSEHUB_EVENT_INVALID' })
  t.throws(() => commentText(bad(1) as unknown as string), { code: 'FST_ERR_SSEHUB_EVENT_INVALID' })
})

t.test('events over maxBytes are refused (size counted in UTF-8 bytes once framed)', async t => {
  // 'data: ' + 10 + '\n\n' = 18 bytes
  const ten = { data: 'x'.repeat(10) }
  t.equal(encode(ten, 18).length, 18, 'exactly at the limit is allowed')
  t.throws(() => encode(ten, 17), { code: 'FST_ERR_SSEHUB_EVENT_TOO_LARGE' }, 'one byte over')
  const big = t.throws(() => encode({ data: 'x'.repeat(100) }, 50)) as Error & { code: string, statusCode: number }
  t.equal(big.code, 'FST_ERR_SSEHUB_EVENT_TOO_LARGE', 'UTF-16 length already over')
  t.match(big.message, /the event is 108 bytes once framed, over maxEventBytes \(50\)/)
  t.equal(big.statusCode, 413)
  t.ok(big instanceof RangeError)

  // 100 euro signs: the frame is 108 UTF-16 code units but 308 UTF-8 bytes, so
  // a limit between the two is only caught by counting bytes.
  const euros = { data: '€'.repeat(100) }
  t.equal(frameText(euros).length, 108)
  t.equal(encode(euros, 308).length, 308)
  const err = t.throws(() => encode(euros, 200)) as Error & { code: string }
  t.equal(err.code, 'FST_ERR_SSEHUB_EVENT_TOO_LARGE', 'UTF-16 length under, UTF-8 bytes over')
  t.match(err.message, /the event is 308 bytes once framed, over maxEventBytes \(200\)/)
  t.throws(() => encode(euros, 307), { code: 'FST_ERR_SSEHUB_EVENT_TOO_LARGE' })
  t.throws(() => encode({ data: '😀'.repeat(10) }, 30), { code: 'FST_ERR_SSEHUB_EVENT_TOO_LARGE' }, 'surrogate pairs: 28 code units, 48 bytes')

  // The limit covers the whole frame, not just the data.
  t.equal(encode({ event: 'e', id: '1', data: 'x' }, 24).length, 24)
  t.throws(() => encode({ event: 'e', id: '1', data: 'x' }, 23), { code: 'FST_ERR_SSEHUB_EVENT_TOO_LARGE' })
})

t.test('packetOf wraps frames as one HTTP/1.1 chunk', async t => {
  const a = encode({ event: 'a', data: 'one' }, MAX)
  const b = encode({ data: '€' }, MAX)
  const bytes = a.length + b.length
  const p = packetOf([a, b], bytes)
  const head = bytes.toString(16) + '\r\n'
  t.equal(p.chunk.toString('latin1'), head + Buffer.concat([a, b]).toString('latin1') + '\r\n')
  t.ok(p.body.equals(Buffer.concat([a, b])), 'body is exactly the frames back to back')
  t.equal(p.chunk.length, head.length + bytes + 2)

  t.equal(p.body.buffer, p.chunk.buffer, 'body shares memory with chunk')
  t.equal(p.body.byteOffset, p.chunk.byteOffset + head.length)
  t.equal(p.body.length, bytes)
  const at = head.length
  const before = p.body[0]
  p.chunk[at] = 0x21
  t.equal(p.body[0], 0x21, 'a write to chunk shows in body: a view, not a copy')
  p.chunk[at] = before
})

t.test('packetOf chunk sizes are lowercase hex', async t => {
  const frame = encode({ data: 'x'.repeat(4087) }, MAX) // 4095 bytes
  t.equal(frame.length, 0xfff)
  const p = packet(frame)
  t.equal(p.chunk.subarray(0, 5).toString('latin1'), 'fff\r\n')
  t.equal(p.chunk.subarray(-2).toString('latin1'), '\r\n')
  t.ok(p.body.equals(frame))

  // Larger than Buffer's pool, so the allocation path differs.
  const large = encode({ data: 'y'.repeat(70000) }, MAX)
  const q = packet(large)
  t.equal(q.chunk.toString('latin1', 0, q.chunk.indexOf('\r\n') + 2), large.length.toString(16) + '\r\n')
  t.ok(q.body.equals(large))
  t.equal(q.body.buffer, q.chunk.buffer)
  t.equal(q.chunk.length, large.length.toString(16).length + 2 + large.length + 2)
})

t.test('packet(frame) is packetOf([frame])', async t => {
  const frame = encode({ id: 0, data: 'z' }, MAX)
  const p = packet(frame)
  const q = packetOf([frame], frame.length)
  t.ok(p.chunk.equals(q.chunk))
  t.ok(p.body.equals(frame))
  t.equal(p.chunk.toString('latin1'), 'f\r\nid: 0\ndata: z\n\n\r\n')
})
