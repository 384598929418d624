/**
 * Child processes that cannot outlive the test: `spawnGuarded` runs the
 * command in a session of its own under a small `sh` watchdog that holds a
 * pipe from this process. When the pipe closes (stop(), or this process
 * dying in any way, SIGKILL included) the watchdog kills the command's
 * whole process group, its own children too (MiniBrowser and its WebKit
 * processes under WebKitWebDriver).
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process'

export interface Guarded {
  /** The watchdog (its stdio beyond stdin is the command's). */
  child: ChildProcess
  /** Kills the command's process group and waits (bounded) for the watchdog to exit. */
  stop: () => Promise<void>
}

// Background jobs of a non-interactive sh read /dev/null: only `read` sees the pipe.
const WATCHDOG = 'setsid "$@" & c=$!; read _ || true; kill -KILL -- -"$c" 2>/dev/null || kill -KILL "$c" 2>/dev/null; wait'

/** Spawns `command args` guarded; `stdio[0]` is always the watchdog's pipe. */
export function spawnGuarded (command: string, args: string[], { stdio = ['pipe', 'ignore', 'ignore'], env }: { stdio?: StdioOptions, env?: NodeJS.ProcessEnv } = {}): Guarded {
  const io = (Array.isArray(stdio) ? [...stdio] : [stdio, stdio, stdio]) as unknown[]
  io[0] = 'pipe'
  const child = spawn('sh', ['-c', WATCHDOG, 'sh', command, ...args], { stdio: io as StdioOptions, env })
  const exited = new Promise<void>(resolve => {
    if (child.exitCode !== null || child.signalCode !== null) resolve()
    else child.once('exit', () => resolve())
  })
  // Never keep this process alive for the watchdog's sake.
  child.unref()
  return {
    child,
    async stop () {
      child.stdin?.end()
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000)
      await exited
      clearTimeout(timer)
    }
  }
}
