// The demo page in each browser engine (Chromium, Firefox, WebKit): it loads
// the built client from /client.js, receives the ticker's and the room's
// events parsed and typed, shows live stats() counts, and shows the 400 of
// an invalid publish made from its form. One browser per engine, one page
// reused by both tests.
import t from 'tap'
import { CONNECTION_NOISE, ENGINES, engineSkip, startEngines, openEnginePage, type Engine, type EnginePage } from './helpers/browser.js'
import { startDemo } from './helpers/demo.js'
import { heavySuite } from './helpers/heavy.js'

await heavySuite()

interface Seen {
  events: Array<{ event: string, id: string, data: Record<string, unknown> }>
  state: string
  stateLoads: number
  firstEventAt: number | null
  marks: { script: number, stateLoaded: number, open: number }
  errors: string[]
  publishErrors: Array<{ status: number, code?: string, message?: string }>
}
declare const demo: Seen

const SYMBOLS = ['ACME', 'GLOBEX', 'INITECH', 'UMBRELLA', 'HOOLI', 'STARK']

// Launched at once: the slower engines start while the first one's tests run.
const engines = startEngines(t)

for (const name of ENGINES) {
  t.test(name, { skip: engineSkip(name) }, async t => {
    const engine = await engines.get(t, name)
    const page = await openEnginePage(t, engine)
    t.test('the page gets live, parsed ticker and room events through the built client', t => live(t, page))
    t.test('publishing from the page: a valid message comes back as an event, an invalid one shows the 400', t => publishing(t, engine, page))
  })
}

async function live (t: Tap.Test, page: EnginePage): Promise<void> {
  const { app, origin } = await startDemo(t, { tickMs: 100 })
  const started = Date.now()
  await page.goto(origin + '/')
  await page.waitFor(() => demo.events.filter(e => e.event === 'price').length >= 10)
  const seen = await page.evaluate(() => demo)
  const m = seen.marks
  t.comment(`time to first event: ${seen.firstEventAt?.toFixed(0)} ms after navigation start ` +
    `(script ran at ${m.script.toFixed(0)} ms, state loaded at ${m.stateLoaded.toFixed(0)} ms, stream open at ${m.open.toFixed(0)} ms; ` +
    `${Date.now() - started} ms to 10 prices, ticker at 2 prices / 100 ms)`)
  t.equal(seen.state, 'open', 'the client says the stream is open')
  t.equal(seen.stateLoads, 1, 'the state was loaded once')
  const prices = seen.events.filter(e => e.event === 'price')
  t.ok(prices.every(e => SYMBOLS.includes(e.data.symbol as string)), 'every symbol is one of the ticker\'s')
  t.ok(prices.every(e => typeof e.data.price === 'number'), 'prices arrive as numbers (JSON parsed)')
  t.ok(prices.every(e => /^[0-9a-z]+-\d+$/.test(e.id)), 'meta.id is the hub id')
  const seqs = seen.events.map(e => Number(e.id.split('-')[1]))
  t.same(seqs, [...seqs].sort((a, b) => a - b), 'ids arrive in order')
  t.equal(new Set(seqs).size, seqs.length, 'no event twice')

  // The table shows what the events said: each symbol's row, its latest price.
  await page.waitFor(() => {
    const latest = new Map<string, number>()
    for (const e of demo.events) if (e.event === 'price') latest.set(e.data.symbol as string, e.data.price as number)
    return [...latest].every(([symbol, price]) => document.querySelector(`#sym-${symbol} .price`)?.textContent === price.toFixed(2))
  })
  t.ok(await page.count('#prices tr') >= 3, 'several symbols are on the board')

  // A message published on the server appears in the room, once.
  const id = await app.demo.room.topic({ roomId: 'lobby' }).publish('message', { user: 'server', text: 'Welcome <b>all</b>', at: Date.now() })
  await page.waitFor((id) => document.querySelector(`#messages li[data-id="${id}"]`) !== null, id)
  t.equal(await page.text(`#messages li[data-id="${id}"] .text`), 'Welcome <b>all</b>', 'text shown as text')
  const message = (await page.evaluate(() => demo.events)).filter(e => e.event === 'message')
  t.same(message.map(e => [e.id, e.data.user, e.data.text]), [[id, 'server', 'Welcome <b>all</b>']], 'the message event, parsed, once')

  // The stats panel polls app.sse.stats().
  await page.waitFor(() => document.querySelector('[data-stat="openStreams"]')?.textContent === '1')
  const published = app.sse.stats().published
  await page.waitFor((n) => Number(document.querySelector('[data-stat="published"]')?.textContent) >= n, published)
  t.pass(`stats shown: 1 open stream, published >= ${published}`)
  t.same(page.errors, [], 'no console errors')
  t.same(await page.evaluate(() => demo.errors), [], 'no client errors')
}

