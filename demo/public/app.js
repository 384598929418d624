// The demo page: plain ESM, importing the built client (served at /client.js).
// It loads the state once (prices, messages, and the id of the last event
// they include), then subscribes from exactly that id. When the hub says
// `reset` (it could not replay a gap, e.g. after a restart of a memory-backed
// server), it loads the state again and subscribes from the new id.
import { subscribe } from '/client.js'

const roomId = new URLSearchParams(window.location.search).get('room') || 'lobby'
const $ = (selector) => document.querySelector(selector)

// What the page has seen, for the curious (and for the end-to-end tests).
const seen = window.demo = {
  events: [],
  resets: [],
  states: [],
  stateLoads: 0,
  errors: [],
  publishErrors: [],
  state: 'connecting',
  lastEventId: null,
  firstEventAt: null,
  subscriptions: 0,
  // performance.now() at: this script's start, the state loaded, the first open
  marks: { script: performance.now(), stateLoaded: null, open: null }
}
const MAX_SEEN = 20000

const prices = new Map() // symbol -> { price, change, at, id }
const halts = new Map() // symbol -> until (ms)
const messageIds = new Set()
let sub = null

function record (event, data, id) {
  if (seen.firstEventAt === null) seen.firstEventAt = performance.now()
  seen.events.push({ event, id, data })
  if (seen.events.length > MAX_SEEN) seen.events.shift()
  seen.lastEventId = id
  $('#last-id').textContent = id
  $('#activity').textContent = `${event} ${id} at ${new Date().toLocaleTimeString()}`
}

// ---- ticker ---------------------------------------------------------------

function renderPrice (symbol, previous) {
  const p = prices.get(symbol)
  let row = document.getElementById('sym-' + symbol)
  if (row === null) {
    row = document.createElement('tr')
    row.id = 'sym-' + symbol
    row.innerHTML = '<td class="symbol"></td><td class="num price"></td><td class="num change"></td><td class="num when"></td>'
    const rows = [...$('#prices').children]
    const after = rows.find(r => r.id > row.id)
    $('#prices').insertBefore(row, after ?? null)
  }
  const [cSymbol, cPrice, cChange, cWhen] = row.children
  cSymbol.textContent = symbol
  if ((halts.get(symbol) ?? 0) > Date.now()) {
    const badge = document.createElement('span')
    badge.className = 'halted'
    badge.textContent = 'HALTED'
    cSymbol.append(badge)
  }
  cPrice.textContent = p.price.toFixed(2)
  cChange.textContent = (p.change > 0 ? '+' : '') + p.change.toFixed(2) + '%'
  cChange.className = 'num change ' + (p.change >= 0 ? 'up' : 'down')
  cWhen.textContent = new Date(p.at).toLocaleTimeString()
  if (previous !== undefined && previous !== p.price) {
    cPrice.classList.remove('flash-up', 'flash-down')
    void cPrice.offsetWidth
    cPrice.classList.add(p.price > previous ? 'flash-up' : 'flash-down')
  }
}

function onPrice (data, meta) {
  record(meta.event, data, meta.id)
  const previous = prices.get(data.symbol)?.price
  prices.set(data.symbol, { ...data, id: meta.id })
  renderPrice(data.symbol, previous)
}

function onHalt (data, meta) {
  record(meta.event, data, meta.id)
  halts.set(data.symbol, Date.now() + data.for)
  if (prices.has(data.symbol)) renderPrice(data.symbol)
  setTimeout(() => { if (prices.has(data.symbol)) renderPrice(data.symbol) }, data.for + 50)
}

// ---- room -----------------------------------------------------------------

function appendMessage (m) {
  if (messageIds.has(m.id)) return
  messageIds.add(m.id)
  const list = $('#messages')
  list.querySelector('.empty')?.remove()
  const li = document.createElement('li')
  li.dataset.id = m.id
  const who = document.createElement('span')
  who.className = 'who'
  who.textContent = m.user
  const at = document.createElement('span')
  at.className = 'at'
  at.textContent = new Date(m.at).toLocaleTimeString()
  const text = document.createElement('span')
  text.className = 'text'
  text.textContent = m.text
  li.append(at, who, text)
  list.append(li)
  while (list.children.length > 50) list.firstElementChild.remove()
  list.scrollTop = list.scrollHeight
}

