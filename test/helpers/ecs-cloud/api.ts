// The region's ECS API endpoint: RPC style as the SDK sends it (POST /, parameters in the query
// or a form body, action and version in x-acs-action / x-acs-version), V3-signed. Answers are
// ECS's JSON; every request, refused or not, is recorded for the tests.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { authenticate, type NonceBook } from './authenticate.js';
import type { Fleet, SimDisk } from './disks.js';
import type { KeyRing } from './keys.js';
import { AcsError, errorBody, isoSeconds, newRequestId, refuse } from './wire.js';

/**
 * up: normal service. down: nothing listens (connections refused). hang: requests are read and
 * never answered. error500: every request is answered InternalError (500), before any check.
 * throttle: every request is answered Throttling.User (400), as ECS's flow control does.
 */
export type FaultMode = 'up' | 'down' | 'hang' | 'error500' | 'throttle';

export interface ApiRecord {
  action: string;
  /** The parameters, decoded, from the query and a form body. */
  params: Record<string, string>;
  /** From Authorization's Credential, whether or not the key exists; '' if there was none. */
  accessKeyId: string;
  securityToken?: string;
  /** 'OK', the error Code answered, or 'NoAnswer' for a request left hanging. */
  code: string;
  at: Date;
}

export interface ApiContext {
  regionId: string;
  keys: KeyRing;
  nonces: NonceBook;
  fleet: Fleet;
  faults: { delayMs: number; delayOnly?: string; mode: FaultMode };
  requests: ApiRecord[];
}

export const API_VERSION = '2014-05-26';
const MAX_BODY = 1 << 20;

type Action = (params: Record<string, string>, ctx: ApiContext) => Record<string, unknown>;

function required(params: Record<string, string>, name: string): string {
  const v = params[name];
  if (v === undefined || v === '') throw refuse.missingParameter(name);
  return v;
}

const actions: Record<string, Action> = {
  AttachDisk(p, ctx) {
    const instanceId = required(p, 'InstanceId');
    const diskId = required(p, 'DiskId');
    // Accepted now, done later (Fleet.attach): the caller polls DescribeDisks.
    void ctx.fleet.attach(diskId, instanceId, p.DeleteWithInstance === 'true');
    return {};
  },
  DetachDisk(p, ctx) {
    const instanceId = required(p, 'InstanceId');
    const diskId = required(p, 'DiskId');
    void ctx.fleet.detach(diskId, instanceId);
    return {};
  },
  DescribeDisks(p, ctx) {
    const regionId = required(p, 'RegionId');
    let ids: string[] | undefined;
    if (p.DiskIds !== undefined) {
      try {
        ids = JSON.parse(p.DiskIds) as string[];
      } catch {
        ids = undefined;
      }
      if (!Array.isArray(ids) || !ids.every((i) => typeof i === 'string') || ids.length > 100) {
        throw new AcsError('InvalidDiskIds.Malformed', 400, 'The specified parameter "DiskIds" is not valid.');
      }
    }
    const pageNumber = p.PageNumber === undefined ? 1 : Number(p.PageNumber);
    const pageSize = p.PageSize === undefined ? 10 : Number(p.PageSize);
    if (!Number.isInteger(pageNumber) || pageNumber < 1) throw refuse.invalidParameter('PageNumber');
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 100) throw refuse.invalidParameter('PageSize');
    const shown = (d: SimDisk) => d.status === 'In_use' || d.status === 'Detaching';
    const matching = ctx.fleet.inRegion(regionId).filter(
      (d) =>
        (ids === undefined || ids.includes(d.diskId)) &&
        (p.InstanceId === undefined || (shown(d) && d.instanceId === p.InstanceId)) &&
        (p.Status === undefined || p.Status === 'All' || p.Status === d.status) &&
        (p.ZoneId === undefined || p.ZoneId === d.zoneId) &&
        (p.DiskType === undefined || p.DiskType === 'all' || p.DiskType === 'data') &&
        (p.Category === undefined || p.Category === 'all' || p.Category === 'cloud_essd'),
    );
    const page = matching.slice((pageNumber - 1) * pageSize, pageNumber * pageSize);
    return {
      TotalCount: matching.length,
      PageNumber: pageNumber,
      PageSize: pageSize,
      NextToken: '',
      Disks: { Disk: page.map(diskView) },
    };
  },
};

/**
 * A disk as DescribeDisks shows it. InstanceId, Device and the attachment appear once the disk
 * is In_use and stay while it is Detaching; Attaching shows none of them yet.
 */
