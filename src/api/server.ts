// The Koa application that serves the plugin protocol.
import Koa from 'koa';
import type { VolumeDriverProtocol } from '../driver/protocol.js';
import type { Logger } from '../log.js';
import { createRouter, protocolMiddleware, type CallObserver } from './routes.js';

export function createApp(ready: Promise<VolumeDriverProtocol>, log: Logger, observe?: CallObserver): Koa {
  const app = new Koa();
  app.silent = true; // errors are answered and logged by protocolMiddleware
  app.use(protocolMiddleware(log, observe));
  app.use(createRouter(ready).routes());
  return app;
}
