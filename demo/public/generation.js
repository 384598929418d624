// The generation page: plain ESM, importing the built client (/client.js).
// "Start" POSTs /api/generations (a producer run on the server) and puts its
// id in the URL; the page then follows it to its end with follow():
// - the client keeps the last event id in sessionStorage (`gen:<id>:last`),
//   and this page keeps the text it rendered next to it (`gen:<id>:text`),
//   written in the same token handler, so the two always agree;
// - after a reload the page shows the stored text and the client resumes
//   after the stored id: the server sends exactly the tokens it lacks;
// - a second tab (no stored id there) follows from the start;
// - at the end (done, or the hub's end: cancelled, error, lost) both keys are
//   removed, so a reload later replays the whole generation from history;
// - 404 (unknown, or expired past the channel's ttl) is shown as such, apart
//   from a network problem (the client reconnects: "reconnecting").
import { follow } from '/client.js'

const $ = (selector) => document.querySelector(selector)

// What the page has seen, for the curious (and for the end-to-end tests).
const seen = window.gen = {
  id: null,
  status: 'idle',
  resumedFrom: null,
  restored: '',
  tokens: [],
  end: null,
  error: null,
  states: []
}

let current = null

function show (status, text) {
  seen.status = status
  const pill = $('#state')
  pill.textContent = text ?? status
  pill.className = 'pill ' + status
}

function outcome (text) {
  const p = $('#outcome')
  p.textContent = text
  p.hidden = text === ''
}

const keys = (id) => ({ last: `gen:${id}:last`, text: `gen:${id}:text` })

function followGeneration (id) {
  current?.close()
  seen.id = id
  seen.tokens = []
  seen.end = null
  seen.error = null
  $('#gen-id').textContent = id
  $('#cancel').disabled = false
  const second = $('#second')
  second.href = `/generation?id=${encodeURIComponent(id)}`
  second.hidden = false
  outcome('')
  const { last, text: textKey } = keys(id)
  // The text this tab rendered before a reload, kept with the id it ends at.
  let text = sessionStorage.getItem(last) !== null ? (sessionStorage.getItem(textKey) ?? '') : ''
  if (text === '') sessionStorage.removeItem(textKey)
  seen.restored = text
  const box = $('#text')
  box.textContent = text
  let count = 0
  show('connecting')

  const f = current = follow(`/api/generations/${encodeURIComponent(id)}/stream`, {
    token: (data, meta) => {
      text += data.text
      count++
      seen.tokens.push(data.text)
      sessionStorage.setItem(textKey, text)
      box.textContent = text
      $('#count').textContent = String(count)
      $('#last-id').textContent = meta.id
    }
  }, {
    until: 'done',
    storageKey: last,
    onStateChange: (state) => {
      seen.states.push(state)
      if (f !== current || state === 'closed') return
      if (state === 'open') show('streaming')
      // The EventSource lost the connection and is retrying: a network problem, not the end.
      else show('reconnecting', 'reconnecting…')
    },
    onReset: () => outcome('The server could not replay what this tab missed (reset): start again for the whole text.')
  })
  seen.resumedFrom = f.resumedFrom ?? null
  if (f.resumedFrom !== undefined) outcome(`Resumed after ${f.resumedFrom}: ${text.length} characters were already here.`)

  f.finished.then(end => {
    if (f !== current) return
    sessionStorage.removeItem(textKey)
    seen.end = end
    $('#cancel').disabled = true
    if (end.event === 'done') show('done')
    else if (end.event === 'end') show(end.data.reason, end.data.reason === 'cancelled' ? 'cancelled' : `ended: ${end.data.reason}`)
    // 204: this tab already had the end before the reload.
    else show('done', 'already finished')
  }, err => {
    if (f !== current || err.code === 'FST_ERR_SSEHUB_CLIENT_CLOSED') return
    seen.error = { code: err.code, status: err.status }
    $('#cancel').disabled = true
    if (err.code === 'FST_ERR_SSEHUB_STREAM_NOT_FOUND') {
      sessionStorage.removeItem(textKey)
      show('missing', 'not found or expired')
      outcome('This generation does not exist, or it finished long enough ago that the server forgot it.')
    } else {
      show('failed', `error ${err.status ?? ''}`)
      outcome(err.message)
    }
  })
}

$('#start').addEventListener('click', async () => {
  $('#start').disabled = true
  try {
    const res = await fetch('/api/generations', { method: 'POST' })
    if (!res.ok) throw new Error(`POST /api/generations: ${res.status}`)
    const { id } = await res.json()
    window.history.pushState(null, '', `/generation?id=${encodeURIComponent(id)}`)
    followGeneration(id)
  } catch (err) {
    show('failed', 'error')
    outcome(String(err))
  } finally {
    $('#start').disabled = false
  }
})

$('#cancel').addEventListener('click', async () => {
  if (seen.id === null) return
  $('#cancel').disabled = true
  await fetch(`/api/generations/${encodeURIComponent(seen.id)}/cancel`, { method: 'POST' }).catch(err => outcome(String(err)))
})

const initial = new URLSearchParams(window.location.search).get('id')
if (initial) followGeneration(initial)
