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

/** A fresh `{ ticker, room }`: a live price ticker, and chat rooms (`rooms/:roomId`). */
export function demoChannels () {
  return {
    ticker: defineChannel('ticker', { events: { price: Price, halt: Halt } }),
    room: defineChannel('rooms/:roomId', { events: { message: Message } })
  }
}
