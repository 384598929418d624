/**
 * The packed package, installed as users install it, next to either TypeBox
 * major and the type provider that goes with it:
 * - `typebox` 1.x + `@fastify/type-provider-typebox` 6 (what `npm i` gives today),
 * - `@sinclair/typebox` 0.34 + `@fastify/type-provider-typebox` 5.
 * Each project type-checks under strict, module nodenext: a channel event schema
 * serves as the route's body schema, `req.body` publishes as is, wrong
 * payloads, unknown events and misspelt topic params do not compile
 * (@ts-expect-error, so a type that fell to `any` fails the build), and
 * `import sse = require('fastify-sse-hub')` works in a .cts file. Then the
 * compiled app runs: a publish through the route, the route's 400, our own
 * payload check (compiled by the schema's own TypeBox), authorize's 403.
 * The 0.34 project also checks every declaration file (no skipLibCheck),
 * ours included, where the optional peer `typebox` is absent. The 1.x one
 * keeps skipLibCheck (tsc --init's default): checking typebox 1.x's own
 * declarations takes 2.4 million instantiations, ~40 s of CPU, and says
 * nothing about ours.
 * The projects are installed once and cached (see helpers/consumer.ts).
 */
import t from 'tap'
import { rmSync } from 'node:fs'
import { dirname } from 'node:path'
import { consumer, pack } from './helpers/consumer.js'

// The first run installs the projects (npm, 30-90 s on a cold cache); later runs take seconds.
t.setTimeout(600_000)
const tarball = pack()
t.teardown(() => rmSync(dirname(tarball), { recursive: true, force: true }))

const tsconfig = (skipLibCheck: boolean): string => JSON.stringify({
  compilerOptions: {
    target: 'ES2022',
    module: 'nodenext',
    moduleResolution: 'nodenext',
    strict: true,
    skipLibCheck,
    noEmitOnError: true,
    types: ['node'],
    outDir: 'out',
    rootDir: 'src'
  },
  include: ['src']
}, null, 2)

/** The app, the same for both majors but for where `Type` comes from. */
const app = (typeImport: string): string => `
import Fastify from 'fastify'
import type { AddressInfo } from 'node:net'
${typeImport}
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import sse, { defineChannel } from 'fastify-sse-hub'
import { injectSse } from 'fastify-sse-hub/testing'

const Message = Type.Object({ text: Type.String({ maxLength: 5 }) })
const Params = Type.Object({ roomId: Type.String() })

export const room = defineChannel('rooms/:roomId', {
  events: { message: Message, typing: Type.Object({ user: Type.String() }) },
  authorize: (request, params) => params.roomId !== 'secret'
})

const app = Fastify().withTypeProvider<TypeBoxTypeProvider>()
await app.register(sse)
app.sse.channel(room)

// The channel's event schema is the route's body schema: req.body publishes as is.
app.post('/rooms/:roomId/messages', { schema: { params: Params, body: Message } }, async (req) =>
  ({ id: await room.topic({ roomId: req.params.roomId }).publish('message', req.body) }))
app.get('/rooms/:roomId/events', { schema: { params: Params } }, (req, reply) => {
  reply.sse({ subscribe: [room.topic({ roomId: req.params.roomId })] })
})

// What must not compile (never called: only the type checker reads it).
export function mustNotCompile (): void {
  // @ts-expect-error text is a string
  void room.topic({ roomId: 'a' }).publish('message', { text: 1 })
  // @ts-expect-error an event the channel does not declare
  void room.topic({ roomId: 'a' }).publish('nope', { text: 'x' })
  // @ts-expect-error the template names roomId, not room
  room.topic({ room: 'a' })
  defineChannel('other/:roomId', {
    events: { message: Message },
    // @ts-expect-error authorize's params are typed from the template
    authorize: (request, params) => params.room !== 'x'
  })
}

const heard: string[] = []
room.subscribe('message', (data) => { heard.push(data.text) })

await app.listen({ port: 0, host: '127.0.0.1' })
const base = 'http://127.0.0.1:' + (app.server.address() as AddressInfo).port
const post = (text: unknown) => fetch(base + '/rooms/a/messages', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text }) })
const ok = await post('hi')
const okBody = await ok.json() as { id: string }
const bad = await post('too long')
let direct = ''
try { await room.topic({ roomId: 'a' }).publish('message', { text: 'too long' }) } catch (err) { direct = (err as { code: string }).code }
// fastify-sse-hub/testing on the type-provider instance: a subscribe stream through inject.
const injected = await injectSse(app, '/rooms/b/events')
await room.topic({ roomId: 'b' }).publish('message', { text: 'inj' })
const [first] = await injected.take(1)
injected.close()
const forbidden = await fetch(base + '/rooms/secret/events')
await forbidden.arrayBuffer()
await app.close()

// A schema of the TypeBox major this project does not have: refused at
// definition, saying what to install.
const missing = (schema: object): string => {
  try { defineChannel('probe', { events: { e: schema } }); return 'compiled' } catch (err) { return (err as Error).message }
}
const v0 = missing({ [Symbol.for('TypeBox.Kind')]: 'String', type: 'string' })
const v1 = missing(Object.defineProperty({ type: 'string' }, '~kind', { value: 'String' }))
process.stdout.write(JSON.stringify({ ok: ok.status, id: okBody.id, bad: bad.status, direct, forbidden: forbidden.status, heard, v0, v1, injected: first }))
`

