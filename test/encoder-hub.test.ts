/**
 * Hub event frames and packets (the publish path of issue 15): a packet
 * written the moment an event is published has exactly the bytes of the
 * batched path; a frame let go after its turn is rebuilt identical; the
 * size check skips the UTF-8 scan only where the answer cannot change.
 */
import t from 'tap'
import type { HubEvent } from '../lib/backend.js'
import { dropFrame, eventFrame, eventPacket, eventsPacket, framedSize, oversize } from '../lib/encoder.js'

const ev = (data: string, seq = 7): HubEvent => ({ id: `e-${seq}`, seq, topic: 't', channel: 'c', event: 'msg', data })

t.test('eventPacket: golden bytes, the same as eventsPacket of one, body a view of chunk', async t => {
  const data = JSON.stringify({ s: 'é\u2028😀' })
  const frame = `event: msg\nid: e-7\ndata: ${data}\n\n`
  const bytes = Buffer.byteLength(frame)
  const p = eventPacket(ev(data))
  t.equal(p.chunk.toString(), `${bytes.toString(16)}\r\n${frame}\r\n`)
  t.ok(p.chunk.equals(eventsPacket([ev(data)]).chunk), 'same bytes as the batched path')
  t.equal(p.body.toString(), frame)
  t.equal(p.body.buffer, p.chunk.buffer, 'body shares memory with chunk')
  t.equal(p.body, p.body, 'one view, made once')
  const framed = ev(data)
  const cached = eventFrame(framed)
  t.ok(eventPacket(framed).body.equals(cached), 'an event already framed is packed from its frame')
})

t.test('dropFrame: the frame is let go, and built again identical', async t => {
  const e = ev('{"n":1}')
  const first = eventFrame(e)
  t.equal(eventFrame(e), first, 'cached')
  dropFrame(e)
  const again = eventFrame(e)
  t.not(again, first, 'a new buffer after dropFrame')
  t.ok(again.equals(first), 'with the same bytes')
  t.same(Object.keys(e), ['id', 'seq', 'topic', 'channel', 'event', 'data'], 'no visible property added')
})

t.test('oversize: 0 when the framed event fits, its framedSize when not, multi-byte text counted exactly', async t => {
  const ascii = 'x'.repeat(100)
  t.equal(oversize('msg', ascii, 10_000), 0, 'far below: no scan needed')
  t.equal(oversize('msg', ascii, framedSize('msg', ascii)), 0, 'exactly at the limit fits')
  t.equal(oversize('msg', ascii, framedSize('msg', ascii) - 1), framedSize('msg', ascii), 'one byte over')
  const wide = '😀'.repeat(50) // 100 UTF-16 units, 200 UTF-8 bytes
  const size = framedSize('msg', wide)
  t.equal(size, 200 + 3 + 96)
  t.equal(oversize('msg', wide, size), 0, 'within 3 bytes per unit of the limit: scanned, fits')
  t.equal(oversize('msg', wide, size - 1), size, 'and one byte over is refused')
  const cjk = '中'.repeat(100) // 3 UTF-8 bytes per unit: the worst case
  t.equal(oversize('msg', cjk, framedSize('msg', cjk)), 0)
  t.equal(oversize('msg', cjk, framedSize('msg', cjk) - 1), framedSize('msg', cjk))
})
