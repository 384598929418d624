// Heavy suites (10,000 sockets, Chromium, the benchmark harness, the fuzzer)
// run one at a time, although tap runs two test files at once: each takes a
// lock (a directory, created atomically) before its first test and gives it
// back when its process exits. Light files run beside them.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const LOCK = join(tmpdir(), 'fastify-sse-hub-heavy-tests.lock')
const WAIT_MS = 8 * 60_000
const POLL_MS = 100

function holderAlive (): boolean {
  let pid: number
  try {
    pid = Number(readFileSync(join(LOCK, 'pid'), 'utf8'))
  } catch {
    return true // being created right now
  }
  if (!Number.isInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Waits (bounded: 8 minutes) until no other heavy suite runs, then holds the
 * lock until this process exits. A lock left by a process that died is taken over.
 */
export async function heavySuite (): Promise<void> {
  const deadline = Date.now() + WAIT_MS
  for (;;) {
    try {
      mkdirSync(LOCK)
      writeFileSync(join(LOCK, 'pid'), String(process.pid))
      process.once('exit', () => rmSync(LOCK, { recursive: true, force: true }))
      return
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    if (!holderAlive()) {
      rmSync(LOCK, { recursive: true, force: true })
      continue
    }
    if (Date.now() > deadline) throw new Error(`another heavy test suite held ${LOCK} for over ${WAIT_MS / 60_000} minutes`)
    // A lock, not a wait for the behaviour under test: poll for its release.
    await new Promise(resolve => setTimeout(resolve, POLL_MS))
  }
}
