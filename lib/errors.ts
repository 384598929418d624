/**
 * Every error this package throws, in one place. Each constant is named
 * exactly like its code; each message starts with the package name and says
 * how to fix the problem.
 */
import createError from '@fastify/error'

/** An option given to `register()` is of the wrong type or out of range. */
export const FST_ERR_SSEHUB_OPTION_INVALID = createError<'FST_ERR_SSEHUB_OPTION_INVALID', [string, string]>(
  'FST_ERR_SSEHUB_OPTION_INVALID',
  'fastify-sse-hub: option "%s" %s', 500, TypeError)

/** The plugin was registered twice in the same encapsulation context. */
export const FST_ERR_SSEHUB_ALREADY_REGISTERED = createError<'FST_ERR_SSEHUB_ALREADY_REGISTERED', []>(
  'FST_ERR_SSEHUB_ALREADY_REGISTERED',
  'fastify-sse-hub: the plugin is already registered in this context; register it once, at the root, and use fastify.sse everywhere', 500)

/** `reply.sse()` was called on a reply that was already sent or hijacked. */
export const FST_ERR_SSEHUB_REPLY_SENT = createError<'FST_ERR_SSEHUB_REPLY_SENT', []>(
  'FST_ERR_SSEHUB_REPLY_SENT',
  'fastify-sse-hub: reply.sse() was called on a reply that was already sent or hijacked; call it once per request, before any reply.send()', 500)

/** `reply.sse()` was given something that is neither options nor an (async) iterable. */
export const FST_ERR_SSEHUB_SOURCE_INVALID = createError<'FST_ERR_SSEHUB_SOURCE_INVALID', [string]>(
  'FST_ERR_SSEHUB_SOURCE_INVALID',
  'fastify-sse-hub: reply.sse() takes nothing, an options object or an (async) iterable of events, got %s', 500, TypeError)

/** An option of `reply.sse(options)` is malformed. */
export const FST_ERR_SSEHUB_REPLY_OPTION_INVALID = createError<'FST_ERR_SSEHUB_REPLY_OPTION_INVALID', [string, string]>(
  'FST_ERR_SSEHUB_REPLY_OPTION_INVALID',
  'fastify-sse-hub: reply.sse() option "%s" %s', 500, TypeError)

/** An event given to `send()` is not an object (or a string), or its data cannot be serialised. */
export const FST_ERR_SSEHUB_EVENT_INVALID = createError<'FST_ERR_SSEHUB_EVENT_INVALID', [string]>(
  'FST_ERR_SSEHUB_EVENT_INVALID',
  'fastify-sse-hub: invalid event: %s', 500, TypeError)

/** An `id`, `event` name or comment contains CR, LF or NUL, which would inject fields. */
export const FST_ERR_SSEHUB_FIELD_INVALID = createError<'FST_ERR_SSEHUB_FIELD_INVALID', [string]>(
  'FST_ERR_SSEHUB_FIELD_INVALID',
  'fastify-sse-hub: %s must not contain CR, LF or NUL; strip or encode them before sending', 500, TypeError)

/** A `retry` value is not a whole number of milliseconds in range. */
export const FST_ERR_SSEHUB_RETRY_INVALID = createError<'FST_ERR_SSEHUB_RETRY_INVALID', [string]>(
  'FST_ERR_SSEHUB_RETRY_INVALID',
  'fastify-sse-hub: retry must be a whole number of milliseconds from 0 to 2147483647, got %s', 500, TypeError)

/** An encoded event is larger than `maxEventBytes`. */
export const FST_ERR_SSEHUB_EVENT_TOO_LARGE = createError<'FST_ERR_SSEHUB_EVENT_TOO_LARGE', [number, number]>(
  'FST_ERR_SSEHUB_EVENT_TOO_LARGE',
  'fastify-sse-hub: the event is %s bytes once framed, over maxEventBytes (%s); send less or raise the option', 413, RangeError)

/** A channel definition is malformed: bad name, bad event name, or a schema TypeBox cannot compile. */
export const FST_ERR_SSEHUB_CHANNEL_INVALID = createError<'FST_ERR_SSEHUB_CHANNEL_INVALID', [string, string]>(
  'FST_ERR_SSEHUB_CHANNEL_INVALID',
  'fastify-sse-hub: channel "%s" is invalid: %s', 500, TypeError)

/** Two channels were declared with the same name on one hub. */
export const FST_ERR_SSEHUB_CHANNEL_DUPLICATE = createError<'FST_ERR_SSEHUB_CHANNEL_DUPLICATE', [string]>(
  'FST_ERR_SSEHUB_CHANNEL_DUPLICATE',
  'fastify-sse-hub: a channel named "%s" is already declared on this hub; declare each channel once and import it where you need it', 500)

/** A publish named an event the channel does not declare. */
export const FST_ERR_SSEHUB_EVENT_UNKNOWN = createError<'FST_ERR_SSEHUB_EVENT_UNKNOWN', [string, string]>(
  'FST_ERR_SSEHUB_EVENT_UNKNOWN',
  'fastify-sse-hub: channel "%s" declares no event "%s"; add it to the channel\'s events', 400)

/** A published payload does not match its event's schema; nothing was stored or sent. */
export const FST_ERR_SSEHUB_PAYLOAD_INVALID = createError<'FST_ERR_SSEHUB_PAYLOAD_INVALID', [string, string, string, string]>(
  'FST_ERR_SSEHUB_PAYLOAD_INVALID',
  'fastify-sse-hub: invalid payload for event "%s" on channel "%s" at "%s": %s', 400)

