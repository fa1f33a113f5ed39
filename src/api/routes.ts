// The Docker volume plugin protocol as dockerd speaks it: POST /<Subsystem>.<Method>, a JSON body
// with no Content-Type, a JSON object back on success (never an empty body) and {"Err": "..."}
// with a non-200 status on failure.
import Router from '@koa/router';
import type Koa from 'koa';
import getRawBody from 'raw-body';
import { z } from 'zod';
import { VolumeError } from '../driver/errors.js';
import type { Call, VolumeDriverProtocol, VolumeInfo } from '../driver/protocol.js';
import type { Logger } from '../log.js';
import { arrivalOf } from './listen.js';

export const CONTENT_TYPE = 'application/vnd.docker.plugins.v1+json';
const BODY_LIMIT = '1mb';
/** BODY_LIMIT in bytes, so that raw-body does not parse '1mb' at every call. */
const BODY_LIMIT_BYTES = 1024 * 1024;
/**
 * The body as UTF-8, a byte order mark dropped (as raw-body's iconv-lite decoder did): one decoder
 * for every call instead of an iconv-lite decoder per call (2 µs).
 */
const utf8 = new TextDecoder('utf-8');

/** A request dockerd (or anyone) got wrong: 400 with a message that says what is wrong. */
class BadRequest extends Error {
  constructor(
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

const NameReq = z.object({ Name: z.string({ error: 'Name must be a string' }) });
const CreateReq = NameReq.extend({
  Opts: z.record(z.string(), z.string({ error: 'every option value must be a string' })).nullish(),
});
const MountReq = NameReq.extend({ ID: z.string({ error: 'ID must be a string' }) });

async function readJson(ctx: Koa.Context, required: boolean): Promise<unknown> {
  let text: string;
  try {
    text = utf8.decode(await getRawBody(ctx.req, { limit: BODY_LIMIT_BYTES }));
  } catch (err) {
    const e = err as { type?: string; message: string };
    if (e.type === 'entity.too.large') throw new BadRequest(`request body is larger than ${BODY_LIMIT}`, 413);
    throw new BadRequest(`request body could not be read: ${e.message}`);
  }
  if (text.trim() === '') {
    if (required) throw new BadRequest('request body is empty; expected a JSON object');
    return {};
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    // V8's message quotes part of the body, which may be a secret: only the position is kept.
    const at = /position (\d+)/.exec((err as Error).message)?.[1];
    throw new BadRequest(`request body is not valid JSON${at ? ` (error at position ${at})` : ''}`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new BadRequest('request body must be a JSON object');
  }
  return body;
}

async function parse<T>(ctx: Koa.Context, schema: z.ZodType<T>): Promise<T> {
  const result = schema.safeParse(await readJson(ctx, true));
  if (!result.success) {
    const detail = result.error.issues
      .map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message))
      .join('; ');
    throw new BadRequest(`bad request body: ${detail}`);
  }
  return result.data;
}

/**
 * The call as the driver sees it: when it arrived (set by protocolMiddleware), and a signal that
 * aborts if the caller hangs up before the answer is sent (Docker gave up on it).
 */
function callOf(ctx: Koa.Context): Call {
  return ctx.state.call as Call;
}

export function createRouter(ready: Promise<VolumeDriverProtocol>): Router {
  const router = new Router();

  router.post('/Plugin.Activate', async (ctx) => {
    await readJson(ctx, false); // legacy dockerd sends no body at all
    ctx.body = { Implements: ['VolumeDriver'] };
  });

  router.post('/VolumeDriver.Create', async (ctx) => {
    const req = await parse(ctx, CreateReq);
    ctx.state.volume = req.Name;
    await (await ready).create(req.Name, req.Opts, callOf(ctx));
    ctx.body = { Err: '' };
  });

  router.post('/VolumeDriver.Remove', async (ctx) => {
    const req = await parse(ctx, NameReq);
    ctx.state.volume = req.Name;
    await (await ready).remove(req.Name, callOf(ctx));
    ctx.body = { Err: '' };
  });

  router.post('/VolumeDriver.Mount', async (ctx) => {
    const req = await parse(ctx, MountReq);
    ctx.state.volume = req.Name;
    ctx.body = { Mountpoint: await (await ready).mount(req.Name, req.ID, callOf(ctx)), Err: '' };
  });

  router.post('/VolumeDriver.Unmount', async (ctx) => {
    const req = await parse(ctx, MountReq);
    ctx.state.volume = req.Name;
    await (await ready).unmount(req.Name, req.ID, callOf(ctx));
    ctx.body = { Err: '' };
  });

  router.post('/VolumeDriver.Path', async (ctx) => {
    const req = await parse(ctx, NameReq);
    ctx.state.volume = req.Name;
    ctx.body = { Mountpoint: (await ready).path(req.Name), Err: '' };
  });

  router.post('/VolumeDriver.Get', async (ctx) => {
    const req = await parse(ctx, NameReq);
    ctx.state.volume = req.Name;
    ctx.body = { Volume: await (await ready).inspect(req.Name), Err: '' };
  });

  // About 120 bytes a volume, and dockerd lists at every start and `docker volume ls`: serialised
  // once per Create or Remove (the driver hands out the same array until then).
  const listBodies = new WeakMap<readonly VolumeInfo[], string>();
  router.post('/VolumeDriver.List', async (ctx) => {
    await readJson(ctx, false);
    const volumes = (await ready).list();
    let body = listBodies.get(volumes);
    if (body === undefined) {
      body = JSON.stringify({ Volumes: volumes, Err: '' });
      listBodies.set(volumes, body);
    }
    ctx.body = body;
  });

  router.post('/VolumeDriver.Capabilities', async (ctx) => {
    await readJson(ctx, false);
    ctx.body = { Capabilities: (await ready).capabilities() };
  });

  return router;
}

/** Told of every answered call (for metrics): its name as in the log line, HTTP status, seconds. */
export type CallObserver = (call: string, status: number, seconds: number) => void;

/**
 * Calls that only read state, logged at debug when they succeed: dockerd sends a Get before every
 * Mount, Unmount and `docker volume inspect`, and the info line (a write to stdout per call) was
 * the largest cost of a Get. Their failures, and every call that changes something, stay at info.
 */
const READS = new Set(['/VolumeDriver.Get', '/VolumeDriver.Path', '/VolumeDriver.List', '/VolumeDriver.Capabilities']);

/**
 * Every answer is JSON; every failure is {Err}; one log line per call, with the volume, the time
 * taken and the outcome: at info (at warn when the plugin failed it), at debug for a read that
 * succeeded.
 */
export function protocolMiddleware(log: Logger, observe?: CallObserver): Koa.Middleware {
  return async (ctx, next) => {
    const started = performance.now();
    // Set first, so that Koa's body setter does not look up a type of its own for each answer.
    ctx.set('Content-Type', CONTENT_TYPE);
    const hungUp = new AbortController();
    // 'close' before the answer is written: the caller went away (Docker's own deadline passed).
    ctx.res.once('close', () => {
      if (!ctx.res.writableFinished) hungUp.abort();
    });
    ctx.state.call = { arrivedAt: arrivalOf(ctx.req, started), signal: hungUp.signal } satisfies Call;
    try {
      await next();
      if (ctx.body === undefined) {
        ctx.status = ctx.method === 'POST' ? 404 : 405;
        ctx.body = {
          Err:
            ctx.method === 'POST'
              ? `ossnas does not implement ${ctx.path}; it serves Plugin.Activate and VolumeDriver.*`
              : `method ${ctx.method} not allowed: the plugin protocol uses POST`,
        };
      }
    } catch (err) {
      if (err instanceof BadRequest) {
        ctx.status = err.status;
        // The rest of an oversized body was never read: this connection cannot carry another request.
        if (err.status === 413) ctx.set('Connection', 'close');
        ctx.body = { Err: `${ctx.path.slice(1)}: ${err.message}` };
      } else if (err instanceof VolumeError) {
        ctx.status = 500;
        ctx.state.errorKind = err.kind;
        ctx.body = { Err: err.message };
      } else {
        ctx.status = 500;
        ctx.body = { Err: `internal error in ${ctx.path.slice(1)}: ${(err as Error).message}` };
        log.error({ err, path: ctx.path }, 'internal error');
      }
    }
    const ms = performance.now() - started;
    const status = ctx.status;
    const path = ctx.path;
    const call = path.slice(1);
    // dockerd asks every driver it knows about a volume it cannot place: "no such volume" is no warning.
    const level = status >= 500 && ctx.state.errorKind !== 'not-found' ? 'warn' : status === 200 && READS.has(path) ? 'debug' : 'info';
    if (log.isLevelEnabled(level)) {
      const line = {
        call,
        volume: ctx.state.volume as string | undefined,
        ms: Math.round(ms * 100) / 100,
        status,
        ...(status !== 200 && { err: (ctx.body as { Err?: string }).Err }),
      };
      log[level](line, level === 'warn' ? 'call failed' : 'call');
    }
    // Paths nobody serves are counted under one name: a scanner must not create a series per path.
    observe?.(status === 404 || status === 405 ? 'other' : call, status, ms / 1000);
  };
}
