// follow()'s types: handlers typed like subscribe()'s, `until` limited to the
// channel's events, and `finished` a union of the terminal events with their
// payload types, the hub's `end` (its reason) and the 204 case (event null).
import { describe, expect, test } from 'tstyche'
import { follow, FollowError, type Follow, type FollowEnd, type RunEndReason } from '../lib/client.js'
import type { RunEndReason as ServerRunEndReason } from '../lib/index.js'
import type { ticker } from './channels.js'

describe('follow<typeof channel>()', () => {
  test('handlers get typed data; until takes the channel\'s events only', () => {
    const f = follow<typeof ticker>('/ticker', {
      price: (data, meta) => {
        expect(data).type.toBe<{ symbol: string, price: number }>()
        expect(meta.event).type.toBe<'price'>()
      }
    }, { until: 'halt', storageKey: 'k' })
    expect(f).type.toBe<Follow<typeof ticker>>()
    expect(follow<typeof ticker>).type.toBeCallableWith('/ticker', {}, { until: ['halt', 'price'] })
    expect(follow<typeof ticker>).type.not.toBeCallableWith('/ticker', {}, { until: 'trade' })
    expect(follow<typeof ticker>).type.not.toBeCallableWith('/ticker', { trade: () => {} })
  })

  test('finished resolves to the terminal event, typed; narrowing by event name works', async () => {
    const f = follow<typeof ticker>('/ticker', {}, { until: 'halt' })
    const end = await f.finished
    expect(end).type.toBe<FollowEnd<typeof ticker>>()
    if (end.event === 'halt') expect(end.data.reason).type.toBe<'volatility' | 'news'>()
    if (end.event === 'end') expect(end.data.reason).type.toBe<RunEndReason>()
    if (end.event === null) expect(end.id).type.toBe<string | null>()
  })

  test('the global fetch fits options.fetch', () => {
    expect(follow<typeof ticker>).type.toBeCallableWith('/ticker', {}, { fetch })
  })

  test('the end reasons are the server\'s', () => {
    expect<RunEndReason>().type.toBe<ServerRunEndReason>()
  })

  test('FollowError carries code and status', () => {
    const err = new FollowError('x', 'FST_ERR_SSEHUB_STREAM_NOT_FOUND', 404)
    expect(err.code).type.toBe<string>()
    expect(err.status).type.toBe<number | null>()
    expect(err).type.toBeAssignableTo<Error>()
  })
})