/** Topic parameters are missing, or a value is not a safe topic segment. */
export const FST_ERR_SSEHUB_TOPIC_INVALID = createError<'FST_ERR_SSEHUB_TOPIC_INVALID', [string, string]>(
  'FST_ERR_SSEHUB_TOPIC_INVALID',
  'fastify-sse-hub: invalid topic of channel "%s": %s', 400)

/** A channel's `authorize` refused a subscription. */
export const FST_ERR_SSEHUB_FORBIDDEN = createError<'FST_ERR_SSEHUB_FORBIDDEN', [string]>(
  'FST_ERR_SSEHUB_FORBIDDEN',
  'fastify-sse-hub: subscription to "%s" refused', 403)

/** The hub is closed (the app is shutting down); nothing was published. */
export const FST_ERR_SSEHUB_CLOSED = createError<'FST_ERR_SSEHUB_CLOSED', []>(
  'FST_ERR_SSEHUB_CLOSED',
  'fastify-sse-hub: the hub is closed; publish before fastify.close()', 503)

/** The backend cannot take a publish now (for example Redis is unreachable); nothing was published. */
export const FST_ERR_SSEHUB_BACKEND_UNAVAILABLE = createError<'FST_ERR_SSEHUB_BACKEND_UNAVAILABLE', [string]>(
  'FST_ERR_SSEHUB_BACKEND_UNAVAILABLE',
  'fastify-sse-hub: the backend is unavailable (%s); nothing was published, retry later', 503)

/** A tag given to `reply.sse({ tags })` or `fastify.sse.disconnect({ tag })` is malformed. */
export const FST_ERR_SSEHUB_TAG_INVALID = createError<'FST_ERR_SSEHUB_TAG_INVALID', [string]>(
  'FST_ERR_SSEHUB_TAG_INVALID',
  'fastify-sse-hub: a tag must be a string of 1 to 128 printable ASCII characters, got %s', 500, TypeError)

/** The backend did not answer a publish within its command timeout; the event may still be published. */
export const FST_ERR_SSEHUB_BACKEND_TIMEOUT = createError<'FST_ERR_SSEHUB_BACKEND_TIMEOUT', [number]>(
  'FST_ERR_SSEHUB_BACKEND_TIMEOUT',
  'fastify-sse-hub: the backend did not answer within %s ms; the event may still be published when it answers, so retry only with an idempotent payload, or raise commandTimeout', 503)

/** A durable publish was not acknowledged by enough replicas in time; the event may still exist and be delivered. */
export const FST_ERR_SSEHUB_PUBLISH_NOT_REPLICATED = createError<'FST_ERR_SSEHUB_PUBLISH_NOT_REPLICATED', [number, number, number]>(
  'FST_ERR_SSEHUB_PUBLISH_NOT_REPLICATED',
  'fastify-sse-hub: only %s of the %s replicas required by the durable option acknowledged the publish within %s ms; the event was stored on the primary and may have been delivered, but a failover now may lose it: retry only with an idempotent payload, or check the replicas', 503)

/** Redis could not be reached while the plugin started. */
export const FST_ERR_SSEHUB_REDIS_UNREACHABLE = createError<'FST_ERR_SSEHUB_REDIS_UNREACHABLE', [string, number, string]>(
  'FST_ERR_SSEHUB_REDIS_UNREACHABLE',
  'fastify-sse-hub: Redis at %s did not answer within %s ms (%s); start Redis, fix the url or redisOptions, or raise the startTimeout option', 500)

/** A producer run's publish came after its run had ended (cancelled, or its lease lost): fenced off, nothing was published. */
export const FST_ERR_SSEHUB_RUN_ENDED = createError<'FST_ERR_SSEHUB_RUN_ENDED', [string]>(
  'FST_ERR_SSEHUB_RUN_ENDED',
  'fastify-sse-hub: the run on topic "%s" has ended (cancelled, or its instance lost its lease); nothing more is published into it', 409)

/** `fastify.sse.run()` on a topic where a run is still running (in any instance). */
export const FST_ERR_SSEHUB_RUN_ACTIVE = createError<'FST_ERR_SSEHUB_RUN_ACTIVE', [string]>(
  'FST_ERR_SSEHUB_RUN_ACTIVE',
  'fastify-sse-hub: a run on topic "%s" is still running; cancel it first (fastify.sse.cancel(topic)) or use another topic', 409)

/** A follow (`reply.sse({ until })`) of a topic with nothing in history and no run: never started, or expired. */
export const FST_ERR_SSEHUB_STREAM_NOT_FOUND = createError<'FST_ERR_SSEHUB_STREAM_NOT_FOUND', [string]>(
  'FST_ERR_SSEHUB_STREAM_NOT_FOUND',
  'fastify-sse-hub: nothing to follow on "%s": no event is in history and no run is running (it never started, or its history expired)', 404)

/** The backend in use cannot run producers (`fastify.sse.run()`): it has no `runs` capability. */
export const FST_ERR_SSEHUB_RUNS_UNSUPPORTED = createError<'FST_ERR_SSEHUB_RUNS_UNSUPPORTED', [string]>(
  'FST_ERR_SSEHUB_RUNS_UNSUPPORTED',
  'fastify-sse-hub: the %s backend has no runs capability; fastify.sse.run() needs the memory or Redis backend, or a backend implementing RunStore', 500)