function diskView(d: SimDisk): Record<string, unknown> {
  const attached = d.status === 'In_use' || d.status === 'Detaching';
  const instanceId = attached ? d.instanceId! : '';
  const device = attached ? d.legacyDevice! : '';
  const attachedTime = d.attachedTime === undefined ? '' : isoSeconds(d.attachedTime);
  return {
    DiskId: d.diskId,
    DiskName: '',
    Description: '',
    RegionId: d.regionId,
    ZoneId: d.zoneId,
    Status: d.status,
    Type: 'data',
    Category: 'cloud_essd',
    PerformanceLevel: 'PL0',
    // GiB, rounded up: ECS sizes are whole GiB; ours may be MiB for speed.
    Size: Math.ceil(d.sizeMiB / 1024),
    InstanceId: instanceId,
    Device: device,
    SerialNumber: d.serialNumber,
    Portable: true,
    DeleteWithInstance: d.deleteWithInstance,
    DeleteAutoSnapshot: true,
    EnableAutoSnapshot: false,
    MultiAttach: 'Disabled',
    Encrypted: false,
    DiskChargeType: 'PostPaid',
    ResourceGroupId: '',
    CreationTime: isoSeconds(d.creationTime),
    AttachedTime: attachedTime,
    DetachedTime: d.detachedTime === undefined ? '' : isoSeconds(d.detachedTime),
    Attachments: { Attachment: attached ? [{ InstanceId: instanceId, Device: device, AttachedTime: attachedTime }] : [] },
    OperationLocks: { OperationLock: [] },
    Tags: { Tag: [] },
  };
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw refuse.invalidParameter('body (over 1 MiB)');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

const headerText = (v: string | string[] | undefined) => (Array.isArray(v) ? v.join(',') : v);

export async function serveApi(req: IncomingMessage, res: ServerResponse, ctx: ApiContext): Promise<void> {
  const at = new Date();
  const { delayMs: delayAll, delayOnly, mode } = ctx.faults;
  const rawUrl = req.url ?? '/';
  const q = rawUrl.indexOf('?');
  const path = q < 0 ? rawUrl : rawUrl.slice(0, q);
  const query = [...new URLSearchParams(q < 0 ? '' : rawUrl.slice(q + 1))];
  const record: ApiRecord = {
    action: headerText(req.headers['x-acs-action']) ?? query.find(([k]) => k === 'Action')?.[1] ?? '',
    params: {},
    accessKeyId: /Credential=([^,\s]+)/.exec(headerText(req.headers.authorization) ?? '')?.[1] ?? '',
    code: '',
    at,
  };
  const token = headerText(req.headers['x-acs-security-token']);
  if (token !== undefined) record.securityToken = token;
  ctx.requests.push(record);

  const requestId = newRequestId();
  let status = 200;
  let body: Record<string, unknown>;
  try {
    const raw = await readBody(req);
    const form = /^application\/x-www-form-urlencoded/i.test(headerText(req.headers['content-type']) ?? '')
      ? [...new URLSearchParams(raw.toString('utf8'))]
      : [];
    for (const [k, v] of [...query, ...form]) if (!Object.hasOwn(record.params, k)) record.params[k] = v;
    if (mode === 'hang') {
      record.code = 'NoAnswer';
      return; // the socket stays open until the client gives up or the cloud closes
    }
    if (mode === 'error500') throw refuse.internalError();
    if (mode === 'throttle') throw refuse.throttled();
    body = { RequestId: requestId, ...handle(req, path, query, raw, record.params, ctx) };
    record.code = 'OK';
  } catch (err) {
    if (!(err instanceof AcsError)) throw err;
    record.code = err.code;
    status = err.status;
    body = errorBody(err, requestId, ctx.regionId);
  }
  // The work is done before the delay: a client that gives up waiting may still have changed things.
  // delayOnly: one action is slow (an AttachDisk whose answer comes after the caller gave up).
  const delayMs = delayOnly === undefined || delayOnly === record.action ? delayAll : 0;
  if (delayMs > 0) await sleep(delayMs);
  const text = JSON.stringify(body);
  if (res.destroyed) return;
  res.writeHead(status, {
    'content-type': 'application/json;charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'x-acs-request-id': requestId,
  });
  res.end(text);
}

function handle(req: IncomingMessage, path: string, query: Array<[string, string]>, raw: Buffer, params: Record<string, string>, ctx: ApiContext) {
  // The legacy V2 form (Action, Signature… in the query) is not simulated: refused, saying so.
  if (req.headers.authorization === undefined && query.some(([k]) => k === 'Signature')) {
    throw refuse.incompleteSignature('this simulator takes only ACS3-HMAC-SHA256 (V3) signatures, not the V2 Signature parameter');
  }
  if (path !== '/' || (req.method !== 'POST' && req.method !== 'GET')) {
    throw new AcsError('InvalidAction.NotFound', 404, 'Specified api is not found, please check your url and method.');
  }
  const version = headerText(req.headers['x-acs-version']);
  if (version === undefined) throw refuse.missingParameter('x-acs-version');
  if (version !== API_VERSION) throw new AcsError('InvalidVersion', 400, 'Specified parameter Version is not valid.');
  // V3 names the action only in its (signed) header: an Action parameter is not looked at.
  const name = headerText(req.headers['x-acs-action']);
  if (!name) throw refuse.missingParameter('x-acs-action');
  const action = Object.hasOwn(actions, name) ? actions[name] : undefined;
  if (!action) throw new AcsError('InvalidAction.NotFound', 404, 'Specified api is not found, please check your url and method.');
  authenticate({ method: req.method, path, query, headers: req.headers, body: raw }, ctx.keys, ctx.nonces, Date.now());
  return action(params, ctx);
}
