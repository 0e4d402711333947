/**
 * A fault injector preloaded into a real `imgsearch` process (`node --import <this file> bin/imgsearch.mjs …`).
 * It changes nothing until a control file exists, so a test turns a fault on and off while the
 * process runs, by creating and removing files in `ISS_FAULT_CONTROL` (a directory):
 *
 *   <control>/enospc   every write under `ISS_FAULT_ROOT` (the data directory) fails with ENOSPC the
 *                      way a full disk fails it: opening a new file succeeds (an empty file is left
 *                      behind), writing bytes, creating folders and staging renames fail.
 *   <control>/lancedb  every LanceDB write (merge-insert, add, delete, update) throws, as a store whose
 *                      directory refuses writes does. We run as root, so chmod would not stop the
 *                      native writer; this fails it at the library's JS entry instead.
 *   <control>/lancedb-stall
 *                      every LanceDB write waits until this file is removed, as writes to a hung
 *                      disk do: the run is held mid-way, with batches leased, for as long as a test
 *                      needs (no race with a fast machine finishing first).
 *
 * Plain JavaScript (no tsx needed to load it); only Node's own modules and the installed LanceDB package.
 */
import { existsSync } from 'node:fs';
import fs from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import path from 'node:path';

const control = process.env.ISS_FAULT_CONTROL;
const root = process.env.ISS_FAULT_ROOT ? path.resolve(process.env.ISS_FAULT_ROOT) : null;

const on = (name) => control !== undefined && existsSync(path.join(control, name));
const under = (p) => {
  if (!root || p === undefined || p === null) return false;
  const abs = path.resolve(String(p instanceof URL ? p.pathname : p));
  return abs === root || abs.startsWith(root + path.sep);
};
const enospc = (syscall, p) => {
  const err = new Error(`ENOSPC: no space left on device, ${syscall} '${p}'`);
  err.code = 'ENOSPC';
  err.errno = -28;
  err.syscall = syscall;
  err.path = String(p);
  return err;
};
const diskFull = (p) => on('enospc') && under(p);
const writes = (flags) => typeof flags === 'string' && /[wa+]/.test(flags);

if (control) {
  const p = fs.promises;
  const handlePaths = new WeakMap();

  const open = p.open;
  p.open = async function (file, flags, ...rest) {
    const handle = await open.call(this, file, flags, ...rest);
    handlePaths.set(handle, String(file));
    return handle;
  };

  // The FileHandle class, found from a handle of this very file.
  const probe = await open(new URL(import.meta.url).pathname, 'r');
  const FileHandle = Object.getPrototypeOf(probe);
  await probe.close();
  for (const method of ['write', 'writeFile', 'appendFile', 'writev']) {
    const original = FileHandle[method];
    FileHandle[method] = function (...args) {
      const file = handlePaths.get(this);
      if (diskFull(file)) return Promise.reject(enospc('write', file));
      return original.apply(this, args);
    };
  }

  for (const method of ['writeFile', 'appendFile']) {
    const original = p[method];
    p[method] = async function (file, ...args) {
      if (diskFull(file)) {
        // The kernel creates the file, then runs out of blocks for its bytes.
        if (method === 'writeFile' || !existsSync(String(file)))
          await open.call(p, file, 'w').then(
            (h) => h.close(),
            () => undefined,
          );
        throw enospc('write', file);
      }
      return original.call(this, file, ...args);
    };
  }
  for (const method of ['mkdir', 'copyFile', 'cp']) {
    const original = p[method];
    p[method] = async function (file, ...args) {
      const target = method === 'mkdir' ? file : args[0];
      if (diskFull(target) && !(method === 'mkdir' && existsSync(String(target)))) throw enospc(method, target);
      return original.call(this, file, ...args);
    };
  }
  const rename = p.rename;
  p.rename = async function (from, to) {
    // A rename into another directory may need a new directory block: fail those, as a full disk can.
    if (diskFull(to) && path.dirname(String(from)) !== path.dirname(String(to))) throw enospc('rename', to);
    return rename.call(this, from, to);
  };

  // Synchronous and callback forms used by libraries (pino destinations, chokidar never writes).
  for (const method of ['writeFileSync', 'appendFileSync']) {
    const original = fs[method];
    fs[method] = function (file, ...args) {
      if (typeof file !== 'number' && diskFull(file)) throw enospc('write', file);
      return original.call(this, file, ...args);
    };
  }
  const openSync = fs.openSync;
  fs.openSync = function (file, flags, ...rest) {
    if (writes(flags) && diskFull(file) && !existsSync(String(file))) {
      openSync.call(this, file, flags, ...rest);
      throw enospc('write', file);
    }
    return openSync.call(this, file, flags, ...rest);
  };
  syncBuiltinESMExports();

  // LanceDB: the JS entry points of every write (the native writer itself ignores file modes as root).
  const require = createRequire(import.meta.url);
  const lanceDir = (() => {
    try {
      return path.dirname(
        require.resolve('@lancedb/lancedb', { paths: [process.cwd(), path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../..')] }),
      );
    } catch {
      return null;
    }
  })();
  if (lanceDir) {
    const refuse = () => {
      const err = new Error('LanceDB write failed: Permission denied (os error 13) [injected fault]');
      err.code = 'EACCES';
      return err;
    };
    const stalled = async () => {
      while (on('lancedb-stall')) await new Promise((resolve) => setTimeout(resolve, 25));
    };
    const { MergeInsertBuilder } = require(path.join(lanceDir, 'merge.js'));
    const execute = MergeInsertBuilder.prototype.execute;
    MergeInsertBuilder.prototype.execute = async function (...args) {
      await stalled();
      if (on('lancedb')) throw refuse();
      return execute.apply(this, args);
    };
    const { LocalTable } = require(path.join(lanceDir, 'table.js'));
    for (const method of ['add', 'delete', 'update']) {
      const original = LocalTable.prototype[method];
      LocalTable.prototype[method] = async function (...args) {
        await stalled();
        if (on('lancedb')) throw refuse();
        return original.apply(this, args);
      };
    }
  }
}
