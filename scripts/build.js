// Builds dist/esm (ESM) and dist/cjs (CommonJS) from lib/ with tsc, .d.ts
// emitted from source for both. The CJS entry is then made the plugin
// function itself, with every named export on it, the way Fastify plugins
// export: require('fastify-sse-hub') is registrable as is.
import { execFileSync } from 'node:child_process'
import { rmSync, writeFileSync, appendFileSync } from 'node:fs'

const tsc = (...args) => execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', ...args], { stdio: 'inherit' })

rmSync('dist', { recursive: true, force: true })
tsc('-p', 'tsconfig.json')
tsc('-p', 'tsconfig.json', '--module', 'commonjs', '--moduleResolution', 'node10', '--outDir', 'dist/cjs')
writeFileSync('dist/esm/package.json', '{ "type": "module" }\n')
writeFileSync('dist/cjs/package.json', '{ "type": "commonjs" }\n')
appendFileSync('dist/cjs/index.js', '\nmodule.exports = Object.assign(exports.default, exports);\n')
