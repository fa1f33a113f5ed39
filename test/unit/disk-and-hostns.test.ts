import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mkfsArgs, parseBlkid } from '../../src/backends/disk/index.js';
import { parseSize, toSpec } from '../../src/backends/disk/options.js';
import { translatePath } from '../../src/host/hostns.js';
import { parseMountinfo } from '../../src/host/mountinfo.js';

describe('disk options', () => {
  it('parse sizes in binary units, rounded down to 4 KiB', () => {
    assert.equal(parseSize('10G'), 10 * 2 ** 30);
    assert.equal(parseSize('512M'), 512 * 2 ** 20);
    assert.equal(parseSize('1.5GiB'), 1.5 * 2 ** 30);
    assert.equal(parseSize('5000'), 4096);
    assert.throws(() => parseSize('10 apples'), /expected a size/);
  });
  it('normalise so that equal volumes compare equal', () => {
    assert.deepEqual(toSpec({ type: 'disk', size: '1G' }), toSpec({ TYPE: 'disk', Size: '1024M', fs_type: 'ext4', readOnly: 'false' }));
  });
  it('build the exact mkfs arguments', () => {
    assert.deepEqual(mkfsArgs(toSpec({ type: 'disk', size: '1G', mkfsOptions: '-m 0 -L data' }), '/s/d.img'), [
      'mkfs.ext4',
      ['-q', '-F', '-m', '0', '-L', 'data', '/s/d.img'],
    ]);
    assert.deepEqual(mkfsArgs(toSpec({ type: 'disk', size: '1G', fsType: 'xfs' }), '/s/d.img'), ['mkfs.xfs', ['-q', '/s/d.img']]);
    assert.throws(() => toSpec({ type: 'disk', size: '1G', mkfsOptions: '-L a;rm' }), /'-L' needs a value/);
    assert.throws(() => toSpec({ type: 'disk', size: '1G', mkfsOptions: '-m' }), /'-m' needs a value/);
  });
});

describe('host paths', () => {
  // The plugin's view: its propagated mount is a bind of a directory on the host's /var/lib disk.
  const plugin = parseMountinfo(
    '600 500 0:60 / / rw - overlay overlay rw\n' +
      '610 600 8:1 /lib/docker/plugins/abc/propagated-mount /mnt/volumes rw shared:1 - ext4 /dev/sda1 rw\n' +
      '611 600 8:1 /lib/ossnas /var/lib/ossnas rw - ext4 /dev/sda1 rw\n',
  );
  // The host's view: /dev/sda1 is mounted at /var.
  const host = parseMountinfo('20 1 8:2 / / rw - ext4 /dev/sda2 rw\n' + '21 20 8:1 / /var rw shared:1 - ext4 /dev/sda1 rw\n');

  it('map a plugin path to the host path of the same directory', () => {
    assert.equal(translatePath('/mnt/volumes/v1', plugin, host), '/var/lib/docker/plugins/abc/propagated-mount/v1');
    assert.equal(translatePath('/var/lib/ossnas/disks/v1.img', plugin, host), '/var/lib/ossnas/disks/v1.img');
  });
  it('say when the host cannot see it', () => {
    assert.equal(translatePath('/etc/hosts', plugin, host), undefined);
  });
});

describe('disk: what blkid found', () => {
  it('reads the filesystem type and the partition table type from its export output', () => {
    assert.deepEqual(parseBlkid('DEVNAME=/dev/loop3\nUUID=b749\nTYPE=ext4\nUSAGE=filesystem\n'), { fsType: 'ext4' });
    assert.deepEqual(parseBlkid('DEVNAME=/dev/vda\nPTUUID=1c2f\nPTTYPE=gpt\n'), { partitionTable: 'gpt' });
    assert.deepEqual(parseBlkid(''), {});
  });
});