/** `import x = require()` in a .cts file: the CommonJS typings are the plugin itself, with the named exports on it. */
const CTS = `
import sse = require('fastify-sse-hub')
import Fastify = require('fastify')
const app = Fastify()
// Type-only: each of these is a registrable plugin.
export function registrable (): void {
  void app.register(sse.ssePlugin)
  void app.register(sse.default)
  void app.register(sse.fastifySseHub, { retry: 1000 })
}
const options: sse.SseHubOptions = { heartbeat: 1000 }
const code: string = sse.errors.FST_ERR_SSEHUB_FORBIDDEN.name
app.register(sse, options).then(async () => {
  process.stdout.write(JSON.stringify({ plugin: typeof sse, named: sse.ssePlugin === sse && typeof sse.defineChannel === 'function', code, stats: typeof app.sse.stats }))
  await app.close()
}, (err: unknown) => { console.error(err); process.exit(1) })
`

interface Report { ok: number, id: string, bad: number, direct: string, forbidden: number, heard: string[], v0: string, v1: string, injected: unknown }

/** Under node10 resolution (module commonjs), which ignores "exports": typesVersions must map the subpaths. */
const NODE10 = {
  'tsconfig.node10.json': JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'commonjs', moduleResolution: 'node10', esModuleInterop: true, strict: true, skipLibCheck: true, noEmit: true, types: ['node'] },
    include: ['node10']
  }),
  'node10/check.ts': `
import sse, { defineChannel, type SseHubOptions } from 'fastify-sse-hub'
import { subscribe, type ConnectionState } from 'fastify-sse-hub/client'
import { redisBackend } from 'fastify-sse-hub/redis'
import { injectSse } from 'fastify-sse-hub/testing'
const options: SseHubOptions = { heartbeat: 1000 }
const state: ConnectionState = 'open'
export const used = [sse, defineChannel, subscribe, redisBackend, injectSse, options, state]
`
}

const projects = [
  {
    name: 'typebox-1',
    skipLibCheck: true,
    dependencies: { fastify: '^5.0.0', typebox: '^1.1.14', '@fastify/type-provider-typebox': '^6.0.0', typescript: '~5.9.0', '@types/node': '^20.19.0' },
    typeImport: "import { Type } from 'typebox'"
  },
  {
    name: 'sinclair-0.34',
    skipLibCheck: false,
    dependencies: { fastify: '^5.0.0', '@sinclair/typebox': '^0.34.0', '@fastify/type-provider-typebox': '^5.0.0', typescript: '~5.9.0', '@types/node': '^20.19.0' },
    typeImport: "import { Type } from '@sinclair/typebox'"
  }
]

for (const project of projects) {
  t.test(`${project.name}: installed from the tarball, type-checked strict (nodenext, skipLibCheck ${project.skipLibCheck}), run`, { timeout: 300_000 }, async t => {
    const c = consumer(project.name, project.dependencies, tarball)
    t.teardown(() => c.remove())
    c.write({ 'tsconfig.json': tsconfig(project.skipLibCheck), 'src/app.ts': app(project.typeImport), 'src/require.cts': CTS })

    const tsc = c.run(process.execPath, ['node_modules/typescript/bin/tsc', '-p', '.'], 240_000)
    t.equal(tsc.code, 0, 'tsc passes (every @ts-expect-error met its error)')
    if (tsc.code !== 0) t.comment(tsc.out)

    const run = c.run(process.execPath, ['out/app.js'])
    t.equal(run.code, 0, 'the app runs')
    if (run.code !== 0) { t.comment(run.out); return }
    const r = JSON.parse(run.out) as Report
    t.equal(r.ok, 200, 'POST with a valid body: published')
    t.match(r.id, /^[0-9a-z]+-\d+$/, 'publish resolved to a hub id')
    t.equal(r.bad, 400, 'POST with a body the schema refuses: Fastify answers 400 from the same schema')
    t.equal(r.direct, 'FST_ERR_SSEHUB_PAYLOAD_INVALID', 'publish() checks the payload with the schema\'s own TypeBox')
    t.equal(r.forbidden, 403, 'authorize (typed params) refuses "secret"')
    t.same(r.heard, ['hi', 'inj'], 'the in-process listener heard the published messages, typed')
    t.match(r.injected, { event: 'message', data: { text: 'inj' } }, 'fastify-sse-hub/testing: injectSse took the event from a subscribe stream')
    if (project.name === 'typebox-1') {
      t.match(r.v0, /made with @sinclair\/typebox, but @sinclair\/typebox is not installed: npm i @sinclair\/typebox/, 'a 0.34 schema without @sinclair/typebox: says what to install')
      t.equal(r.v1, 'compiled')
    } else {
      t.equal(r.v0, 'compiled')
      t.match(r.v1, /made with typebox 1\.x, but typebox is not installed: npm i typebox/, 'a 1.x schema without typebox: says what to install')
    }

    if (project.name === 'typebox-1') {
      c.write(NODE10)
      const node10 = c.run(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.node10.json'], 240_000)
      t.equal(node10.code, 0, 'node10 resolution: the main entry, /client, /redis and /testing resolve, with their types')
      if (node10.code !== 0) t.comment(node10.out)
    }

    const cjs = c.run(process.execPath, ['out/require.cjs'])
    t.equal(cjs.code, 0, 'the .cts file runs')
    if (cjs.code !== 0) { t.comment(cjs.out); return }
    t.same(JSON.parse(cjs.out), { plugin: 'function', named: true, code: 'FastifyError', stats: 'function' }, 'require() gives the registrable plugin with the named exports on it')
  })
}
