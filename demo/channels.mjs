// The demo's channel definitions, in a module of their own: no app needed.
// A server attaches them with app.sse.channel(def); a typed client imports
// only their types (see typetests/ for the TypeScript side).
//
// One definition belongs to one hub, so this module hands out a fresh set
// per app (the tests run several demo apps in one process).
import { Type } from '@sinclair/typebox'
import { defineChannel } from '../dist/esm/index.js'

export const Price = Type.Object({
  symbol: Type.String({ minLength: 1, maxLength: 8 }),
  price: Type.Number({ minimum: 0 }),
  /** Percent change since the demo started. */
  change: Type.Number(),
  at: Type.Number()
})

export const Halt = Type.Object({
  symbol: Type.String(),
  reason: Type.Union([Type.Literal('volatility'), Type.Literal('news')]),
  /** How long trading is halted, in ms. */
  for: Type.Integer({ minimum: 0 })
})

export const Message = Type.Object({
  user: Type.String({ minLength: 1, maxLength: 24 }),
  text: Type.String({ minLength: 1, maxLength: 280 }),
  at: Type.Number()
})

export const Token = Type.Object({ text: Type.String({ maxLength: 64 }) })
export const Done = Type.Object({ reason: Type.String() })

/**
 * A fresh `{ ticker, room, generation }`: a live price ticker, chat rooms
 * (`rooms/:roomId`), and simulated LLM generations (`generations/:id`), each
 * kept whole while it runs and for `ttl` ms after (10 minutes by default).
 */
export function demoChannels ({ ttl = 600_000 } = {}) {
  return {
    ticker: defineChannel('ticker', { events: { price: Price, halt: Halt } }),
    room: defineChannel('rooms/:roomId', { events: { message: Message } }),
    generation: defineChannel('generations/:id', { events: { token: Token, done: Done }, history: { limit: 10_000, ttl } })
  }
}
