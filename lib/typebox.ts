/**
 * Compiles an event schema with the TypeBox that made it: a schema carrying
 * `@sinclair/typebox`'s `Kind` symbol (0.32-0.34) goes to
 * `@sinclair/typebox/compiler`, one carrying TypeBox 1.x's `~kind` to
 * `typebox/compile`. Each is loaded on first use and only if a schema needs
 * it, so an app installs one of the two.
 *
 * A plain object with neither mark is refused rather than compiled as JSON
 * Schema: TypeBox 1.x accepts `{ type: 'nope' }` and then passes every value,
 * so a typo would silently turn validation off.
 */
import peers from './require.cjs'

/** A compiled check: `null` when `value` is valid, else the first bad field. */
export type Checker = (value: unknown) => null | { path: string, message: string }

const KIND_V0 = Symbol.for('TypeBox.Kind')

interface V0Compiler { TypeCompiler: { Compile: (schema: unknown) => { Check: (v: unknown) => boolean, Errors: (v: unknown) => Iterable<{ path: string, message: string }> } } }
interface V1Compiler { Compile: (schema: unknown) => { Check: (v: unknown) => boolean, Errors: (v: unknown) => Array<{ instancePath: string, message: string }> } }

let v0: V0Compiler | null = null
let v1: V1Compiler | null = null

/** Which TypeBox made `schema`: `'0.x'` (`@sinclair/typebox`), `'1.x'` (`typebox`), or `null`. */
export function originOf (schema: object): '0.x' | '1.x' | null {
  if (KIND_V0 in schema) return '0.x'
  if ('~kind' in schema) return '1.x'
  return null
}

/** Compiles `schema` once; throws a plain Error saying why (which package to install, when its TypeBox is missing). */
export function compile (schema: object): Checker {
  const origin = originOf(schema)
  if (origin === null) throw new Error('it is not a TypeBox schema: make it with Type from typebox (1.x) or @sinclair/typebox (0.34)')
  if (origin === '0.x') {
    v0 ??= load<V0Compiler>('@sinclair/typebox/compiler', 'this schema was made with @sinclair/typebox')
    const check = v0.TypeCompiler.Compile(schema)
    return value => {
      if (check.Check(value)) return null
      const first = check.Errors(value)[Symbol.iterator]().next()
      return first.done === true ? { path: '', message: 'does not match the schema' } : { path: first.value.path, message: first.value.message }
    }
  }
  v1 ??= load<V1Compiler>('typebox/compile', 'this schema was made with typebox 1.x')
  const check = v1.Compile(schema)
  return value => {
    if (check.Check(value)) return null
    const first = check.Errors(value)[0]
    return first === undefined ? { path: '', message: 'does not match the schema' } : { path: first.instancePath, message: first.message }
  }
}

function load<M> (id: string, why: string): M {
  try {
    return peers.requirePeer(id) as M
  } catch (err) {
    const code = (err as { code?: string }).code
    const pkg = id.startsWith('@sinclair') ? '@sinclair/typebox' : 'typebox'
    if (code === 'MODULE_NOT_FOUND' || code === 'ERR_MODULE_NOT_FOUND') {
      throw new Error(`${why}, but ${pkg} is not installed: npm i ${pkg}`, { cause: err })
    }
    if (code === 'ERR_REQUIRE_ESM') {
      throw new Error(`${why}; ${pkg} is ESM only and this Node (${process.version}) cannot load it synchronously: use Node 20.19+ or 22.12+, or @sinclair/typebox 0.34`, { cause: err })
    }
    throw err
  }
}
