// Resume time: a client reconnects with Last-Event-ID after missing N events
// (~100-byte JSON each, memory backend); time from the request to the Nth
// replayed event, over loopback, parsed with eventsource-parser.
// Run: node benchmark/resume.mjs [N=1000] (after npm run build)
import Fastify from 'fastify'
import { Type } from '@sinclair/typebox'
import { request } from 'undici'
import { createParser } from 'eventsource-parser'
import sse from '../dist/esm/index.js'

const N = Number(process.argv[2] ?? 1000)
const app = Fastify({ logger: false })
await app.register(sse, { history: Math.max(1000, N) })
const ch = app.sse.channel('resume', { events: { tick: Type.Object({ n: Type.Number(), text: Type.String() }) } })
app.get('/s', (req, reply) => reply.sse({ subscribe: [ch] }))
const url = await app.listen({ port: 0, host: '127.0.0.1' })

const from = await ch.publish('tick', { n: 0, text: 'x'.repeat(70) })
for (let i = 1; i <= N; i++) await ch.publish('tick', { n: i, text: 'x'.repeat(70) })

const times = []
for (let round = 0; round < 7; round++) {
  const started = performance.now()
  const ac = new AbortController()
  const res = await request(url + '/s', { headers: { 'last-event-id': from }, signal: ac.signal })
  await new Promise((resolve) => {
    let got = 0
    const decoder = new TextDecoder()
    const parser = createParser({ onEvent: () => { if (++got === N) resolve() } })
    res.body.on('data', (chunk) => parser.feed(decoder.decode(chunk, { stream: true })))
  })
  times.push(performance.now() - started)
  ac.abort()
}
times.sort((a, b) => a - b)
console.log(`resume of ${N} missed events: median ${times[3].toFixed(1)} ms [${times[0].toFixed(1)}-${times[6].toFixed(1)}] over 7 runs (Node ${process.version})`)
await app.close()
