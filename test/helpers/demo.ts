/**
 * The demo app (demo/app.mjs, which runs on the BUILT package in dist/) for
 * end-to-end tests: started on a real port, closed at teardown. dist/ is
 * built first if it is missing (`npm test` builds it anyway).
 */
import { existsSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import type { T } from './index.js'

const root = fileURLToPath(new URL('../..', import.meta.url))

/** Builds dist/ if it is not there. */
export function ensureDist (): void {
  if (existsSync(`${root}/dist/esm/index.js`) && existsSync(`${root}/dist/esm/client.js`)) return
  execFileSync(process.execPath, ['scripts/build.js'], { cwd: root, stdio: 'inherit' })
}

export interface DemoOptions {
  redisUrl?: string
  redisPrefix?: string
  tickMs?: number
  http2?: { key: string | Buffer, cert: string | Buffer }
  sse?: Record<string, unknown>
  fastify?: Record<string, unknown>
}

/** What demo/app.mjs decorates the app with. */
export interface DemoHandle {
  ticker: { publish: (event: string, data: unknown) => Promise<string> }
  room: { topic: (params: { roomId: string }) => { publish: (event: string, data: unknown) => Promise<string> } }
  tick: (symbol?: string) => Promise<string>
}

export type DemoApp = FastifyInstance & { demo: DemoHandle }

export async function buildDemo (options: DemoOptions): Promise<DemoApp> {
  ensureDist()
  // @ts-expect-error plain ESM JavaScript, no declarations
  const mod = await import('../../demo/app.mjs') as { buildDemo: (o: DemoOptions) => Promise<DemoApp> }
  return mod.buildDemo(options)
}

/**
 * Builds the demo and listens on 127.0.0.1:`port` (0: a free one). `close()`
 * may be called by the test (to restart on the same port); teardown closes
 * it otherwise. `setup(app)` runs before the app is ready (hooks, routes);
 * `beforeListen(app)` once it is ready, before it listens.
 */
export async function startDemo (
  t: T,
  options: DemoOptions = {},
  { port = 0, setup, beforeListen }: { port?: number, setup?: (app: DemoApp) => void, beforeListen?: (app: DemoApp) => unknown } = {}
): Promise<{ app: DemoApp, port: number, origin: string, close: () => Promise<void> }> {
  const app = await buildDemo(options)
  let closing: Promise<void> | null = null
  const close = (): Promise<void> => (closing ??= app.close())
  t.teardown(close)
  setup?.(app)
  if (beforeListen !== undefined) {
    await app.ready()
    await beforeListen(app)
  }
  await app.listen({ port, host: '127.0.0.1' })
  const address = app.server.address()
  const actual = typeof address === 'object' && address !== null ? address.port : port
  const scheme = options.http2 !== undefined ? 'https' : 'http'
  return { app, port: actual, origin: `${scheme}://127.0.0.1:${actual}`, close }
}

/** Polls `check` every 10 ms until it is true; rejects after `ms` saying what it waited for. */
export async function until (what: string, check: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}
