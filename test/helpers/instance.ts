/**
 * App instances in child processes, for the multi-process tests: a fixture
 * script (test/fixtures/*.mjs) that prints its URL as one JSON line. The
 * child is killed at the test's end (SIGCONT first, in case it was stopped).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import type { T } from './index.js'

export interface Instance { url: string, child: ChildProcess }

/** Starts `test/fixtures/<name>` with `args`; resolves once it printed its URL. */
export function startInstance (t: T, name: string, args: string[]): Promise<Instance> {
  const fixture = fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url))
  const child: ChildProcess = spawn(process.execPath, [fixture, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { child.kill('SIGCONT'); child.kill('SIGKILL') })
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start`)), 15_000)
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', line => {
      clearTimeout(timer)
      resolve({ url: JSON.parse(line).url, child })
    })
    child.once('exit', code => reject(new Error(`${name} exited with ${code}`)))
  })
}
