/**
 * A real redis-server for tests: started on a free port with a temp dir and
 * no persistence, stopped by PID. Where redis-server is not installed the
 * suite is skipped with one line saying how to install it, except under
 * CI=true, where its absence fails.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import net from 'node:net'
import { Redis } from 'ioredis'

export const HOW_TO_INSTALL = 'redis-server not found on PATH; install it with: apt-get install -y redis-server'

/** True if redis-server is on PATH. */
export function haveRedis (): boolean {
  return spawnSync('redis-server', ['--version']).status === 0
}

/**
 * Decides whether a Redis suite runs: returns a skip reason, or false.
 * Under CI=true a missing redis-server throws instead.
 */
export function redisSkip (): string | false {
  if (haveRedis()) return false
  if (process.env.CI === 'true') throw new Error(HOW_TO_INSTALL + ' (CI=true: the Redis suites must run)')
  return HOW_TO_INSTALL
}

export function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
    server.on('error', reject)
  })
}

/** One redis-server process. */
export class RedisServer {
  port = 0
  private child: ChildProcess | null = null
  private readonly dir = mkdtempSync(join(tmpdir(), 'sse-hub-redis-'))

  get url (): string {
    return `redis://127.0.0.1:${this.port}`
  }

  /** Starts (or restarts, on the same port) and resolves once it says it accepts connections. */
  async start (port?: number): Promise<this> {
    this.port = port ?? this.port
    if (this.port === 0) this.port = await freePort()
    const child = spawn('redis-server', [
      '--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir,
      '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--loglevel', 'notice'
    ], { stdio: ['ignore', 'pipe', 'pipe'] })
    this.child = child
    await new Promise<void>((resolve, reject) => {
      let out = ''
      const timer = setTimeout(() => reject(new Error('redis-server did not start within 10 s: ' + out)), 10_000)
      const onData = (chunk: Buffer): void => {
        out += chunk.toString()
        if (out.includes('Ready to accept connections')) {
          clearTimeout(timer)
          child.stdout?.removeListener('data', onData)
          child.stdout?.resume()
          resolve()
        }
      }
      child.stdout?.on('data', onData)
      child.stderr?.resume()
      child.once('exit', code => { clearTimeout(timer); reject(new Error(`redis-server exited with ${code}: ${out}`)) })
    })
    return this
  }

  /** Kills the server (SIGKILL: nothing is saved) and resolves once it has exited. */
  async kill (): Promise<void> {
    const child = this.child
    if (child === null || child.exitCode !== null) return
    this.child = null
    await new Promise<void>(resolve => {
      child.once('exit', () => resolve())
      child.kill('SIGKILL')
    })
  }

  /** A fresh client for the test's own commands (FLUSHALL, CLIENT KILL...). */
  client (): Redis {
    return new Redis(this.url, { maxRetriesPerRequest: 1 })
  }

  async stop (): Promise<void> {
    await this.kill()
    rmSync(this.dir, { recursive: true, force: true })
  }
}