function onMessage (data, meta) {
  record(meta.event, data, meta.id)
  appendMessage({ ...data, id: meta.id })
}

$('#send').addEventListener('submit', async (e) => {
  e.preventDefault()
  const error = $('#form-error')
  const body = { user: $('#user').value, text: $('#text').value }
  let res
  try {
    res = await fetch(`/api/rooms/${encodeURIComponent(roomId)}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body)
    })
  } catch (err) {
    error.textContent = `could not send: ${err.message}`
    error.hidden = false
    return
  }
  if (res.ok) {
    error.hidden = true
    $('#text').value = ''
    return
  }
  const reply = await res.json().catch(() => ({}))
  seen.publishErrors.push({ status: res.status, ...reply })
  error.textContent = `${res.status} ${reply.code ?? reply.error ?? ''}: ${reply.message ?? res.statusText}`
  error.hidden = false
})

// ---- stream ---------------------------------------------------------------

function renderState (state) {
  const pill = $('#state')
  pill.textContent = state
  pill.className = 'pill ' + state
}

async function loadState () {
  const res = await fetch(`/api/state?room=${encodeURIComponent(roomId)}`)
  if (!res.ok) throw new Error(`GET /api/state: ${res.status}`)
  const state = await res.json()
  seen.stateLoads++
  seen.marks.stateLoaded ??= performance.now()
  $('#backend').textContent = state.backend
  prices.clear()
  $('#prices').replaceChildren()
  for (const h of state.halts) halts.set(h.symbol, h.until)
  for (const p of Object.values(state.prices)) {
    prices.set(p.symbol, p)
    renderPrice(p.symbol)
  }
  messageIds.clear()
  $('#messages').replaceChildren()
  for (const m of state.messages) appendMessage(m)
  if (state.messages.length === 0) {
    const li = document.createElement('li')
    li.className = 'empty'
    li.textContent = 'No messages yet. Say hello!'
    $('#messages').append(li)
  }
  if (state.lastEventId !== null) {
    seen.lastEventId = state.lastEventId
    $('#last-id').textContent = state.lastEventId
  }
  return state
}

function open (lastEventId) {
  seen.subscriptions++
  sub = subscribe(`/events?room=${encodeURIComponent(roomId)}`, {
    price: onPrice,
    halt: onHalt,
    message: onMessage
  }, {
    lastEventId: lastEventId ?? undefined,
    onReset: (info) => {
      seen.resets.push({ ...info, at: performance.now() })
      $('#activity').textContent = `reset (${info.reason}): loading the state again`
      resync().catch(err => seen.errors.push(String(err)))
    },
    onStateChange: (state) => {
      seen.states.push({ state, at: performance.now() })
      seen.state = state
      if (state === 'open') seen.marks.open ??= performance.now()
      renderState(state)
    },
    onError: (err, meta) => seen.errors.push(`${meta.event}: ${err.message}`)
  })
  seen.state = sub.state
  renderState(sub.state)
}

let resyncing = null
function resync () {
  resyncing ??= (async () => {
    sub?.close()
    const state = await loadState()
    open(state.lastEventId)
  })().finally(() => { resyncing = null })
  return resyncing
}

async function pollStats () {
  try {
    const res = await fetch('/api/stats')
    const stats = await res.json()
    for (const dd of document.querySelectorAll('[data-stat]')) dd.textContent = String(stats[dd.dataset.stat])
  } catch {
    for (const dd of document.querySelectorAll('[data-stat]')) dd.textContent = '–'
  }
  setTimeout(pollStats, 1000)
}

$('#room-name').textContent = roomId
resync().catch(err => {
  seen.errors.push(String(err))
  $('#activity').textContent = String(err)
})
pollStats()
