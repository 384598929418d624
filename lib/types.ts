/**
 * Schema types that work with both TypeBox majors without depending on
 * either: `typebox` 1.x and `@sinclair/typebox` 0.32-0.34 (whichever the app
 * installed). Nothing here is imported at run time.
 */
// `typebox` is an optional peer: where an app only has @sinclair/typebox,
// this import does not resolve (scripts/build.js puts a @ts-ignore above it
// in the emitted declarations, so projects without skipLibCheck compile),
// and the 0.34 branch of Static below, the one such an app's schemas take,
// never reads it.
import type { Static as StaticV1 } from 'typebox'

/** A payload schema: a TypeBox schema of either major. */
export type Schema = object

/**
 * The payload type of `T`, as its own TypeBox major infers it: a
 * `@sinclair/typebox` 0.x schema carries its type in the phantom `static`
 * and `params` properties (what its `Static` reads); a `typebox` 1.x schema
 * is inferred by 1.x's own `Static`, so both equal what the type providers
 * give `request.body` for the same schema.
 */
export type Static<T> =
  T extends { static: unknown, params: unknown[] }
    ? (T & { params: [] })['static']
    : T extends object ? StaticV1<T> : never
