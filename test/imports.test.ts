/**
 * The built package loads the way users load it: `import` (ESM) and
 * `require` (CJS) through package.json "exports", each giving a plugin that
 * registers on a real Fastify instance, with the named exports equal to the
 * default. Runs in child processes against dist/, not lib/.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))

/** What each child prints, as one JSON line. */
interface Report {
  defaultType: string
  namedEqualDefault: boolean
  statsType: string
  openStreams: number
  payload: string
  extra: Record<string, unknown>
}

/** Shared by both children: register, serve one iterable stream through inject, report. */
const body = `
const app = Fastify()
await app.register(sse)
app.get('/s', (req, reply) => { reply.sse([{ event: 'e', data: 'built' }]) })
const res = await app.inject('/s')
const report = {
  defaultType: typeof sse,
  namedEqualDefault: ssePlugin === sse && fastifySseHub === sse,
  statsType: typeof app.sse.stats,
  openStreams: app.sse.stats().openStreams,
  payload: res.payload,
  extra
}
await app.close()
process.stdout.write(JSON.stringify(report))
`

function run (args: string[]): Report {
  const out = execFileSync(process.execPath, args, { cwd: root, encoding: 'utf8', timeout: 10_000 })
  return JSON.parse(out) as Report
}

function check (t: Tap.Test, r: Report): void {
  t.equal(r.defaultType, 'function', 'the default export is the plugin function')
  t.equal(r.namedEqualDefault, true, 'ssePlugin and fastifySseHub are the default')
  t.equal(r.statsType, 'function', 'registered: app.sse.stats is there')
  t.equal(r.openStreams, 0)
  t.match(r.payload, /event: e\ndata: built\n\n/, 'reply.sse() works from the built code')
}

t.before(() => {
  if (!existsSync(new URL('../dist/cjs/index.js', import.meta.url)) || !existsSync(new URL('../dist/esm/index.js', import.meta.url))) {
    execFileSync(process.execPath, ['scripts/build.js'], { cwd: root, stdio: 'inherit', timeout: 60_000 })
  }
})

t.test('ESM: import sse, { ssePlugin, fastifySseHub } from "fastify-sse-hub"', async t => {
  const r = run(['--input-type=module', '-e', `
import Fastify from 'fastify'
import sse, { ssePlugin, fastifySseHub, errors } from 'fastify-sse-hub'
const extra = { resolved: import.meta.resolve('fastify-sse-hub'), errorsCode: typeof errors.FST_ERR_SSEHUB_OPTION_INVALID }
${body}`])
  check(t, r)
  t.match(r.extra.resolved, /\/dist\/esm\/index\.js$/, 'resolved through "exports" to the ESM build')
  t.equal(r.extra.errorsCode, 'function', 'errors are exported')
})

t.test('CJS: require("fastify-sse-hub")', async t => {
  const r = run(['-e', `
const Fastify = require('fastify')
const sse = require('fastify-sse-hub')
const { ssePlugin, fastifySseHub } = require('fastify-sse-hub')
const extra = { resolved: require.resolve('fastify-sse-hub'), defaultIsSelf: sse.default === sse }
;(async () => {
${body}
})().catch(err => { console.error(err); process.exit(1) })`])
  check(t, r)
  t.match(r.extra.resolved, /\/dist\/cjs\/index\.js$/, 'resolved through "exports" to the CJS build')
  t.equal(r.extra.defaultIsSelf, true, 'require(...).default is the plugin too (TypeScript esModuleInterop)')
})
