// Builds dist/esm (ESM) and dist/cjs (CommonJS) from lib/ with tsc, .d.ts
// emitted from source for both, each with source and declaration maps (so
// "go to definition" lands in lib/, shipped in the package). The CJS entry is
// then made the plugin function itself, with every named export on it, the
// way Fastify plugins export: require('fastify-sse-hub') is registrable as is.
import { execFileSync } from 'node:child_process'
import path from 'node:path'
import { rmSync, writeFileSync, appendFileSync, readFileSync, readdirSync } from 'node:fs'

const tsc = (...args) => execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', ...args], { stdio: 'inherit' })

rmSync('dist', { recursive: true, force: true })
const maps = ['--sourceMap', '--declarationMap']
tsc('-p', 'tsconfig.json', ...maps)
tsc('-p', 'tsconfig.json', '--sourceMap', '--declaration', 'false', '--module', 'commonjs', '--moduleResolution', 'node10', '--outDir', 'dist/cjs')
writeFileSync('dist/esm/package.json', '{ "type": "module" }\n')
writeFileSync('dist/cjs/package.json', '{ "type": "commonjs" }\n')
appendFileSync('dist/cjs/index.js', '\nmodule.exports = Object.assign(exports.default, exports);\n')

// `typebox` (1.x) is an optional peer: an app on @sinclair/typebox 0.34 does
// not have it, and its type import must not fail there without skipLibCheck
// (lib/types.ts says why nothing reads it then). tsc drops comments above
// imports in declarations, so the ignore is put back here.
const TYPEBOX_IMPORT = "import type { Static as StaticV1 } from 'typebox';"
{
  const file = 'dist/esm/types.d.ts'
  const dts = readFileSync(file, 'utf8')
  if (!dts.includes(TYPEBOX_IMPORT)) throw new Error(`build: ${file} no longer holds the typebox type import this script guards`)
  writeFileSync(file, dts.replace(TYPEBOX_IMPORT, '// @ts-ignore -- resolves only where the optional peer typebox 1.x is installed\n' + TYPEBOX_IMPORT))
}

// One set of declarations, the ESM build's. If dist/cjs had its own, a
// project with both .ts and .cts files would see Fastify augmented twice with
// two distinct SseStream types (TS2717). So dist/cjs/*.d.ts re-export the ESM
// ones (TypeScript 5.8+ reads ESM declarations from CommonJS under nodenext,
// as Node's require(esm) does), and the entry's is `export =`: the plugin
// function with every named export on it, as the CJS build's module.exports
// is, so that `import sse = require('fastify-sse-hub')` registers as is.
const ts = (await import('typescript')).default
const entries = ['index', 'redis', 'client', 'testing']
const program = ts.createProgram(entries.map(e => `dist/esm/${e}.d.ts`), { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, skipLibCheck: true, noEmit: true })
const checker = program.getTypeChecker()
for (const file of readdirSync('dist/cjs', { recursive: true })) {
  if (/\.d\.c?ts(\.map)?$/.test(file)) rmSync(`dist/cjs/${file}`)
}
// Each name is aliased from the module that declares it: an alias of an
// `export type { X }` re-export is refused (TS1379).
const modules = new Map()
const aliases = []
for (const symbol of checker.getExportsOfModule(checker.getSymbolAtLocation(program.getSourceFile('dist/esm/index.d.ts')))) {
  if (symbol.name === 'default') continue
  const target = symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol
  const declaration = target.declarations[0]
  const from = path.relative('dist/cjs', declaration.getSourceFile().fileName).replace(/\.d\.ts$/, '.js')
  if (!modules.has(from)) modules.set(from, `m${modules.size}`)
  // `export * as errors`: the alias is the module itself.
  const isModule = ts.isSourceFile(declaration)
  aliases.push(`  export import ${symbol.name} = ${modules.get(from)}${isModule ? '' : '.' + target.name};`)
}
writeFileSync('dist/cjs/index.d.ts', [
  ...[...modules].map(([from, local]) => `import * as ${local} from '${from}';`),
  "import * as hub from '../esm/index.js';",
  '/** The plugin (see `ssePlugin`), with every named export of the package on it. */',
  'declare function fastifySseHub(...args: Parameters<typeof hub.default>): ReturnType<typeof hub.default>;',
  'declare namespace fastifySseHub {',
  ...aliases,
  '  export { ssePlugin as default };',
  '}',
  'export = fastifySseHub;',
  ''
].join('\n'))
for (const entry of entries.filter(e => e !== 'index')) {
  writeFileSync(`dist/cjs/${entry}.d.ts`, `export * from '../esm/${entry}.js';\n`)
}