async function publishing (t: Tap.Test, engine: Engine, page: EnginePage): Promise<void> {
  const { app, origin } = await startDemo(t, { tickMs: 0 })
  page.errors.length = 0
  await page.goto(origin + '/?room=dev')
  await page.waitFor(() => demo.state === 'open')
  t.equal(await page.text('#room-name'), 'dev')

  // Latency of one event, publish to handler, on an open stream.
  const latencies: number[] = []
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now()
    const id = await app.demo.tick('ACME')
    await page.waitFor((id) => demo.events.some(e => e.id === id), id)
    latencies.push(performance.now() - t0)
  }
  t.comment(`publish -> page handler: ${latencies.map(l => l.toFixed(1)).join(', ')} ms (incl. the driver's round trip)`)
  await page.evaluate(() => { demo.events.length = 0 })

  const send = (): Promise<void> => page.evaluate(() => { (document.querySelector('#send') as HTMLFormElement).requestSubmit() })
  await page.fill('#user', 'alice')
  await page.fill('#text', 'hello from the page')
  await send()
  await page.waitFor(() => demo.events.some(e => e.event === 'message'))
  const [ev] = await page.evaluate(() => demo.events)
  t.match(ev, { event: 'message', data: { user: 'alice', text: 'hello from the page' } }, 'the stream delivered the published message')
  t.equal(typeof ev.data.at, 'number')
  await page.waitFor(() => document.querySelector('#messages .text')?.textContent === 'hello from the page')
  t.equal(await page.evaluate(() => (document.querySelector('#form-error') as HTMLElement).hidden), true, 'no error shown')
  t.equal(await page.evaluate(() => (document.querySelector('#text') as HTMLInputElement).value), '', 'the form was cleared')

  // Empty text: the channel schema refuses it, and the page shows why.
  await page.fill('#text', '')
  await send()
  await page.waitFor(() => !(document.querySelector('#form-error') as HTMLElement).hidden)
  const shown = await page.text('#form-error') ?? ''
  t.match(shown, /^400 FST_ERR_SSEHUB_PAYLOAD_INVALID: /, 'status and code shown')
  t.match(shown, /"\/text"/, 'the JSON path of the bad field is shown')
  t.match(shown, /greater or equal to 1/, 'with TypeBox\'s reason')

  // Too long: 281 characters.
  await page.fill('#text', 'x'.repeat(281))
  await send()
  await page.waitFor(() => demo.publishErrors.length === 2)
  t.match(await page.text('#form-error'), /400 FST_ERR_SSEHUB_PAYLOAD_INVALID: .*"\/text".*less or equal to 280/)

  // A name too long.
  await page.fill('#user', 'u'.repeat(30))
  await page.fill('#text', 'ok')
  await send()
  await page.waitFor(() => demo.publishErrors.length === 3)
  t.match(await page.text('#form-error'), /"\/user"/)

  t.same((await page.evaluate(() => demo.events)).map(e => e.event), ['message'], 'nothing invalid reached the stream')
  t.equal(app.sse.stats().published, 6, 'five ticks and one message: nothing else was published')
  // Engines log failed fetches (400) as console errors; nothing else may appear.
  if (engine.reportsConsole) t.same(page.errors.filter(e => !CONNECTION_NOISE.test(e)), [], 'no other console errors')
}
