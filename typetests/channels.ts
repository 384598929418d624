// Channel definitions in a module of their own: no app, no Fastify instance.
// Servers attach them (`app.sse.channel(ticker)`); browser code imports only
// their TYPES (`import type { ticker } from './channels.js'`).
import { Type } from '@sinclair/typebox'
import { defineChannel } from '../lib/index.js'

export const Price = Type.Object({ symbol: Type.String(), price: Type.Number() })
export const Halt = Type.Object({ symbol: Type.String(), reason: Type.Union([Type.Literal('volatility'), Type.Literal('news')]) })
export const Message = Type.Object({ user: Type.String(), text: Type.String(), at: Type.Number() })

export const ticker = defineChannel('ticker', { events: { price: Price, halt: Halt } })
export const room = defineChannel('rooms/:roomId', { events: { message: Message, typing: Type.Object({ user: Type.String() }) } })
export const org = defineChannel('orgs/:org/teams/:team', { events: { note: Type.String() } })
