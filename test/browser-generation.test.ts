// The generation page of the demo (demo/public/generation.js, the built
// client's follow()) in each browser engine, memory backend, against the
// demo's simulated token producer (a producer run on the server):
// - a reload mid-generation shows the stored text and resumes after the
//   stored id: the text equals the producer's exact token sequence, nothing
//   missing or doubled; a second tab follows the same generation from the start;
// - after the end a reload replays the whole text and ends; a tab whose
//   stored id already covers the end gets 204 and shows "already finished";
// - cancel: the producer's signal aborts, the page shows cancelled, and
//   its text is exactly what was published;
// - a network drop shows "reconnecting" (not an end, not an error), then the
//   text continues exactly;
// - past the channel's ttl the page shows "not found or expired" (404).
import t from 'tap'
import { CONNECTION_NOISE, ENGINES, engineSkip, startEngines, openEnginePage, type EnginePage } from './helpers/browser.js'
import { startDemo, until, type DemoApp, type DemoOptions } from './helpers/demo.js'
import { heavySuite } from './helpers/heavy.js'

await heavySuite()

interface GenSeen {
  id: string | null
  status: string
  resumedFrom: string | null
  restored: string
  tokens: string[]
  end: { event: string | null, data: { reason?: string } | null, id: string | null } | null
  error: { code: string, status: number | null } | null
  states: string[]
}
declare const gen: GenSeen

/** What demo/app.mjs keeps per generation. */
interface GenRecord {
  id: string
  tokens: string[]
  yielded: number
  aborted: boolean
  run: { finished: Promise<{ reason: string }> }
}
type GenApp = DemoApp & { demo: { generations: Map<string, GenRecord> } }

const sse = { retry: 200, retryJitter: 0, shutdownJitter: 0 }

async function start (options: DemoOptions & { generation: { tokens?: number, delayMs?: [number, number], ttl?: number } }) {
  const server = await startDemo(t, options)
  return { ...server, app: server.app as GenApp }
}

/** The page's visible text. */
const shown = (page: EnginePage): Promise<string | null> => page.text('#text')

const engines = startEngines(t)

