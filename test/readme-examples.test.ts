/**
 * Every ```ts block of the README type-checks under strict TypeScript
 * (module nodenext), against the built package as users import it
 * ('fastify-sse-hub', '/redis', '/client', '/testing' through "exports"), so
 * the README cannot drift from the API.
 *
 * Each block is its own module. A block may use what earlier blocks of the
 * README define and that a reader carries along: `app` (a Fastify instance
 * with the plugin registered), `ticker` (the intro's channel), `room` and
 * `Message` (from "Channels and topics"), `source` (any event source), and
 * './channels.js', the module of shared definitions the README imports from.
 * Those are declared below, built the way the README builds them; anything
 * else a block uses, it must declare or import itself.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { tsBlocks } from './helpers/readme.js'

const root = fileURLToPath(new URL('..', import.meta.url))

const CHANNELS = `
import { Type } from 'typebox'
import { defineChannel } from 'fastify-sse-hub'
export const ticker = defineChannel('ticker', { events: { price: Type.Object({ symbol: Type.String(), price: Type.Number() }) } })
export const Message = Type.Object({ room: Type.String(), text: Type.String({ maxLength: 500 }) })
export const room = defineChannel('rooms/:roomId', { events: { message: Message } })
export const jobs = defineChannel('jobs/:jobId', { events: { progress: Type.Object({ pct: Type.Number() }) } })
`

const GLOBALS = `
import type { FastifyInstance } from 'fastify'
import type { SseSource } from 'fastify-sse-hub'
import type { ticker as Ticker, room as Room, Message as MessageSchema } from './channels.js'
declare global {
  const app: FastifyInstance
  const ticker: typeof Ticker
  const room: typeof Room
  const Message: typeof MessageSchema
  const source: SseSource
}
`

t.test('every ts block of the README compiles (strict, nodenext) against the built package', { timeout: 240_000 }, async t => {
  if (!existsSync(join(root, 'dist', 'esm', 'index.d.ts'))) execFileSync(process.execPath, ['scripts/build.js'], { cwd: root, stdio: 'inherit', timeout: 120_000 })
  const blocks = tsBlocks(readFileSync(join(root, 'README.md'), 'utf8'))
  t.ok(blocks.length >= 10, `found the README's ts blocks (${blocks.length})`)

  // Inside the package, so 'fastify-sse-hub' resolves by self-reference through "exports", as a dependency would.
  const dir = join(root, `.readme-check-${process.pid}`)
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir)
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      target: 'ES2022',
      module: 'nodenext',
      moduleResolution: 'nodenext',
      strict: true,
      noEmit: true,
      types: ['node'],
      // typebox 1.x's own declarations cost ~40 s of CPU to check; ours are checked by tsc -p . and the consumer test.
      skipLibCheck: true
    },
    include: ['*.ts']
  }))
  writeFileSync(join(dir, 'channels.ts'), CHANNELS)
  writeFileSync(join(dir, 'globals.d.ts'), GLOBALS)
  for (const [i, block] of blocks.entries()) {
    // `export {}`: each block is a module of its own, as a file of the reader's would be.
    writeFileSync(join(dir, `readme-line-${block.line}.ts`), `${block.code}\nexport {}\n`)
    void i
  }
  let out = ''
  let code = 0
  try {
    out = execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', dir], { cwd: dir, encoding: 'utf8', timeout: 200_000 })
  } catch (err) {
    const e = err as { status?: number, stdout?: string }
    code = e.status ?? 1
    out = e.stdout ?? String(err)
  }
  t.equal(code, 0, 'tsc finds no error in any block')
  if (code !== 0) t.comment(out.replaceAll(dir + '/', '').replace(/readme-line-(\d+)\.ts\((\d+),(\d+)\)/g, (_, line, l, c) => `README.md:${Number(line) + Number(l) - 1}:${c}`))
})

t.test('the extractor finds indented blocks and their lines', async t => {
  const md = 'a\n```ts\nconst x = 1\n```\n- item\n\n  ```ts\n  const y = 2\n  ```\n```js\nz\n```\n'
  t.same(tsBlocks(md), [{ line: 3, code: 'const x = 1\n' }, { line: 8, code: 'const y = 2\n' }])
})
