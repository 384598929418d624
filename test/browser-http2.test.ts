// HTTP/2 in each browser engine: the demo served over TLS (a self-signed
// certificate made here with openssl) with `http2: true`; the page loads,
// streams events and publishes over h2. Every engine is told to accept the
// certificate (Chromium: --ignore-certificate-errors; Firefox and WebKit:
// the WebDriver capability acceptInsecureCerts).
import t from 'tap'
import { CONNECTION_NOISE, ENGINES, engineSkip, startEngines, openEnginePage, type EngineName } from './helpers/browser.js'
import { startDemo } from './helpers/demo.js'
import { heavySuite } from './helpers/heavy.js'
import { opensslSkip, selfSigned } from './helpers/tls.js'

await heavySuite()

const noOpenssl = opensslSkip()

interface Seen {
  events: Array<{ event: string, id: string, data: Record<string, unknown> }>
  state: string
  firstEventAt: number | null
  errors: string[]
}
declare const demo: Seen

// Launched at once: the slower engines start while the first one's tests run.
const engines = startEngines(t, { insecureTLS: true }, noOpenssl === false ? ENGINES : [])

for (const name of ENGINES) {
  t.test(`${name}: the demo over HTTP/2 + TLS: page, stream and publish all on h2`, { skip: noOpenssl || engineSkip(name) }, t => overH2(t, name))
}

async function overH2 (t: Tap.Test, name: EngineName): Promise<void> {
  const versions: Record<string, string[]> = {}
  const { app, origin } = await startDemo(t, { tickMs: 100, http2: selfSigned() }, {
    setup: app => {
      app.addHook('onRequest', async (request) => {
        const path = request.url.split('?')[0]
        ;(versions[path] ??= []).push(request.raw.httpVersion)
      })
    }
  })
  const engine = await engines.get(t, name)
  const page = await openEnginePage(t, engine)
  await page.goto(origin + '/')
  await page.waitFor(() => demo.events.filter(e => e.event === 'price').length >= 5)
  const protocol = await page.evaluate(() => (performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming | undefined)?.nextHopProtocol ?? '')
  t.comment(`time to first event over h2: ${(await page.evaluate(() => demo.firstEventAt))?.toFixed(0)} ms after navigation start; nextHopProtocol ${JSON.stringify(protocol)}`)
  t.same(versions['/'], ['2.0'], 'the page came over h2')
  t.same(versions['/events'], ['2.0'], 'the event stream is an HTTP/2 stream')
  t.same(versions['/client.js'], ['2.0'], 'the client module came over h2')

  // Publish from the page over the same h2 connection, and see it come back.
  const send = (): Promise<void> => page.evaluate(() => { (document.querySelector('#send') as HTMLFormElement).requestSubmit() })
  await page.fill('#user', 'h2')
  await page.fill('#text', 'over one connection')
  await send()
  await page.waitFor(() => demo.events.some(e => e.event === 'message'))
  t.match((await page.evaluate(() => demo.events)).find(e => e.event === 'message'), { data: { user: 'h2', text: 'over one connection' } })
  t.same(versions['/api/rooms/lobby/messages'], ['2.0'], 'the POST went over h2')

  // An invalid one shows its error over h2 too.
  await page.fill('#text', '')
  await send()
  await page.waitFor(() => !(document.querySelector('#form-error') as HTMLElement).hidden)
  t.match(await page.text('#form-error'), /^400 FST_ERR_SSEHUB_PAYLOAD_INVALID: .*"\/text"/)

  await page.waitFor(() => document.querySelector('[data-stat="openStreams"]')?.textContent === '1')
  t.equal(app.sse.stats().openStreams, 1)
  const ids = (await page.evaluate(() => demo.events)).map(e => Number(e.id.split('-')[1]))
  t.same(ids, [...ids].sort((a, b) => a - b), 'in order')
  t.equal(new Set(ids).size, ids.length, 'none twice')
  t.same(await page.evaluate(() => demo.errors), [], 'no client errors')
  t.same(page.errors.filter(e => !CONNECTION_NOISE.test(e)), [], 'no console errors other than the 400')
}
