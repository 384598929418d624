/**
 * CommonJS on purpose, in both builds: `require` here resolves the optional
 * TypeBox peers from this package's own place in node_modules, synchronously
 * (channels are declared at module load), without `import.meta`, which the
 * CommonJS build cannot hold. `export =`, so that ESM sees it as the default
 * export whoever transpiles it.
 */
export = { requirePeer: require as NodeJS.Require }
