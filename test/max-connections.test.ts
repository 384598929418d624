// maxConnections: past it, a new stream is answered 200 text/event-stream
// with a jittered `retry:` (retry + random(0..shutdownJitter)) and ended at
// once, no events (a non-200 would make EventSource give up for good); it is
// counted as shed and openStreams never passes the limit. When a stream
// leaves, the next one is admitted.
import t from 'tap'
import { Type } from '@sinclair/typebox'
import { makeApp, SseClient } from './helpers/index.js'
import { closeClients, closedCount } from './helpers/closing.js'

const RETRY = 2_000
const SHUTDOWN_JITTER = 5_000
const Tick = Type.Object({ n: Type.Integer() })

t.test('three streams are admitted; the 4th..10th are told to retry later and ended at once', async t => {
  let ticker!: { publish: (e: 'tick', d: { n: number }) => Promise<string> }
  const { app, url, logs, untilLog } = await makeApp(t, app => {
    const ch = app.sse.channel('ticker', { events: { tick: Tick } })
    ticker = ch
    app.get('/s', (req, reply) => reply.sse({ subscribe: [ch] }))
  }, { plugin: { maxConnections: 3, retry: RETRY, retryJitter: 0, shutdownJitter: SHUTDOWN_JITTER } })

  const admitted: SseClient[] = []
  for (let i = 0; i < 3; i++) {
    const c = await SseClient.open(url + '/s')
    await c.until('head id', () => /^id: /m.test(c.text))
    admitted.push(c)
  }
  t.match(app.sse.stats(), { openStreams: 3, shed: 0 })

  // Seven more, all at once.
  const shed = await Promise.all(Array.from({ length: 7 }, () => SseClient.open(url + '/s')))
  const endings = await Promise.all(shed.map(c => c.waitEnd()))
  const lastRetries: number[] = []
  shed.forEach((c, i) => {
    t.equal(c.status, 200, `#${i + 4}: 200, so EventSource retries`)
    t.match(c.headers['content-type'], /^text\/event-stream/, `#${i + 4}: an event stream`)
    t.equal(endings[i], 'end', `#${i + 4}: a clean end of the body`)
    t.same(c.events, [], `#${i + 4}: no events`)
    t.notOk(/^(id|event|data):/m.test(c.text), `#${i + 4}: no id, event or data field at all`)
    t.ok(c.retries.length >= 1, `#${i + 4}: a retry: field`)
    t.ok(c.retries.every(r => r >= RETRY && r <= RETRY + SHUTDOWN_JITTER), `#${i + 4}: retries ${c.retries.join(', ')} within [${RETRY}, ${RETRY + SHUTDOWN_JITTER}]`)
    lastRetries.push(c.retries.at(-1) as number)
  })
  t.ok(new Set(lastRetries).size > 1, `the retry the clients adopt is jittered (${lastRetries.join(', ')})`)
  t.match(app.sse.stats(), { openStreams: 3, shed: 7 }, 'seven shed, three open')

  // The admitted three still work.
  const id = await ticker.publish('tick', { n: 1 })
  for (const c of admitted) await c.until('the tick', () => c.events.some(e => e.id === id))

  // One leaves: the next is admitted, and gets live events.
  await closeClients(logs, untilLog, admitted[0])
  t.equal(app.sse.stats().openStreams, 2, 'one left')
  const next = await SseClient.open(url + '/s')
  await next.until('head id', () => /^id: /m.test(next.text))
  const id2 = await ticker.publish('tick', { n: 2 })
  await next.until('the tick', () => next.events.some(e => e.id === id2))
  t.equal(next.ending, null, 'the newcomer stays open')
  t.match(app.sse.stats(), { openStreams: 3, shed: 7 })
  // And the one after it is shed again.
  const again = await SseClient.open(url + '/s')
  t.equal(await again.waitEnd(), 'end')
  t.same(again.events, [])
  t.match(app.sse.stats(), { openStreams: 3, shed: 8 })
  t.ok(closedCount(logs) >= 9, 'every shed stream was closed on the server')
  await closeClients(logs, untilLog, admitted[1], admitted[2], next)
})

t.test('the limit holds while authorize is still deciding (concurrent opens, async authorize)', async t => {
  const { app, url, logs, untilLog } = await makeApp(t, app => {
    const ch = app.sse.channel('ticker', {
      events: { tick: Tick },
      // A verdict that takes a while, as a database lookup would.
      authorize: () => new Promise<boolean>(resolve => setTimeout(() => resolve(true), 50))
    })
    app.get('/s', (req, reply) => reply.sse({ subscribe: [ch] }))
  }, { plugin: { maxConnections: 3, retry: RETRY, retryJitter: 0, shutdownJitter: SHUTDOWN_JITTER } })
  let maxOpen = 0
  const clients = await Promise.all(Array.from({ length: 10 }, () => SseClient.open(url + '/s').then(c => {
    maxOpen = Math.max(maxOpen, app.sse.stats().openStreams)
    return c
  })))
  // Each is either admitted (gets the head id) or shed (ends).
  await Promise.all(clients.map(c => c.until('admitted or shed', () => c.ending !== null || /^id: /m.test(c.text))))
  const stats = app.sse.stats()
  maxOpen = Math.max(maxOpen, stats.openStreams)
  const open = clients.filter(c => c.ending === null)
  t.ok(maxOpen <= 3, `openStreams never passed 3 (peak ${maxOpen})`)
  t.equal(open.length, 3, `three admitted (got ${open.length})`)
  t.equal(stats.shed, 7, `seven shed (got ${stats.shed})`)
  await closeClients(logs, untilLog, ...open)
})
