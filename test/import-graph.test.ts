// lib/ has no import cycle (type-only imports included): each file depends
// on the ones below it, never back (docs/design.md, "Layout").
import t from 'tap'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, normalize } from 'node:path'
import { fileURLToPath } from 'node:url'

const lib = fileURLToPath(new URL('../lib', import.meta.url))

function sources (dir: string): string[] {
  return readdirSync(dir).flatMap(name => {
    const path = join(dir, name)
    return statSync(path).isDirectory() ? sources(path) : /\.c?ts$/.test(name) ? [path] : []
  })
}

t.test('no cycle in the import graph of lib/', async t => {
  const files = sources(lib)
  const graph = new Map<string, string[]>()
  for (const file of files) {
    const deps: string[] = []
    for (const m of readFileSync(file, 'utf8').matchAll(/(?:import|export)[^;]*?from\s+['"](\.[^'"]+)['"]/g)) {
      deps.push(normalize(join(dirname(file), m[1])).replace(/\.js$/, '.ts').replace(/\.cjs$/, '.cts'))
    }
    graph.set(file, deps)
  }
  t.ok(files.length > 20, `${files.length} files read`)
  const state = new Map<string, 'open' | 'done'>()
  const cycles: string[] = []
  const visit = (file: string, path: string[]): void => {
    state.set(file, 'open')
    for (const dep of graph.get(file) ?? []) {
      if (state.get(dep) === 'open') cycles.push([...path, file, dep].slice(path.indexOf(dep) === -1 ? path.length : path.indexOf(dep)).map(f => f.slice(lib.length + 1)).join(' -> '))
      else if (!state.has(dep)) visit(dep, [...path, file])
    }
    state.set(file, 'done')
  }
  for (const file of files) if (!state.has(file)) visit(file, [])
  t.same(cycles, [], 'no cycle')
})
