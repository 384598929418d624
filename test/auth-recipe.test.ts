/**
 * The README's "Authentication with EventSource" recipe, run as written: the
 * block is taken from the README, transpiled, and run against a fresh app
 * (so the recipe cannot drift from what is tested). A signed session cookie
 * opens the stream, with the CORS headers a cross-origin EventSource
 * created `withCredentials` needs; no cookie, or a forged one, gets 401; the
 * preflight a polyfill sends for Last-Event-ID is allowed with credentials.
 */
import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import ts from 'typescript'
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { Type } from 'typebox'
import { injectSse } from '../lib/testing.js'
import { tsBlocks } from './helpers/readme.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const ORIGIN = 'https://app.example.com'

/** The recipe's block, as a module exporting `(app, ticker) => Promise<void>` (its imports kept at the top). */
async function loadRecipe (t: Tap.Test): Promise<(app: FastifyInstance, ticker: unknown) => Promise<void>> {
  if (!existsSync(join(root, 'dist', 'esm', 'index.js'))) execFileSync(process.execPath, ['scripts/build.js'], { cwd: root, stdio: 'inherit', timeout: 120_000 })
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('## Authentication with EventSource'))
  const block = tsBlocks(section)[0]
  t.ok(block?.code.includes("from '@fastify/cookie'"), 'found the recipe block in the README')
  const lines = block.code.split('\n')
  const imports = lines.filter(l => l.startsWith('import '))
  const body = lines.filter(l => !l.startsWith('import '))
  const source = `${imports.join('\n')}\nexport default async function (app: any, ticker: any) {\n${body.join('\n')}\n}\n`
  const js = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText
  // Inside the package, so 'fastify-sse-hub' resolves by self-reference, as a dependency would.
  const file = join(root, `.auth-recipe-${process.pid}.mjs`)
  writeFileSync(file, js)
  t.teardown(() => rmSync(file, { force: true }))
  return (await import(pathToFileURL(file).href)).default
}

t.test('the README recipe: a signed session cookie opens the stream across origins; none or a forged one is refused', async t => {
  const recipe = await loadRecipe(t)
  // From the built package, as the recipe's own import of the plugin is: one copy of the classes.
  const { defineChannel } = await import('fastify-sse-hub') as typeof import('../lib/index.js')
  const ticker = defineChannel('ticker', { events: { price: Type.Object({ symbol: Type.String(), price: Type.Number() }) } })
  const app = Fastify()
  t.teardown(() => app.close())
  await recipe(app, ticker)
  app.sse.channel(ticker)
  await app.ready()

  const cookie = `session=${app.signCookie('u42')}`
  const stream = await injectSse(app, { url: '/feed', headers: { origin: ORIGIN, cookie } })
  t.teardown(() => stream.close())
  t.equal(stream.statusCode, 200, 'with the cookie: the stream opens')
  t.equal(stream.headers['access-control-allow-origin'], ORIGIN, 'CORS names the page\'s origin (never * with credentials)')
  t.equal(stream.headers['access-control-allow-credentials'], 'true', 'and allows credentials, as withCredentials needs')
  const id = await ticker.publish('price', { symbol: 'ACME', price: 1 })
  t.same(await stream.take(1), [{ event: 'price', data: { symbol: 'ACME', price: 1 }, id }], 'events arrive')
  t.equal(await app.sse.disconnect({ tag: 'user:u42' }), 1, 'the stream carries the user tag: logout ends it')

  for (const [what, headers] of [
    ['no cookie', { origin: ORIGIN }],
    ['a forged cookie', { origin: ORIGIN, cookie: 'session=u42.forged' }],
    ['an unsigned value', { origin: ORIGIN, cookie: 'session=u42' }]
  ] as const) {
    const refused = await injectSse(app, { url: '/feed', headers })
    t.equal(refused.statusCode, 401, `${what}: 401 (a native EventSource stops for good)`)
    t.same(JSON.parse(await refused.body()), { error: 'sign in' })
  }

  const preflight = await app.inject({
    method: 'OPTIONS',
    url: '/feed',
    headers: { origin: ORIGIN, 'access-control-request-method': 'GET', 'access-control-request-headers': 'last-event-id' }
  })
  t.equal(preflight.statusCode, 204, 'a polyfill\'s preflight (it sends Last-Event-ID) passes without a cookie')
  t.match(String(preflight.headers['access-control-allow-headers']), /last-event-id/i)
  t.equal(preflight.headers['access-control-allow-credentials'], 'true')

  const elsewhere = await injectSse(app, { url: '/feed', headers: { origin: 'https://evil.example', cookie } })
  t.equal(elsewhere.headers['access-control-allow-origin'], undefined, 'another origin gets no CORS grant (the browser withholds the stream)')
  elsewhere.close()
})
