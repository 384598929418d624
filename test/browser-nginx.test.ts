// Restarts behind a proxy: the README's nginx config, run by a real nginx
// started here on free ports, in front of the demo app, with Chromium's
// native EventSource over HTTP/1.1 and over HTTP/2 (TLS). While the app is
// down nginx answers the streams' reconnections `200` + a jittered `retry:`
// instead of `502`, so the EventSource keeps trying and, once the app is
// back, resumes with its Last-Event-ID (memory backend: `reset` naming the
// last id it had). A control nginx runs the same config without its
// `error_page` line: there the native EventSource closes for good on the
// 502, while the typed client comes back by itself, from its last id.
import t from 'tap'
import { CONNECTION_NOISE, engineSkip, launchEngine, openEnginePage, type EnginePage } from './helpers/browser.js'
import { startDemo } from './helpers/demo.js'
import { nginxSkip, nginxVersion, readmeNginxConfig, startNginx } from './helpers/nginx.js'
import { openRaw, openTyped, PROBE_PATH, probeRoute, type RawSeen, type TypedSeen } from './helpers/probe.js'
import { opensslSkip, selfSigned } from './helpers/tls.js'
import { heavySuite } from './helpers/heavy.js'

await heavySuite()

declare const raw: Record<string, RawSeen>
declare const typed: Record<string, TypedSeen>

const sse = { retry: 200, retryJitter: 0, shutdownJitter: 0 }
const NAMES = ['price', 'message', 'reset', 'sse-hub:head']
const ERROR_PAGE = /^\s*error_page 502 503 504 = @sse_unavailable;\n/m

t.test('an app restart behind nginx: Chromium\'s EventSource keeps trying over HTTP/1.1 and HTTP/2 and resumes', {
  skip: nginxSkip() || opensslSkip() || engineSkip('chromium')
}, async t => {
  const tls = selfSigned()
  const engineTest = t
  let app = await startDemo(t, { tickMs: 0, sse }, { setup: probeRoute })
  const site = readmeNginxConfig()
  t.match(site, ERROR_PAGE, 'the README config answers for the app while it is down')
  const nginx = await startNginx(t, { site, appPort: app.port, tls })
  const plain = await startNginx(t, { site, appPort: app.port, tls, edit: s => s.replace(ERROR_PAGE, '') })
  const engine = await launchEngine(t, 'chromium', { insecureTLS: true })
  t.comment(`nginx ${nginxVersion()}, Chromium ${engine.version}`)

  const pages: Record<'h1' | 'h2' | 'plain', EnginePage> = {
    h1: await openEnginePage(t, engine),
    h2: await openEnginePage(t, engine),
    plain: await openEnginePage(t, engine)
  }
  await pages.h1.goto(nginx.http + PROBE_PATH)
  await pages.h2.goto(nginx.https + PROBE_PATH)
  await pages.plain.goto(plain.http + PROBE_PATH)
  t.equal(await pages.h2.evaluate(() => (performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming).nextHopProtocol), 'h2', 'the TLS side speaks HTTP/2 to the browser')
  t.equal(await pages.h1.evaluate(() => (performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming).nextHopProtocol), 'http/1.1')
  for (const page of Object.values(pages)) await page.evaluate(openRaw, { key: 'es', url: '/events', names: NAMES })
  await pages.plain.evaluate(openTyped, { key: 'client', url: '/events?who=client', names: ['price', 'message'], options: { reconnect: { delay: 100, maxDelay: 400 } } })
  for (const page of Object.values(pages)) await page.waitFor(() => raw.es.events.length === 1)
  await pages.plain.waitFor(() => typed.client.states.includes('open'))

  const p1 = await app.app.demo.tick('ACME')
  for (const page of Object.values(pages)) await page.waitFor((id) => raw.es.events.some(e => e.id === id), p1)
  await pages.plain.waitFor((id) => typed.client.events.some(e => e.id === id), p1)

  // The app goes down.
  const stopAt = Date.now()
  await app.close()
  const down = await fetch(nginx.http + '/events')
  const body = await down.text()
  t.equal(down.status, 200, 'nginx answers a stream 200 while the app is down')
  t.match(down.headers.get('content-type'), /^text\/event-stream/, 'as an event stream')
  t.match(body, /^: the app is restarting\nretry: (1000|1500|2000|2500)\n\n$/, `with a jittered retry and no id (${JSON.stringify(body)})`)
  const bad = await fetch(plain.http + '/events')
  t.equal(bad.status, 502, 'the control nginx answers 502')
  // Each page's EventSource has been answered by nginx alone at least once.
  for (const key of ['h1', 'h2'] as const) await pages[key].waitFor(() => raw.es.opens >= 2 && raw.es.states.at(-1) === 0)
  await pages.plain.waitFor(() => raw.es.states.at(-1) === 2)
  await pages.plain.waitFor(() => typed.client.states.at(-1) === 'connecting')

  // Back, on the same port, with one event nobody could stream (published before it listens).
  let away = ''
  app = await startDemo(engineTest, { tickMs: 0, sse }, {
    port: app.port,
    setup: probeRoute,
    beforeListen: async a => { away = await a.demo.tick('HOOLI') }
  })
  for (const key of ['h1', 'h2'] as const) await pages[key].waitFor(() => raw.es.events.some(e => e.event === 'reset'), undefined, 15_000)
  await pages.plain.waitFor(() => typed.client.resets.length === 1, undefined, 15_000)
  t.comment(`every page back ${Date.now() - stopAt} ms after the app stopped (nginx retry 1000..2500 ms)`)
  for (const key of ['h1', 'h2'] as const) {
    const es = await pages[key].evaluate(() => raw.es)
    const reset = es.events.find(e => e.event === 'reset') as RawSeen['events'][number]
    t.same(JSON.parse(reset.data), { lastEventId: p1, reason: 'epoch' }, `${key}: the EventSource came back with the last id it had (reset: the app restarted without its history)`)
    t.equal(reset.id.split('-')[0], away.split('-')[0], `${key}: from the new process`)
    t.notOk(es.states.includes(2), `${key}: never closed`)
  }
  t.match((await pages.plain.evaluate(() => typed.client)).resets, [{ lastEventId: p1, reason: 'epoch' }], 'control: the typed client came back through the 502s, from its last id')

  const p2 = await app.app.demo.tick('ACME')
  for (const key of ['h1', 'h2'] as const) await pages[key].waitFor((id) => raw.es.events.some(e => e.id === id), p2)
  await pages.plain.waitFor((id) => typed.client.events.some(e => e.id === id), p2)
  t.pass('live again through nginx on HTTP/1.1, HTTP/2 and for the typed client')
  const control = await pages.plain.evaluate(() => raw.es)
  t.equal(control.states.at(-1), 2, 'control: the native EventSource stayed closed after the 502')
  t.same(control.events.filter(e => e.event !== 'sse-hub:head').map(e => e.id), [p1], 'control: and got nothing after it')
  for (const page of Object.values(pages)) t.same(page.errors.filter(e => !CONNECTION_NOISE.test(e)), [], 'no console errors other than the 502s')
  t.notMatch(nginx.errorLog(), /\[(emerg|alert|crit)\]/, 'nginx logged nothing serious')
})
