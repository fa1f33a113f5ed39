// pino JSON lines on stdout; dockerd tags a managed plugin's stdout lines with plugin=<id>.
import { pino, type Logger } from 'pino';
import { LOG_REDACT_PATHS, REDACTED } from './redact.js';

export type { Logger };

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: { name: 'ossnas' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: LOG_REDACT_PATHS, censor: REDACTED },
  };
  return destination ? pino(options, destination) : pino(options);
}