for (const name of ENGINES) {
  t.test(name, { skip: engineSkip(name) }, async t => {
    const engine = await engines.get(t, name)
    const page = await openEnginePage(t, engine)
    const second = await openEnginePage(t, engine)
    // About 2 s per generation: 200 tokens, 1 to 4 every 15 to 30 ms.
    const { app, origin } = await start({ tickMs: 0, sse, generation: { tokens: 200, delayMs: [15, 30] } })
    let genId = ''
    const url = (): string => `${origin}/generation?id=${genId}`

    t.test('reload mid-generation: the text continues exactly; a second tab follows the same generation', async t => {
      await page.goto(origin + '/generation')
      await page.click('#start')
      await page.waitFor(() => gen.tokens.length >= 30)
      genId = await page.evaluate(() => gen.id as string)
      const record = app.demo.generations.get(genId) as GenRecord
      t.ok(record.yielded < record.tokens.length, `mid-generation: ${record.yielded} of ${record.tokens.length} tokens yielded`)

      await second.goto(url())
      await page.goto(url())
      const after = await page.evaluate(() => ({ resumedFrom: gen.resumedFrom, restored: gen.restored }))
      t.match(after.resumedFrom, /^[0-9a-z]+-\d+$/, 'the reloaded page resumed from the stored id')
      t.ok(after.restored.length > 0, `it showed the ${after.restored.length} characters it had before the reload`)

      await page.waitFor(() => gen.status === 'done')
      await second.waitFor(() => gen.status === 'done')
      const expected = record.tokens.join('')
      const resumed = await page.evaluate(() => gen.tokens)
      t.ok(resumed.length > 0 && resumed.length < record.tokens.length, `tokens after the reload: ${resumed.length}`)
      t.equal(after.restored + resumed.join(''), expected, 'restored text + resumed tokens = the producer\'s exact sequence')
      t.same(resumed, record.tokens.slice(record.tokens.length - resumed.length), 'the resumed tokens are exactly the rest, in order')
      t.equal(await shown(page), expected, 'the reloaded page shows the whole text, nothing missing or doubled')
      t.same(await second.evaluate(() => gen.tokens), record.tokens, 'the second tab got every token, from the start')
      t.equal(await shown(second), expected, 'and shows the same text')
      t.equal((await record.run.finished).reason, 'complete')
      t.match(await page.evaluate(() => gen.end), { event: 'done', data: { reason: 'stop' } })
      t.same(await page.evaluate(() => [sessionStorage.length, gen.states.at(-1)]), [0, 'closed'], 'storage cleared; the EventSource closed at done')
    })

    t.test('after the end: a reload replays the whole text and ends; an id that covers the end gets 204', async t => {
      const record = app.demo.generations.get(genId) as GenRecord
      const expected = record.tokens.join('')
      await page.goto(url())
      await page.waitFor(() => gen.status === 'done')
      t.equal(await page.evaluate(() => gen.resumedFrom), null, 'nothing stored: from the start')
      t.equal(await shown(page), expected, 'the whole text, replayed from history')
      const end = await page.evaluate(() => gen.end) as GenSeen['end']
      t.equal(end?.event, 'done')

      // As if the page was reloaded between the done event and clearing its storage.
      await page.evaluate(([id, last, text]) => {
        sessionStorage.setItem(`gen:${id}:last`, last)
        sessionStorage.setItem(`gen:${id}:text`, text)
      }, [genId, end?.id as string, expected] as const)
      await page.goto(url())
      await page.waitFor(() => gen.end !== null)
      t.same(await page.evaluate(() => gen.end), { event: null, data: null, id: end?.id }, '204: already finished')
      t.equal(await page.text('#state'), 'already finished')
      t.equal(await shown(page), expected, 'the text it had stays')
      t.same(await page.evaluate(() => gen.tokens), [], 'nothing was sent again')
    })

    t.test('cancel: the producer\'s signal aborts, the page shows cancelled, its text is exactly what was published', async t => {
      await page.click('#start')
      await page.waitFor((old) => gen.id !== old && gen.tokens.length >= 20, genId)
      const id = await page.evaluate(() => gen.id as string)
      const record = app.demo.generations.get(id) as GenRecord
      await page.click('#cancel')
      await page.waitFor(() => gen.status === 'cancelled')
      t.equal(await page.text('#state'), 'cancelled')
      t.ok(record.aborted, 'the producer\'s signal aborted')
      t.equal((await record.run.finished).reason, 'cancelled')
      t.ok(record.yielded < record.tokens.length, `stopped early: ${record.yielded} of ${record.tokens.length}`)
      const got = await page.evaluate(() => gen.tokens)
      const history = await (app.sse as any).backend.latest(`generations/${id}`, 10_000) as Array<{ event: string, data: string }>
      t.same(history.map(e => e.event).slice(-1), ['end'], 'the hub\'s end is the last event')
      t.same(got, history.filter(e => e.event === 'token').map(e => JSON.parse(e.data).text), 'the page has exactly the published tokens')
      t.same(got, record.tokens.slice(0, got.length), 'a prefix of the producer\'s sequence')
      t.equal(await shown(page), got.join(''))
      t.match(await page.evaluate(() => gen.end), { event: 'end', data: { reason: 'cancelled' } })
    })

    t.test('a network drop shows reconnecting, not an end or an error; then the text continues exactly', async t => {
      const before = await page.evaluate(() => gen.id)
      await page.click('#start')
      await page.waitFor((old) => gen.id !== old && gen.tokens.length >= 20, before)
      const id = await page.evaluate(() => gen.id as string)
      const record = app.demo.generations.get(id) as GenRecord
      const server = app.server
      const port = (server.address() as { port: number }).port
      // The listener goes and every connection is cut; the run goes on in the process.
      await new Promise<void>(resolve => {
        server.close(() => resolve())
        server.closeAllConnections()
      })
      await page.waitFor(() => gen.status === 'reconnecting', undefined, 5000).catch(async (err: Error) => {
        throw new Error(`${err.message}: ${JSON.stringify(await page.evaluate(() => ({ status: gen.status, states: gen.states, n: gen.tokens.length, error: gen.error, end: gen.end })))} yielded ${record.yielded}`)
      })
      t.same(await page.evaluate(() => [gen.error, gen.end]), [null, null], 'no error, no end: a network problem')
      t.equal(await page.text('#state'), 'reconnecting…')
      await until('the producer runs on meanwhile', () => record.yielded > 60 || record.yielded === record.tokens.length)
      server.listen(port, '127.0.0.1')
      await page.waitFor(() => gen.status === 'done')
      t.equal(await shown(page), record.tokens.join(''), 'the whole text: nothing missing or doubled across the drop')
      t.same(await page.evaluate(() => gen.tokens), record.tokens)
    })

    t.test('past the ttl: "not found or expired", told apart from an error', async t => {
      const short = await start({ tickMs: 0, sse, generation: { tokens: 8, delayMs: [1, 2], ttl: 600 } })
      const res = await fetch(short.origin + '/api/generations', { method: 'POST' })
      const { id } = await res.json() as { id: string }
      const record = short.app.demo.generations.get(id) as GenRecord
      await record.run.finished
      await page.goto(`${short.origin}/generation?id=${id}`)
      await page.waitFor(() => gen.end !== null)
      t.equal(await shown(page), record.tokens.join(''), 'within the ttl: the whole text')
      // Polled with a bound: the history expires 600 ms after the last event.
      await until('expired', async () => {
        const r = await fetch(`${short.origin}/api/generations/${id}/stream`)
        await r.body?.cancel()
        return r.status === 404
      })
      await page.goto(`${short.origin}/generation?id=${id}`)
      await page.waitFor(() => gen.error !== null)
      t.same(await page.evaluate(() => gen.error), { code: 'FST_ERR_SSEHUB_STREAM_NOT_FOUND', status: 404 })
      t.equal(await page.text('#state'), 'not found or expired')
      t.equal(await shown(page), '', 'no text')
      if (engine.reportsConsole) {
        for (const p of [page, second]) t.same(p.errors.filter(e => !CONNECTION_NOISE.test(e)), [], 'no other console errors')
      }
    })
  })
}
